"""Running ``kubectl ltj`` in tests, and the check of its logs on a cluster that runs real pods (the
e2e tier calls ``check_logs`` on the real node; kwok pods have no logs)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any


def ltj(kubeconfig: str, *args: str, timeout: float = 60, **popen: Any) -> subprocess.CompletedProcess:
    """``kubectl ltj ARGS`` as a user runs it (the plugin's module, so no PATH lookup is involved)."""
    return subprocess.run([sys.executable, "-m", "ltj_cli", "--kubeconfig", kubeconfig, *args], capture_output=True,
                          text=True, timeout=timeout, **popen)


def check_logs(kubeconfig: str, namespace: str, job: str, nodes: int, restarted: bool = False,
               timeout: float = 600) -> str:
    """``kubectl ltj logs JOB -f`` of a job that runs to its end: every rank's lines come prefixed,
    across a gang restart when ``restarted``, and the command ends by itself with exit code 0 once the
    job is final. Returns the output."""
    proc = ltj(kubeconfig, "-n", namespace, "logs", job, "-f", timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for rank in range(nodes):
        assert any(line.startswith(f"[rank {rank}] ") for line in lines), (rank, proc.stdout[-3000:])
    assert all(line.startswith("[rank ") for line in lines), proc.stdout[-3000:]
    if restarted:
        assert any("restarted: gang attempt" in line for line in lines), proc.stdout[-3000:]
    return proc.stdout
