"""The relay's peak memory replaying a long event log, beside the sidecar's memory limit.

Writes a synthetic log of valid events shaped like the trainer's (a started event, then per epoch
progress steps, a validation with a dozen metrics and a checkpoint carrying its top-k), replays it
through the relay's own reading side (``Relay.read``: the reader and the fold, no API server) and
reports the peak of Python allocations that ``tracemalloc`` saw during the replay, for several log
lengths. By design the peak does not grow with the log: the reader holds one read chunk and a
bounded dedup window, the fold a bounded state.

    .venv/bin/python benchmarks/relay_memory.py [--events 50000 500000]

tracemalloc counts Python allocations only; the interpreter and imported modules come on top
(the relay process's resident size at rest), so the table also shows the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

from ltj_api import events as ev  # noqa: E402
from ltj_operator import render  # noqa: E402
from ltj_operator.config import OperatorConfig  # noqa: E402
from ltj_operator.relay import Relay  # noqa: E402
from ltj_operator.relay.config import parse as parse_relay_config  # noqa: E402
from ltj_operator.relay.kube import Endpoint, JobStatusClient  # noqa: E402
from ltj_operator.spec import parse_job  # noqa: E402
from ltj_operator.training import format_time  # noqa: E402

STEPS_PER_EPOCH = 20  # progress events per epoch, each followed at the epoch's end by validation + checkpoint
METRICS = ("val_loss", "val_acc", "train_loss", "lr-Adam", "val_f1", "val_precision", "val_recall",
           "grad_norm", "epoch_time", "samples_per_second", "val_auroc", "val_top5")
TOP_K = 3
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def write_log(path: Path, n: int) -> int:
    """Writes ``n`` valid events to ``path`` (bulk, no fsync: only the content matters); returns its size."""
    t0 = 1_700_000_000.0
    top: list[dict[str, Any]] = []
    with open(path, "wb") as f:
        seq = 0

        def put(type_: str, **fields: Any) -> None:
            nonlocal seq
            seq += 1
            f.write(ev.encode(seq, type_, fields, time=format_time(t0 + seq)))

        put(ev.STARTED, attempt=0, world_size=8, num_nodes=2, devices=4, max_epochs=n // (STEPS_PER_EPOCH + 2),
            monitor="val_loss", mode="min", precision="bf16-mixed", resumed_from=None)
        epoch = step = 0
        while seq < n:
            for _ in range(STEPS_PER_EPOCH):
                if seq >= n:
                    return f.tell()
                step += 1
                put(ev.PROGRESS, epoch=epoch, step=step, batch=step % STEPS_PER_EPOCH + 1, batches=STEPS_PER_EPOCH,
                    steps_per_epoch=STEPS_PER_EPOCH)
            if seq >= n:
                break
            loss = 1.0 / (epoch + 1)
            put(ev.VALIDATION, epoch=epoch, step=step, metrics={m: loss * (i + 1) for i, m in enumerate(METRICS)})
            if seq >= n:
                break
            # A distinct file per epoch: the fold must not remember every path it ever saw.
            path_ = f"/output/job-0123/checkpoints/model_epoch={epoch:06d}-val_loss={loss:.4f}.ckpt"
            top = sorted(top + [{"path": path_, "score": loss}], key=lambda r: r["score"])[:TOP_K]
            put(ev.CHECKPOINT, path=path_, score=loss, kind="top_k", epoch=epoch, step=step, top_k=top,
                best_path=top[0]["path"], best_score=top[0]["score"])
            epoch += 1
        return f.tell()


def replay_peak(path: Path) -> tuple[int, int, Relay]:
    """(peak bytes of Python allocations, events applied, the relay) for one replay of ``path`` to its end."""
    cfg = parse_relay_config(["--job", "bench", "--namespace", "bench", "--server", "https://127.0.0.1:1",
                              "--token-file", "/nonexistent", "--events-file", str(path)], {"LTJ_SA_DIR": "/nonexistent"})
    # read() never calls the API: the client only has to exist.
    relay = Relay(cfg, JobStatusClient(Endpoint(cfg.server, cfg.token_file, None), cfg.namespace, cfg.job))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        applied = relay.read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, applied, relay


def relay_memory_limit() -> int:
    """The relay sidecar's memory limit in bytes, as the operator renders it."""
    job = parse_job({"apiVersion": "ltj.dev/v1alpha1", "kind": "LightningTrainingJob",
                     "metadata": {"name": "bench", "namespace": "bench", "uid": "0"},
                     "spec": {"model": {"name": "digits_cnn"}, "output": {"claimName": "out"}}})
    relay = next(c for c in render.render_pod(job, 0, 0, OperatorConfig())["spec"]["initContainers"]
                 if c["name"] == "relay")
    qty = str(relay["resources"]["limits"]["memory"])
    for suffix, factor in _UNITS.items():
        if qty.endswith(suffix):
            return int(qty[: -len(suffix)]) * factor
    return int(qty)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, nargs="+", default=[50_000, 500_000], help="log lengths to replay")
    p.add_argument("--out", type=Path, default=RESULTS, help="where relay_memory.md goes")
    a = p.parse_args(argv)
    limit = relay_memory_limit()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.events:
            path = Path(tmp) / f"events-{n}.jsonl"
            size = write_log(path, n)
            t0 = time.monotonic()
            peak, applied, relay = replay_peak(path)
            seconds = time.monotonic() - t0
            if applied != n or relay.state.seq != n:
                print(f"replay of {n} events applied {applied} (seq {relay.state.seq})", file=sys.stderr)
                return 1
            rows.append((n, size, peak, seconds))
            print(f"{n:>9} events  {size / 2**20:7.1f} MiB log  peak {peak / 2**20:6.2f} MiB  "
                  f"({100 * peak / limit:.1f}% of the {limit / 2**20:.0f} MiB limit)  {seconds:.1f}s", flush=True)
            path.unlink()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    lines = [
        "# Relay memory replaying a long event log",
        "",
        "`benchmarks/relay_memory.py`: peak of Python allocations (tracemalloc) while `Relay.read()` replays a "
        "synthetic log of valid events to its end, against the relay sidecar's memory limit as rendered "
        f"({limit / 2**20:.0f} MiB).",
        "",
        "| events | log (MiB) | peak (MiB) | % of limit | replay (s) |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *(f"| {n} | {size / 2**20:.1f} | {peak / 2**20:.2f} | {100 * peak / limit:.1f} | {s:.1f} |"
          for n, size, peak, s in rows),
        "",
        f"Peak resident size of the whole benchmark process (interpreter, imports, the log writer): "
        f"{rss / 2**20:.0f} MiB.",
        "",
    ]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "relay_memory.md").write_text("\n".join(lines))
    (a.out / "relay_memory.json").write_text(json.dumps(
        {"limit_bytes": limit, "rss_bytes": rss,
         "runs": [{"events": n, "log_bytes": size, "peak_bytes": peak, "seconds": round(s, 2)}
                  for n, size, peak, s in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
