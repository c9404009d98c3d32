"""benchmarks/operator_scale.py end to end on its own control plane, tiny: the harness measures what it
says (jobs reach pods and Running, the audit log counts requests, CSV/PNG/table are written). The
peer is left out: building it needs minutes of Go on a fresh machine."""

from __future__ import annotations

import csv
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCH / "operator_scale.py"
sys.path.insert(0, str(BENCH))

from opbench.systems import floor_objects  # noqa: E402


def test_tiny_run_of_ltj_and_the_floors(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "2", "--repeats", "1", "--scale", "3",
                          "--scale-systems", "ltj", "--systems", "ltj,floor-all,floor-job", "--idle-window", "5",
                          "--settle", "0.5", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-5000:]
    values: dict[tuple[str, str, str, str], float] = {}
    with open(out / "operator_scale.csv", newline="") as f:
        for row in csv.DictReader(f):
            values[(row["section"], row["system"], row["n"], row["metric"])] = float(row["value"])

    def workload(system: str, metric: str) -> float:
        return values[("workload", system, "2", metric)]

    for system in ("ltj", "floor-all", "floor-job"):
        assert workload(system, "jobs_created") == 2 and workload(system, "jobs_running") == 2
        assert 0 < workload(system, "created_total_s") <= workload(system, "running_total_s")
    # The audit log counts each system's own requests: the floor makes exactly a job's children and pods;
    # the operator those, its status writes and Events, and a pod list.
    assert workload("floor-all", "requests_per_job") == len(floor_objects("ns", "j", everything=True))
    # floor-job: the floor's pods, Service and accounts and one status write (its job creates are the submit, not counted);
    # its Running is the job's status, which the API server accepted from it.
    floor_job = len(floor_objects("ns", "j", everything=False)) + 1
    assert workload("floor-job", "requests_per_job") == floor_job and workload("floor-job", "writes_per_job") == floor_job
    assert values[("workload", "ltj", "2", "running_vs_floor-job")] > 0
    assert workload("ltj", "writes_per_job") >= 8
    assert workload("ltj", "requests_per_job") > workload("ltj", "writes_per_job")
    # Every client's writes: the system's own plus at least a binding and a status per pod (scheduler, kwok).
    for system in ("ltj", "floor-all"):
        assert workload(system, "cluster_writes_per_job") >= workload(system, "writes_per_job") + 4
    # The operator worked in the window: it made the pods and wrote the status.
    assert workload("ltj", "rss_peak_mib") > 20 and workload("ltj", "cpu_s") > 0
    assert math.isnan(workload("floor-all", "rss_peak_mib"))  # no operator process
    # The whole machine's CPU in the window, by process: the operator's is part of ltj's, the floor has none.
    assert workload("ltj", "cpu_s:kube-apiserver") > 0 and workload("ltj", "cpu_s:ltj") > 0
    assert workload("ltj", "cluster_cpu_s") >= workload("ltj", "cpu_s:kube-apiserver")
    assert workload("floor-all", "cpu_s:kube-apiserver") > 0 and ("workload", "floor-all", "2", "cpu_s:ltj") not in values
    assert values[("workload", "ltj", "2", "running_vs_floor-all")] > 0
    scale = {m: v for (section, system, n, m), v in values.items() if section == "scale" and system == "ltj"}
    assert scale["finished"] == 2 and scale["rss_mib"] > 20 and scale["new_running_s"] > 0
    assert (out / "operator_scale.png").stat().st_size > 10_000
    assert re.search(r"^\|\s*ltj\s*\|\s*3\s*\|", (out / "operator_scale.md").read_text(), re.M)  # the scale table
