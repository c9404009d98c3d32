"""hack/kind-e2e.sh itself: its usage errors and its word on a missing Docker engine. The kind cluster
it sets up runs the shared real-cluster tests (tests/e2e/test_real_cluster.py, the `kind` param)."""

from __future__ import annotations

import subprocess

import pytest

from realcluster import KIND_SCRIPT, docker_missing

pytestmark = [pytest.mark.e2e, pytest.mark.kind]


def test_script_reports_a_missing_docker_engine(tmp_path):
    """Where Docker is absent the script itself says so and exits 3 (before touching anything)."""
    if docker_missing() is None:
        pytest.skip("a Docker engine is present: the kind cluster tests cover the script")
    proc = subprocess.run(["bash", str(KIND_SCRIPT), "--artifacts", str(tmp_path / "a")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "no Docker engine" in proc.stderr
    assert not (tmp_path / "a").exists()
    bad = subprocess.run(["bash", str(KIND_SCRIPT), "--no-such-flag"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown argument: --no-such-flag" in bad.stderr
