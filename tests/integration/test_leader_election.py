"""Two operators at once against the real API server: one leads through the Lease, the other stands by.

Each operator is its own process (`python -m ltj_operator`, as in the image), watching the test's
namespace and competing for the Lease there, on short lease timings. The test plays the kubelet as in
test_operator.py (pods pinned to no node, their status patched by hand) and checks, through a watch of
the job, that three retryable failures make exactly three restarts, recorded once each and never moving
backwards, also across a leader killed without giving its lease up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from integration.test_operator import exit_with, gang, job_statuses, pinned, run, wait_job, wait_phase
from kubetest import Kube, apply, wait_for
from ltj_operator import constants as C
from ltj_operator.leader import LEASE_NAME

pytestmark = pytest.mark.integration

# Short, so a standby takes over a killed leader's lease within seconds.
LEASE = {"LTJ_LEASE_DURATION_SECONDS": "4", "LTJ_LEASE_RENEW_DEADLINE_SECONDS": "3",
         "LTJ_LEASE_RETRY_PERIOD_SECONDS": "0.5"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    """One operator process and its log."""

    def __init__(self, kube: Kube, namespace: str, log: Path):
        self.log = log
        env = {**os.environ, "KUBECONFIG": kube.kubeconfig, "LTJ_WATCH_NAMESPACES": namespace,
               "LTJ_LEASE_NAMESPACE": namespace, "LTJ_DEFAULT_TRAINER_IMAGE": "ltj-trainer:dev",
               # DEBUG: every status write a pass attempts is logged, so a standby's would show.
               "LTJ_OPERATOR_IMAGE": "ltj-operator:dev", "LTJ_LOG_LEVEL": "DEBUG",
               "LTJ_HEALTH_PORT": str(_free_port()), "LTJ_METRICS_PORT": "0", **LEASE}
        with log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "ltj_operator"], env=env, stdout=out,
                                         stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def identity(self) -> str | None:
        """Who this process is in the Lease, once it has led."""
        for line in self.text().splitlines():
            if "leader election: " in line and " leads (lease " in line:
                return line.split("leader election: ", 1)[1].split(" leads", 1)[0]
        return None

    def acted_before_leading(self) -> list[str]:
        """The reconciler's log lines from before this process led (all of them if it never did)."""
        acted = []
        for line in self.text().splitlines():
            if " leads (lease " in line:
                break
            if " ltj_operator.reconcile: " in line:
                acted.append(line)
        return acted

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)


@pytest.fixture
def operators(kube: Kube, namespace: str, tmp_path: Path) -> Iterator[Callable[[], Operator]]:
    started: list[Operator] = []

    def start() -> Operator:
        op = Operator(kube, namespace, tmp_path / f"operator-{len(started)}.log")
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


def holder(kube: Kube, namespace: str) -> str | None:
    proc = kube.kubectl("get", "lease", LEASE_NAME, "-n", namespace, "-o", "jsonpath={.spec.holderIdentity}",
                        check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def fail_rank_1(kube: Kube, namespace: str, name: str, attempt: int) -> None:
    gang(kube, namespace, name, attempt=attempt)
    run(kube, namespace, f"{name}-node-0", f"{name}-node-1")
    wait_job(kube, namespace, name, lambda s: s.get("phase") == C.PHASE_RUNNING and s.get("attempt") == attempt,
             f"attempt {attempt} running")
    exit_with(kube, namespace, f"{name}-node-1", 137)  # SIGKILLed: retryable
    wait_job(kube, namespace, name, lambda s: s.get("restarts") == attempt + 1, f"restarts={attempt + 1}")


def test_two_operators_restart_a_gang_three_times_exactly_once_each(kube: Kube, namespace: str,
                                                                      operators: Callable[[], Operator]) -> None:
    first, second = operators(), operators()
    leader_id = wait_for(lambda: holder(kube, namespace), 60, what="an operator to take the lease")
    leader, standby = (first, second) if first.identity() == leader_id else (second, first)
    wait_for(lambda: leader.identity() == leader_id, 30, what="the leader to log its leadership")

    manifest = pinned("ha", runPolicy={"backoffLimit": 5})
    with job_statuses(kube, namespace, "ha") as statuses:
        name = apply(kube, namespace, manifest)
        fail_rank_1(kube, namespace, name, attempt=0)
        # The leader dies without giving its lease up (as a partitioned or frozen pod would stop renewing):
        # the standby takes over once the lease expires; a new operator comes up as the next standby.
        leader.stop(signal.SIGKILL)
        third = operators()
        wait_for(lambda: standby.identity() is not None, 60, what="the standby to take the lease over")
        assert holder(kube, namespace) == standby.identity()
        fail_rank_1(kube, namespace, name, attempt=1)
        fail_rank_1(kube, namespace, name, attempt=2)
        gang(kube, namespace, name, attempt=3)
        run(kube, namespace, f"{name}-node-0", f"{name}-node-1")
        final = wait_phase(kube, namespace, name, C.PHASE_RUNNING)
    assert (final["restarts"], final["attempt"]) == (3, 3)

    # As the API server showed the job all along (the watch may lag behind the final read): restarts and
    # attempt only ever grew, and never past 3.
    seen = [(st.get("restarts"), st.get("attempt")) for st in statuses if st.get("attempt") is not None]
    assert seen and all(r <= 3 and a <= 3 for r, a in seen), seen
    for (r0, a0), (r1, a1) in zip(seen, seen[1:]):
        assert r1 >= r0 and a1 >= a0, seen
    # One writer: a standby never reconciles (no status write attempted, none refused as stale) ...
    for op in (first, second, third):
        assert not op.acted_before_leading(), op.acted_before_leading()[:5]
    assert third.identity() is None  # it came up while the other one led, and stood by all along
    # ... and each transition was decided and logged by exactly one operator.
    logs = "\n".join(op.text() for op in (first, second, third))
    for line in ("created: gang of attempt 0", "restart 1 (attempt 1)", "restart 2 (attempt 2)",
                 "restart 3 (attempt 3)"):
        assert logs.count(f"{namespace}/{name}: {line}") == 1, (line, logs[-20000:])


def test_a_status_write_fenced_on_what_was_read_is_refused_once_another_writer_moved_on(kube: Kube,
                                                                                        namespace: str) -> None:
    """The API server's own JSON-patch `test`: a writer that read an older attempt or restart count writes
    nothing (StaleWrite), whatever else it meant to record."""
    from ltj_operator.kube import Kube as Client
    from ltj_operator.kube import StaleWrite

    name = apply(kube, namespace, pinned("fenced"))  # no operator runs: only this test writes the status
    client = Client.from_environment()
    try:
        fresh = {"attempt": None, "restarts": None}  # a new job's status has neither
        client.patch_job_status(namespace, name, {"attempt": 1, "restarts": 1, "phase": C.PHASE_RESTARTING}, fresh)
        with pytest.raises(StaleWrite):
            client.patch_job_status(namespace, name, {"attempt": 0, "restarts": 0, "phase": C.PHASE_RUNNING}, fresh)
        with pytest.raises(StaleWrite):
            client.patch_job_status(namespace, name, {"phase": C.PHASE_FAILED}, {"attempt": 1, "restarts": 0})
        client.patch_job_status(namespace, name, {"phase": C.PHASE_RUNNING, "failure": None},
                                {"attempt": 1, "restarts": 1})
    finally:
        client.close()
    st = wait_job(kube, namespace, name, lambda s: s.get("phase") == C.PHASE_RUNNING, "the last write")
    assert (st["attempt"], st["restarts"]) == (1, 1) and "failure" not in st
