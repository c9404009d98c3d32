"""kubectl ltj logs: rank prefixes and following across gang restarts.

The local cluster's kwok pods run no containers and so have no logs: the following logic is driven
here by a scripted source of pods and lines (the API side, cluster.JobLogs, is exercised against the
API server in tests/integration/test_cli.py, and on the real node by tests/clitest.py's check).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pytest

from ltj_cli.logs import PodRef, follow_rank, stream

pytestmark = pytest.mark.unit


@dataclass
class ScriptedJob:
    """Each rank's pods in the order the gang creates them, each with its log; then the job is final."""

    attempts: dict[int, list[list[str]]]
    asked: list[tuple[int, str | None, bool]] = field(default_factory=list)

    def wait_pod(self, rank: int, after_uid: str | None) -> PodRef | None:
        pods = [PodRef(f"j-node-{rank}", f"uid-{rank}-{a}", rank, str(a), "trainer")
                for a in range(len(self.attempts.get(rank, [])))]
        uids = [p.uid for p in pods]
        nxt = 0 if after_uid is None else uids.index(after_uid) + 1
        return pods[nxt] if nxt < len(pods) else None

    def lines(self, pod: PodRef, follow: bool) -> list[str]:
        self.asked.append((pod.rank, pod.attempt, follow))
        return self.attempts[pod.rank][int(pod.attempt or 0)]


def test_follow_goes_on_across_a_gang_restart() -> None:
    job = ScriptedJob({0: [["epoch 0", "killed"], ["resumed", "done"]]})
    seen: list[tuple[int, str]] = []
    assert follow_rank(job, 0, True, lambda r, line: seen.append((r, line)))
    assert seen == [(0, "epoch 0"), (0, "killed"), (0, "--- j-node-0 restarted: gang attempt 1 ---"),
                    (0, "resumed"), (0, "done")]
    assert job.asked == [(0, "0", True), (0, "1", True)]


def test_without_follow_only_the_current_pod() -> None:
    job = ScriptedJob({0: [["a"], ["b"]]})
    seen: list[str] = []
    assert follow_rank(job, 0, False, lambda r, line: seen.append(line))
    assert seen == ["a"] and job.asked == [(0, "0", False)]


def test_every_rank_prefixed_whole_lines() -> None:
    job = ScriptedJob({0: [[f"r0 line {i}" for i in range(200)]], 1: [[f"r1 line {i}" for i in range(200)]]})
    out, err = io.StringIO(), io.StringIO()
    assert stream(job, [0, 1], True, out, err) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 400 and err.getvalue() == ""
    for rank in (0, 1):
        mine = [line for line in lines if line.startswith(f"[rank {rank}] ")]
        assert mine == [f"[rank {rank}] r{rank} line {i}" for i in range(200)]  # in order, never torn


def test_a_rank_without_pods_is_an_error() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert stream(ScriptedJob({0: [["x"]]}), [0, 1], False, out, err) == 1
    assert out.getvalue() == "[rank 0] x\n"
    assert "rank 1 has no pod" in err.getvalue() and "cleanPodPolicy" in err.getvalue()
