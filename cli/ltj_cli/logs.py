"""``kubectl ltj logs``: each rank's trainer log, prefixed ``[rank R]``, followed across gang restarts.

A restarted gang's pods come back with the same names and a new attempt label (and a new uid): a
follower whose stream ended waits for the rank's next pod and goes on with its log, until the job is
final. Where the pods come from is a :class:`Source` (cluster.JobLogs over the API), so the
following logic runs without a cluster too.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, TextIO


@dataclass(frozen=True)
class PodRef:
    name: str
    uid: str
    rank: int
    attempt: str | None  # the pod's gang attempt label
    container: str  # the trainer's


class Source(Protocol):
    def wait_pod(self, rank: int, after_uid: str | None) -> PodRef | None:
        """The rank's newest pod whose trainer has started, other than ``after_uid``; waits for one,
        and returns None once the job is final (or gone) and none will come."""

    def lines(self, pod: PodRef, follow: bool) -> Iterable[str]:
        """The trainer's log lines; with ``follow``, until the container ends."""


Emit = Callable[[int, str], None]


def follow_rank(source: Source, rank: int, follow: bool, emit: Emit) -> bool:
    """Emits the rank's log (of every attempt, with ``follow``); False when it never had a pod."""
    seen: PodRef | None = None
    while True:
        pod = source.wait_pod(rank, seen.uid if seen else None)
        if pod is None:
            return seen is not None
        if seen is not None:
            emit(rank, f"--- {pod.name} restarted: gang attempt {pod.attempt or '?'} ---")
        for line in source.lines(pod, follow):
            emit(rank, line)
        if not follow:
            return True
        seen = pod


def stream(source: Source, ranks: Iterable[int], follow: bool, out: TextIO = sys.stdout,
           err: TextIO = sys.stderr) -> int:
    """Every rank's log on ``out``, one thread per rank; the exit code (1 when a rank had no pod)."""
    lock = threading.Lock()

    def emit(rank: int, line: str) -> None:
        with lock:  # whole lines: ranks interleave by line, never within one
            out.write(f"[rank {rank}] {line}\n")
            out.flush()

    missing: list[int] = []

    def run(rank: int) -> None:
        if not follow_rank(source, rank, follow, emit):
            with lock:
                missing.append(rank)

    threads = [threading.Thread(target=run, args=(r,), name=f"rank-{r}", daemon=True) for r in ranks]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)  # a bounded join keeps Ctrl-C deliverable to the main thread
    for rank in sorted(missing):
        err.write(f"error: rank {rank} has no pod with a started trainer, and the job is final "
                  "(its pods may have been cleaned up: see spec.runPolicy.cleanPodPolicy)\n")
    return 1 if missing else 0
