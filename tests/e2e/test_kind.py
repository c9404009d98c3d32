"""kind end to end (hack/kind-e2e.sh): real kubelets and containerd run the images built with Docker,
the chart installs the operator, and the CPU sample trains over two kind nodes to Succeeded.

Needs a Docker engine. Without one the tests skip with the reason "no Docker engine" (pytest -ra
shows it); set LTJ_REQUIRE_KIND=1 (CI on GitHub Actions does) to make a missing engine a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "kind-e2e.sh"
# Seconds the script waits for the job; image builds and cluster creation come on top.
TIMEOUT = int(os.environ.get("LTJ_KIND_TIMEOUT", "1500"))

pytestmark = [pytest.mark.e2e, pytest.mark.kind, pytest.mark.slow, pytest.mark.timeout(TIMEOUT + 2400)]


def docker_missing() -> str | None:
    """Why kind cannot run here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "no Docker engine (docker CLI not installed)"
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "no Docker engine (docker info timed out)"
    if proc.returncode != 0:
        detail = next((ln.strip() for ln in proc.stderr.splitlines() if ln.strip()), "docker info failed")
        return f"no Docker engine ({detail})"
    return None


@pytest.fixture(scope="module")
def kind_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    reason = docker_missing()
    if reason:
        if os.environ.get("LTJ_REQUIRE_KIND") == "1":
            pytest.fail(f"LTJ_REQUIRE_KIND=1 but {reason}")
        pytest.skip(reason)
    artifacts = Path(os.environ.get("LTJ_KIND_ARTIFACTS") or tmp_path_factory.mktemp("kind-e2e"))
    artifacts.mkdir(parents=True, exist_ok=True)
    log = artifacts / "kind-e2e.log"
    with open(log, "w") as out:
        proc = subprocess.run(["bash", str(SCRIPT), "--artifacts", str(artifacts), "--timeout", str(TIMEOUT)],
                              stdout=out, stderr=subprocess.STDOUT, timeout=TIMEOUT + 2100)
    return {"rc": proc.returncode, "artifacts": artifacts, "log": log.read_text(errors="replace")}


def test_sample_succeeds_on_kind_with_training_status(kind_run):
    assert kind_run["rc"] == 0, f"hack/kind-e2e.sh failed ({kind_run['rc']}):\n{kind_run['log'][-8000:]}"
    artifacts: Path = kind_run["artifacts"]
    job = json.loads((artifacts / "job-final.json").read_text())
    status = job["status"]
    assert status["phase"] == "Succeeded"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Succeeded"] == "True"
    tr = status["training"]
    assert tr["finished"] is True
    assert tr["bestCheckpoint"].startswith("/output/") and tr["bestCheckpoint"].endswith(".ckpt")
    assert isinstance(tr["bestScore"], float) and tr["testMetrics"]
    # The checkpoints the status names exist on the shared volume (the host directory behind it).
    volume = artifacts / "volume"
    names = {p.name for p in volume.rglob("*.ckpt")}
    assert Path(tr["bestCheckpoint"]).name in names and Path(tr["lastCheckpoint"]).name in names


def test_the_two_ranks_ran_on_two_kind_nodes(kind_run):
    assert kind_run["rc"] == 0, "see test_sample_succeeds_on_kind_with_training_status"
    pods = json.loads((kind_run["artifacts"] / "pods.json").read_text())["items"]
    trainers = [p for p in pods if p["metadata"]["labels"].get("app.kubernetes.io/component") == "trainer"]
    assert len(trainers) == 2
    assert len({p["spec"]["nodeName"] for p in trainers}) == 2, [p["spec"]["nodeName"] for p in trainers]


def test_script_reports_a_missing_docker_engine(tmp_path):
    """Where Docker is absent the script itself says so and exits 3 (before touching anything)."""
    if docker_missing() is None:
        pytest.skip("a Docker engine is present: the kind run above covers the script")
    proc = subprocess.run(["bash", str(SCRIPT), "--artifacts", str(tmp_path / "a")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "no Docker engine" in proc.stderr
    assert not (tmp_path / "a").exists()
    bad = subprocess.run(["bash", str(SCRIPT), "--no-such-flag"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown argument: --no-such-flag" in bad.stderr
