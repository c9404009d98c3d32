"""GPU training throughput of the ltj trainer beside the same plain Lightning script (prints
numbers; not a test).

The model is the built-in ``resnet`` with the ImageNet stem, i.e. ResNet-18 (11.7 M parameters),
on ``synthetic_images`` of shape 3x224x224, 10 classes. For each precision (fp32 = 32-true,
fp16 = 16-mixed, bf16 = bf16-mixed) it runs

  - 1 process on 1 GPU (SyncBatchNorm has nothing to synchronise there: off);
  - 2 DDP processes over NCCL as 2 one-GPU pods: SyncBatchNorm on (ltj turns it on for every GPU
    DDP job) and, for the plain script only, off (ltj has no switch to turn it off). On a machine
    with one GPU both pods share it (tests/unit/trainer/trainer_helpers.gpu_env says how), so these
    rows measure the cost of DDP + SyncBatchNorm, not scaling;

each (a) through ltj's entry path, ``ltj-train`` -> torchrun -> ``ltj_trainer.main``, with the env
the operator gives pods, and (b) as a plain Lightning script (``--plain`` below: the Trainer of
benchmarks/trainer_overhead.py, same model, data, seed, epochs and checkpointing), started with
``python`` (1 process) or ``torchrun`` (2 processes, the way a PyTorchJob starts a script).

Measured in every process by benchmarks/gpu/probe/sitecustomize.py (on PYTHONPATH for both
runners; neither's code knows of it):
  - samples/s: global batch / median time between optimizer steps after ``--warmup`` steps, from
    CUDA events (the GPU's timeline, data stalls included; the median leaves out the epoch ends'
    validation and checkpoint saves);
  - peak GPU memory: torch.cuda.max_memory_allocated, the largest of the processes;
  - first step: seconds from starting the launcher(s) to the end of the first optimizer step on
    rank 0 (imports, torchrun, data generation, CUDA and NCCL start-up).

Writes gpu_throughput.csv, .md (the side-by-side table) and .png into ``--out``.

    python benchmarks/gpu_throughput.py                 # 15 runs of 10-25 s each on one GPU (estimated)
    python benchmarks/gpu_throughput.py --dry-run       # the whole pipeline on CPU, tiny: 4 runs, 1-2 min on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).resolve().parent / "gpu" / "probe"
# The trainer tests' helpers start pods (env contract, GPUs per pod, process trees): the benchmark
# starts its runs the same way rather than keeping a second copy. benchmarks/ itself is on the path
# when this runs as a script; the unit tests import it as a module.
sys.path[:0] = [str(REPO / "tests"), str(REPO / "benchmarks")]

from trainer_overhead import plain_trainer  # noqa: E402

from ltj_api import events  # noqa: E402
from ltj_trainer.trainer_factory import CPU_PRECISION, GPU_PRECISION  # noqa: E402

PRECISIONS = ("bf16", "fp16", "fp32")  # the job's spelling, most used first
TRAIN_FRACTION = 0.7  # synthetic_images keeps 15 % each for validation and test


@dataclass(frozen=True)
class Case:
    runner: str  # "ltj" | "plain"
    precision: str  # fp32 | fp16 | bf16
    procs: int  # DDP processes, one pod (or torchrun launcher) of one GPU each
    sync_bn: bool  # expected; the result says what ran, and a difference fails the run

    @property
    def label(self) -> str:
        if self.procs == 1:
            return f"{self.precision} 1 proc"
        return f"{self.precision} {self.procs} procs {'SyncBN' if self.sync_bn else 'no SyncBN'}"


def matrix(precisions: Sequence[str], procs: int, sync_possible: bool) -> list[Case]:
    """ltj and plain side by side; single-process cases first (they matter most and are quickest,
    so a time budget cuts the DDP cases first). ltj syncs BatchNorm in every GPU DDP job; the plain
    script also runs without it. On CPU torch has no SyncBatchNorm: both run without."""
    cases = [Case(runner, p, 1, False) for p in precisions for runner in ("ltj", "plain")]
    if procs > 1:
        for p in precisions:
            if sync_possible:
                cases += [Case("ltj", p, procs, True), Case("plain", p, procs, True), Case("plain", p, procs, False)]
            else:
                cases += [Case("ltj", p, procs, False), Case("plain", p, procs, False)]
    return cases


@dataclass
class Result:
    device: str  # cuda | cpu
    device_name: str
    runner: str
    precision: str
    lightning_precision: str
    processes: int
    gpus: int  # distinct GPUs the processes ran on
    sync_batchnorm: bool
    batch_per_process: int
    image_size: int
    measured_steps: int
    step_ms: float
    samples_per_s: float
    peak_mem_mib: float  # NaN on CPU
    first_step_s: float
    wall_s: float
    status: str  # ok | failed: ... | skipped: ...


def train_samples(samples: int) -> int:
    held_out = int(round(samples * (1 - TRAIN_FRACTION) / 2))
    return samples - 2 * held_out


def epochs_for(a: argparse.Namespace, procs: int) -> int:
    """Enough epochs for every process to take warm-up + measured steps (DistributedSampler gives
    each process ceil(train / procs) samples)."""
    per_epoch = math.ceil(math.ceil(train_samples(a.samples) / procs) / a.batch_size)
    return math.ceil((a.warmup + a.steps + 1) / per_epoch)


def job_config(a: argparse.Namespace, case: Case, work: Path, accelerator: str) -> dict[str, Any]:
    """The trainer config a LightningTrainingJob of this case renders; the plain script reads the
    same file, so both train the same model on the same data."""
    return {
        "model_class": "resnet", "model_args": a.model_args,
        "data_class": "synthetic_images",
        "data_args": {"num_samples": a.samples, "image_size": a.image_size, "channels": 3, "num_classes": 10},
        "batch_size": a.batch_size, "num_workers": a.workers, "max_epochs": epochs_for(a, case.procs),
        "early_stopping": False, "test_after_fit": False, "precision": case.precision, "accelerator": accelerator,
        "devices": 1, "num_nodes": case.procs, "seed": 42, "log_every_n_steps": 10, "ddp_timeout_seconds": 120,
        "default_root_dir": str(work / "output"), "termination_log": str(work / "termination-log"),
    }


# -- the plain Lightning script -------------------------------------------------------------------


def plain(a: argparse.Namespace) -> None:
    import lightning.pytorch as pl
    import yaml
    from lightning.pytorch.strategies import DDPStrategy

    from ltj_trainer.data import SyntheticImageDataModule
    from ltj_trainer.models import ResNet

    job = yaml.safe_load(Path(a.config).read_text())
    pl.seed_everything(job["seed"], workers=True)
    dm = SyntheticImageDataModule(batch_size=job["batch_size"], num_workers=job["num_workers"], **job["data_args"])
    spec = dm.data_spec()
    model = ResNet(input_shape=spec.input_shape, num_classes=spec.num_classes, **job["model_args"])
    # Under torchrun (Lightning's TorchElasticEnvironment) devices x nodes must match its world.
    world, local = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    strategy: Any = DDPStrategy(timeout=timedelta(seconds=job["ddp_timeout_seconds"])) if world > 1 else "auto"
    out = Path(job["default_root_dir"])
    trainer = plain_trainer(out, max_epochs=job["max_epochs"], patience=None, accelerator=a.accelerator,
                            devices=local, num_nodes=world // local, precision=a.precision,
                            sync_batchnorm=a.sync_bn, strategy=strategy)
    trainer.fit(model, datamodule=dm)
    if trainer.is_global_zero:
        (out / "plain.json").write_text(json.dumps({"precision": str(trainer.precision), "sync_batchnorm": a.sync_bn}))


# -- the driver ------------------------------------------------------------------------------------


def _argv_plain(case: Case, cfg: Path, accelerator: str, pod: int, port: int) -> list[str]:
    precision = GPU_PRECISION[case.precision] if accelerator == "gpu" else CPU_PRECISION
    script = [str(Path(__file__).resolve()), "--plain", "--config", str(cfg), "--accelerator", accelerator,
              "--precision", precision, *(["--sync-bn"] if case.sync_bn else [])]
    if case.procs == 1:
        return [sys.executable, *script]
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={case.procs}", "--nproc-per-node=1",
            f"--node-rank={pod}", "--master-addr=127.0.0.1", f"--master-port={port}", "--rdzv-backend=static", *script]


def run_case(a: argparse.Namespace, case: Case, work: Path, gpu_count: int) -> Result:
    # Here, not at the top: the plain script's processes run this file too and should import no
    # more than a plain script does.
    from unit.trainer.trainer_helpers import TrainProcess, free_port, gpu_env, pod_env, write_config

    accelerator = "gpu" if gpu_count else "cpu"
    work.mkdir(parents=True)
    probe_dir = work / "probe"
    probe_dir.mkdir()
    cfg = write_config(work / "trainer.yaml", **job_config(a, case, work, accelerator))
    common = {"PYTHONPATH": os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")])),
              "LTJ_BENCH_PROBE_DIR": str(probe_dir), "OMP_NUM_THREADS": str(a.threads)}
    port = free_port()
    t0 = time.time()
    procs = []
    for pod in range(case.procs):
        env = {**common, **(gpu_env(pod, case.procs, 1, gpu_count) if gpu_count else {})}
        if case.runner == "ltj":
            env.update(pod_env(case.procs, 1, pod, port), LTJ_TERMINATION_LOG=str(work / f"term-{pod}"))
        argv = _argv_plain(case, cfg, accelerator, pod, port) if case.runner == "plain" else None
        procs.append(TrainProcess(cfg, work / f"pod-{pod}.log", env=env, argv=argv))
    try:
        codes = [p.wait(a.case_timeout) for p in procs]
    except AssertionError:  # a timeout (that pod is killed): its peers would wait for it until theirs
        for p in procs:
            if p.proc.poll() is None:
                p.kill_tree(signal.SIGKILL)
        raise
    wall = time.time() - t0
    failed = [i for i, code in enumerate(codes) if code]
    if failed:
        raise RuntimeError(f"exit codes {codes}; pod {failed[0]}:\n{procs[failed[0]].tail(3000)}")
    result = measure(a, case, work, t0, wall, gpu_count)
    shutil.rmtree(work / "output" / "checkpoints")  # ~140 MB each at full size; the numbers do not need them
    return result


def measure(a: argparse.Namespace, case: Case, work: Path, t0: float, wall: float, gpu_count: int) -> Result:
    probes = sorted((json.loads(p.read_text()) for p in (work / "probe").glob("probe-*.json")), key=lambda r: r["rank"])
    if len(probes) != case.procs:
        raise RuntimeError(f"{len(probes)} probe records for {case.procs} processes")
    rank0 = probes[0]
    intervals = rank0["step_seconds"][a.warmup:]
    if len(intervals) < 3:
        raise RuntimeError(f"only {len(intervals)} steps after {a.warmup} warm-up steps")
    step = statistics.median(intervals)
    root = work / "output"
    if case.runner == "ltj":
        started = next(e for e in events.read_all(root / "events.jsonl") if e.type == events.STARTED)
        ran = {"precision": started.get("precision"), "sync_batchnorm": started.get("sync_batchnorm")}
    else:
        ran = json.loads((root / "plain.json").read_text())
    peaks = [p["max_memory_allocated"] for p in probes if p["max_memory_allocated"] is not None]
    return Result(
        device="cuda" if gpu_count else "cpu", device_name=rank0["device_name"], runner=case.runner,
        precision=case.precision, lightning_precision=ran["precision"], processes=case.procs,
        gpus=min(case.procs, gpu_count), sync_batchnorm=bool(ran["sync_batchnorm"]), batch_per_process=a.batch_size,
        image_size=a.image_size, measured_steps=len(intervals), step_ms=step * 1000,
        samples_per_s=a.batch_size * case.procs / step, peak_mem_mib=max(peaks) / 2**20 if peaks else math.nan,
        first_step_s=rank0["first_step_time"] - t0, wall_s=wall, status="ok",
    )


def not_run(a: argparse.Namespace, case: Case, gpu_count: int, status: str) -> Result:
    nan = math.nan
    return Result("cuda" if gpu_count else "cpu", "", case.runner, case.precision, "", case.procs,
                  min(case.procs, gpu_count), case.sync_bn, a.batch_size, a.image_size, 0, nan, nan, nan, nan, nan,
                  status)


def write_csv(path: Path, results: Sequence[Result]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(Result)])
        w.writeheader()
        for r in results:
            w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in asdict(r).items()})


def side_by_side(results: Sequence[Result]) -> list[str]:
    """Markdown rows: one per configuration, the plain script beside ltj."""
    def cell(r: Result | None, metric: str, digits: int) -> str:
        v = getattr(r, metric) if r is not None else math.nan
        return "-" if math.isnan(v) else f"{v:.{digits}f}"

    pairs: dict[tuple[str, int, bool], dict[str, Result]] = {}
    for r in results:
        pairs.setdefault((r.precision, r.processes, r.sync_batchnorm), {})[r.runner] = r
    rows = ["| configuration | samples/s plain | samples/s ltj | ltj/plain | peak MiB plain | peak MiB ltj "
            "| first step s plain | first step s ltj |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (precision, procs, sync), pair in pairs.items():
        p, q = pair.get("plain"), pair.get("ltj")
        ratio = q.samples_per_s / p.samples_per_s if p is not None and q is not None else math.nan
        rows.append(f"| {Case('', precision, procs, sync).label} | {cell(p, 'samples_per_s', 0)} "
                    f"| {cell(q, 'samples_per_s', 0)} | {'-' if math.isnan(ratio) else f'{ratio:.3f}'} "
                    f"| {cell(p, 'peak_mem_mib', 0)} | {cell(q, 'peak_mem_mib', 0)} "
                    f"| {cell(p, 'first_step_s', 1)} | {cell(q, 'first_step_s', 1)} |")
    return rows


def plot(path: Path, results: Sequence[Result], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(Case("", r.precision, r.processes, r.sync_batchnorm).label for r in results))
    metrics = (("samples_per_s", "training samples/s"), ("peak_mem_mib", "peak GPU memory (MiB)"),
               ("first_step_s", "start to first step (s)"))
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 0.45 * len(labels) + 2.5), squeeze=False)
    for ax, (metric, name) in zip(axes[0], metrics):
        for offset, runner in ((-0.2, "plain"), (0.2, "ltj")):
            values = {Case("", r.precision, r.processes, r.sync_batchnorm).label: getattr(r, metric)
                      for r in results if r.runner == runner}
            ax.barh([i + offset for i in range(len(labels))], [values.get(lb, math.nan) for lb in labels],
                    height=0.4, label="plain Lightning script" if runner == "plain" else "ltj trainer")
        if all(math.isnan(getattr(r, metric)) for r in results):
            ax.text(0.5, 0.5, "not measured (CPU run)", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        ax.set_xlabel(name)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu"), help="results directory")
    p.add_argument("--work", help="keep each run's config, logs, events and probe records here (default: a temp dir)")
    p.add_argument("--dry-run", action="store_true", help="the whole pipeline on CPU with a tiny model")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated: fp32, fp16, bf16")
    p.add_argument("--procs", type=int, default=2, help="DDP processes of the multi-process cases (1: none)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--samples", type=int, default=2048, help="synthetic images (70%% train), generated per process")
    p.add_argument("--steps", type=int, default=30, help="measured optimizer steps per process")
    p.add_argument("--warmup", type=int, default=5, help="optimizer steps left out (cuDNN autotuning, allocations)")
    p.add_argument("--workers", type=int, default=6, help="DataLoader workers per process")
    p.add_argument("--threads", type=int, default=2, help="OMP threads per process")
    p.add_argument("--case-timeout", type=float, default=120, help="seconds for one run before it is killed")
    p.add_argument("--budget", type=float, default=0,
                   help="seconds for all runs; a run that would not fit is reported as skipped (0: no limit)")
    p.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--accelerator", help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    p.add_argument("--sync-bn", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.plain:
        plain(a)
        return 0

    import torch

    gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    a.model_args, model = {"stem": "imagenet"}, "ResNet-18"
    if a.dry_run:
        # Same pipeline, CPU-sized: a 2-stage ResNet on 16x16 images, a handful of steps.
        gpu_count = 0
        a.model_args.update(widths=[8, 16], blocks=[1, 1])
        model = "2-stage ResNet (dry run)"
        a.precisions, a.image_size, a.batch_size, a.samples = "fp32", 16, 8, 192
        a.steps, a.warmup, a.workers, a.threads = 4, 1, 0, 1
    elif not gpu_count:
        p.error("no CUDA device: torch.cuda.is_available() is False (use --dry-run to run the pipeline on CPU)")
    precisions = [x.strip() for x in a.precisions.split(",") if x.strip()]
    if not precisions or not set(precisions) <= set(GPU_PRECISION):
        p.error(f"--precisions: choose from {', '.join(GPU_PRECISION)}")

    cases = matrix(precisions, a.procs, sync_possible=bool(gpu_count))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="ltj-gpu-bench-"))
    print(f"resnet {a.model_args} ({model}) on {a.samples} synthetic 3x{a.image_size}x{a.image_size} "
          f"images, batch {a.batch_size}/process, {a.steps} measured steps after {a.warmup}; {gpu_count} GPU(s), "
          f"torch {torch.__version__}; {len(cases)} runs, work dir {work}", flush=True)

    def title() -> str:
        # The device's name as the runs saw it (the driver itself never touches the GPU).
        device = next((r.device_name for r in results if r.device_name), "cuda" if gpu_count else "cpu")
        return f"{model}, 3x{a.image_size}x{a.image_size}, batch {a.batch_size}/process, {device}"

    results: list[Result] = []
    start = time.monotonic()
    took: dict[int, float] = {}  # longest run so far per process count: the estimate for the next
    for i, case in enumerate(cases):
        t = time.monotonic()
        if a.budget and t - start + took.get(case.procs, 0) > a.budget:
            r = not_run(a, case, gpu_count, "skipped: time budget")
            print(f"  {case.runner:5s} {case.label:28s} skipped (time budget)", flush=True)
        else:
            try:
                r = run_case(a, case, work / f"{i:02d}-{case.runner}-{case.precision}-{case.procs}", gpu_count)
                if r.sync_batchnorm != case.sync_bn:
                    r.status = f"failed: SyncBatchNorm {'on' if r.sync_batchnorm else 'off'}, expected " \
                               f"{'on' if case.sync_bn else 'off'}"
            except Exception as e:  # one failed run must not lose the others' numbers
                r = not_run(a, case, gpu_count, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                print(f"  {case.runner:5s} {case.label:28s} FAILED: {e}", flush=True)
            took[case.procs] = max(took.get(case.procs, 0), time.monotonic() - t)
        results.append(r)
        if r.status == "ok":
            print(f"  {case.runner:5s} {case.label:28s} {r.samples_per_s:9.1f} samples/s  step {r.step_ms:7.2f} ms  "
                  f"peak {r.peak_mem_mib:8.0f} MiB  first step {r.first_step_s:5.1f} s  wall {r.wall_s:5.1f} s  "
                  f"({r.lightning_precision}, SyncBN {r.sync_batchnorm})", flush=True)
        # After every run: a benchmark cut off by its caller's timeout keeps what it measured.
        write_csv(out / "gpu_throughput.csv", results)
        table = side_by_side(results)
        (out / "gpu_throughput.md").write_text(f"{title()}; torch {torch.__version__}\n\n" + "\n".join(table) + "\n")

    plot(out / "gpu_throughput.png", [r for r in results if r.status == "ok"], title())
    print()
    print("\n".join(table))
    failed = [r for r in results if r.status.startswith("failed")]
    print(f"\n{len(results) - len(failed)} of {len(results)} runs ok; results in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
