"""Overhead of the ltj trainer over a plain Lightning script (prints numbers; not a test).

The same model (TabularMLP), data (synthetic tabular, generated identically), epochs, batch size
and Trainer essentials (ModelCheckpoint top-3 + last, EarlyStopping that never triggers,
TQDMProgressBar, LearningRateMonitor, CSV + TensorBoard loggers, test with the best checkpoint) run

  (a) through the trainer's real entry path: ``ltj-train`` -> torchrun -> ``ltj_trainer.main``
      (config file, registry, event log with fsync, run-state marker, termination summary);
  (b) as the plain script below (``--plain``), written the obvious way,

each in its own subprocess, alternating, on CPU. Training throughput is train samples x epochs
divided by the fit time from ``on_fit_start`` to ``on_fit_end`` (for (a) read from the
``started`` / ``fit_end`` events written in exactly those hooks); end-to-end wall time, which
adds imports and torchrun's start-up, is printed too.

    python benchmarks/trainer_overhead.py            # ~2.5 min on 2 CPU cores (3 pairs of ~25 s runs)
    python benchmarks/trainer_overhead.py --repeat 1 --samples 100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def model_args(a: argparse.Namespace) -> dict[str, Any]:
    return {"hidden_sizes": [a.hidden, a.hidden], "dropout": 0.0, "lr": 1e-3}


def data_args(a: argparse.Namespace) -> dict[str, Any]:
    return {"num_samples": a.samples, "num_features": a.features, "num_classes": a.classes}


# -- (b) the plain Lightning script ---------------------------------------------------------------


def plain_trainer(out: Path, *, max_epochs: int, patience: int | None, callbacks: Sequence[Any] = (),
                  **trainer_args: Any) -> Any:
    """The plain script's Trainer, written the obvious way with the essentials ltj's trainer also
    has: ModelCheckpoint top-3 + last, EarlyStopping (none when ``patience`` is None),
    TQDMProgressBar, LearningRateMonitor, CSV + TensorBoard loggers. benchmarks/gpu_throughput.py
    uses it too; ``trainer_args`` carry the accelerator, devices, precision, strategy, ..."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    essentials: list[Any] = [
        ModelCheckpoint(dirpath=str(out / "checkpoints"), monitor="val_loss", mode="min", save_top_k=3, save_last=True),
        TQDMProgressBar(refresh_rate=10),
        LearningRateMonitor(logging_interval="step"),
    ]
    if patience is not None:
        essentials.append(EarlyStopping(monitor="val_loss", mode="min", patience=patience))
    return pl.Trainer(
        max_epochs=max_epochs,
        logger=[CSVLogger(save_dir=str(out), name="csv"), TensorBoardLogger(save_dir=str(out), name="tensorboard")],
        log_every_n_steps=10,
        callbacks=[*essentials, *callbacks],
        **trainer_args,
    )


def plain(a: argparse.Namespace) -> None:
    import lightning.pytorch as pl

    from ltj_trainer.data import SyntheticTabularDataModule
    from ltj_trainer.models import TabularMLP

    class FitTimer(pl.Callback):
        def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.start = time.time()

        def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.seconds = time.time() - self.start

    pl.seed_everything(42, workers=True)
    dm = SyntheticTabularDataModule(batch_size=a.batch_size, **data_args(a))
    spec = dm.data_spec()
    model = TabularMLP(input_shape=spec.input_shape, num_classes=spec.num_classes, **model_args(a))
    timer = FitTimer()
    out = Path(a.out)
    trainer = plain_trainer(out, max_epochs=a.epochs, patience=a.epochs + 1, callbacks=[timer], accelerator="cpu",
                            devices=1)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, ckpt_path="best")
    (out / "fit.json").write_text(json.dumps({"fit_seconds": timer.seconds, "epochs": trainer.current_epoch}))


# -- the driver ------------------------------------------------------------------------------------


def _env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PET_", "LTJ_", "TORCHELASTIC_")) and k not in {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}}
    env.update(OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    return env


def _parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_ltj(a: argparse.Namespace, work: Path) -> dict[str, float]:
    import yaml

    from ltj_api import events

    out = work / "output"
    cfg = {
        "model_class": "tabular_mlp", "model_args": model_args(a),
        "data_class": "synthetic_tabular", "data_args": data_args(a),
        "batch_size": a.batch_size, "max_epochs": a.epochs,
        "early_stopping": True, "early_stop_patience": a.epochs + 1,
        "default_root_dir": str(out), "termination_log": str(work / "termination-log"),
        "log_every_n_steps": 10, "accelerator": "cpu",
    }
    (work / "trainer.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.time()
    with open(work / "log.txt", "wb") as log:
        subprocess.run([str(BIN / "ltj-train"), "--config", str(work / "trainer.yaml")], stdout=log,
                       stderr=subprocess.STDOUT, env=_env(a.threads), check=True, cwd=str(REPO))
    wall = time.time() - t0
    evs = {e.type: e for e in events.read_all(out / "events.jsonl")}
    fit = _parse_time(evs["fit_end"].time) - _parse_time(evs["started"].time)
    return {"fit_seconds": fit, "wall_seconds": wall, "epochs": evs["fit_end"].get("epoch") + 1}


def run_plain(a: argparse.Namespace, work: Path) -> dict[str, float]:
    out = work / "output"
    out.mkdir(parents=True)
    args = [sys.executable, str(Path(__file__).resolve()), "--plain", "--out", str(out),
            "--epochs", str(a.epochs), "--samples", str(a.samples), "--features", str(a.features),
            "--classes", str(a.classes), "--hidden", str(a.hidden), "--batch-size", str(a.batch_size)]
    t0 = time.time()
    with open(work / "log.txt", "wb") as log:
        subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, env=_env(a.threads), check=True, cwd=str(REPO))
    wall = time.time() - t0
    res = json.loads((out / "fit.json").read_text())
    return {"fit_seconds": res["fit_seconds"], "wall_seconds": wall, "epochs": res["epochs"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--samples", type=int, default=120_000, help="synthetic rows (70%% train)")
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3, help="alternating (plain, ltj) pairs; medians are reported")
    # One intra-op thread by default: on a small shared machine a run using every core is at the
    # mercy of whatever else runs, which swamps a few-percent difference.
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.plain:
        plain(a)
        return

    train_samples = a.samples - 2 * int(round(a.samples * 0.15))
    print(f"model tabular_mlp {a.features}-{a.hidden}-{a.hidden}-{a.classes}, {train_samples} train samples, "
          f"batch {a.batch_size}, {a.epochs} epochs, {a.threads} threads, CPU")
    results: dict[str, list[dict[str, float]]] = {"plain": [], "ltj": []}
    with tempfile.TemporaryDirectory(prefix="ltj-bench-") as tmp:
        for i in range(a.repeat):
            for name, fn in (("plain", run_plain), ("ltj", run_ltj)):
                work = Path(tmp) / f"{name}-{i}"
                work.mkdir()
                r = fn(a, work)
                assert r["epochs"] == a.epochs, r
                r["samples_per_s"] = train_samples * a.epochs / r["fit_seconds"]
                results[name].append(r)
                print(f"  run {i + 1} {name:5s}: fit {r['fit_seconds']:7.2f} s  {r['samples_per_s']:9.0f} samples/s  "
                      f"wall {r['wall_seconds']:6.1f} s")

    med = {k: {m: statistics.median(r[m] for r in v) for m in ("samples_per_s", "fit_seconds", "wall_seconds")}
           for k, v in results.items()}
    # Interference from other processes only ever slows a run down, so the fastest of each is
    # the least noisy estimate (as timeit does); medians are shown beside it.
    best = {k: max(r["samples_per_s"] for r in v) for k, v in results.items()}
    print()
    print(f"{'':30s}{'plain Lightning':>18s}{'ltj trainer':>15s}")
    print(f"{'training samples/s (best)':30s}{best['plain']:18.0f}{best['ltj']:15.0f}")
    print(f"{'training samples/s (median)':30s}{med['plain']['samples_per_s']:18.0f}{med['ltj']['samples_per_s']:15.0f}")
    print(f"{'fit seconds (median)':30s}{med['plain']['fit_seconds']:18.2f}{med['ltj']['fit_seconds']:15.2f}")
    print(f"{'end-to-end wall s (median)':30s}{med['plain']['wall_seconds']:18.1f}{med['ltj']['wall_seconds']:15.1f}")
    ratio_best = best["ltj"] / best["plain"]
    ratio_med = med["ltj"]["samples_per_s"] / med["plain"]["samples_per_s"]
    print(f"ltj/plain samples/s: best {ratio_best:.4f} -> training overhead {(1 / ratio_best - 1) * 100:+.2f}%; "
          f"median {ratio_med:.4f} -> {(1 / ratio_med - 1) * 100:+.2f}%  ({a.repeat} runs each)")
    wall_overhead = med["ltj"]["wall_seconds"] - med["plain"]["wall_seconds"]
    print(f"end-to-end: ltj takes {wall_overhead:+.1f} s more per run (launcher + torchrun start-up, "
          f"{wall_overhead / med['plain']['wall_seconds'] * 100:+.1f}%)")

if __name__ == "__main__":
    main()
