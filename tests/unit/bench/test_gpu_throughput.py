"""benchmarks/gpu/run.sh and benchmarks/gpu_throughput.py without a GPU: the run plan a GPU machine
gets, and the whole prepared call in its --dry-run mode (the gpu tests skip, the benchmark runs on
CPU), so the one script a lent GPU machine runs cannot rot unseen."""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import benchscript

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
bench = benchscript.load("gpu_throughput")


def test_the_gpu_run_plan() -> None:
    cases = bench.matrix(("bf16", "fp16", "fp32"), 2, sync_possible=True)
    assert len(cases) == 15
    # Single-process runs first, ltj and plain in pairs, so a time budget only ever cuts DDP runs.
    assert [(c.runner, c.precision, c.procs) for c in cases[:6]] == [
        (r, p, 1) for p in ("bf16", "fp16", "fp32") for r in ("ltj", "plain")]
    ddp = cases[6:]
    assert {c.sync_bn for c in ddp if c.runner == "ltj"} == {True}  # what ltj does on every GPU DDP job
    assert {c.sync_bn for c in ddp if c.runner == "plain"} == {True, False}
    assert all(not c.sync_bn for c in bench.matrix(("fp32",), 2, sync_possible=False))


@pytest.mark.parametrize("procs", [1, 2])
def test_every_process_takes_warmup_plus_measured_steps(procs: int) -> None:
    a = argparse.Namespace(samples=2048, batch_size=64, warmup=5, steps=40)
    per_epoch = math.ceil(math.ceil(bench.train_samples(2048) / procs) / 64)
    epochs = bench.epochs_for(a, procs)
    assert (epochs - 1) * per_epoch < a.warmup + a.steps + 1 <= epochs * per_epoch  # enough, and no more


def test_side_by_side_pairs_ltj_with_the_plain_script() -> None:
    def result(runner: str, procs: int, sync: bool, rate: float) -> object:
        return bench.Result("cuda", "H100", runner, "bf16", "bf16-mixed", procs, 1, sync, 64, 224, 40, 10.0, rate,
                            1000.0, 12.0, 20.0, "ok")

    rows = bench.side_by_side([result("ltj", 1, False, 990.0), result("plain", 1, False, 1000.0),
                               result("ltj", 2, True, 500.0), result("plain", 2, True, 400.0),
                               result("plain", 2, False, 600.0)])
    assert rows[2] == "| bf16 1 proc | 1000 | 990 | 0.990 | 1000 | 1000 | 12.0 | 12.0 |"
    assert rows[3].startswith("| bf16 2 procs SyncBN | 400 | 500 | 1.250 |")
    assert rows[4].startswith("| bf16 2 procs no SyncBN | 600 | - | - |")


@pytest.mark.slow
def test_run_sh_dry_run_writes_the_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "run.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]

    files = sorted(p.name for p in out.iterdir())
    assert files == ["benchmark.log", "env.txt", "gpu_throughput.csv", "gpu_throughput.md", "gpu_throughput.png",
                     "runs.tar.gz", "tests.log"]  # flat and at most 8: what the device tool brings back
    tests_log = (out / "tests.log").read_text()
    # Every gpu test collected, and every one skipped, with the one reason.
    assert re.search(r"^=+ \d+ skipped in ", tests_log, re.M), tests_log[-2000:]
    assert "no CUDA device: torch.cuda.is_available() is False" in tests_log

    with open(out / "gpu_throughput.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["runner"], r["processes"], r["sync_batchnorm"]) for r in rows] == [
        ("ltj", "1", "False"), ("plain", "1", "False"), ("ltj", "2", "False"), ("plain", "2", "False")]
    for r in rows:
        assert (r["device"], r["status"], r["lightning_precision"]) == ("cpu", "ok", "32-true"), r
        assert float(r["samples_per_s"]) > 0 and 0 < float(r["first_step_s"]) < float(r["wall_s"]), r
        assert int(r["measured_steps"]) >= 3 and r["peak_mem_mib"] == "nan"
    table = (out / "gpu_throughput.md").read_text()
    assert "| fp32 1 proc |" in table and "| fp32 2 procs no SyncBN |" in table
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("pod-1.log") for n in names) and any("/probe/probe-1-" in n for n in names)
    assert not any(n.endswith(".ckpt") for n in names)
