"""Restart classification: is a pod's failure worth restarting the gang for?

Retryable (the infrastructure's fault, or a signal the trainer survives by resuming): signals,
OOMKilled, exit codes >= 128, eviction, preemption, node loss, a pod deleted under the job.
Not retryable (the program's fault): exit codes 1..127 unless listed in
``runPolicy.retryableExitCodes``; exit code 2 (invalid trainer config) never.
"""

from __future__ import annotations

import re
import signal as _signal
from dataclasses import dataclass
from typing import Iterable

from ltj_api.summary import parse as parse_summary

from . import constants as C
from .podview import PodView

R = C.Reason

# The reasons the kubelet / controllers put on pods that died for reasons outside the program.
_POD_REASON_NODE_LOST = frozenset({"NodeLost", "NodeShutdown", "Shutdown", "Terminated"})
_DISRUPTION_REASONS = {
    "EvictionByEvictionAPI": R.EVICTED,
    "TerminationByKubelet": R.EVICTED,
    "PreemptionByScheduler": R.PREEMPTED,
    "PreemptionByKubeScheduler": R.PREEMPTED,
    "DeletionByPodGC": R.NODE_LOST,
    "DeletionByTaintManager": R.NODE_LOST,
}
MAX_MESSAGE = 1024
MAX_CAUSE = 300
# The line Python prints last for an exception ("ValueError: bad batch", "torch.OutOfMemoryError: ..."),
# perhaps behind torchrun's "[rank1]:" prefix; warnings are not causes.
_EXCEPTION_LINE = re.compile(r"^(?:\[[^\]]*\]:?\s*)?((?:\w+\.)*\w+(?:Error|Exception|Failure|Interrupt|Exit)\b(?::.*)?)$")


@dataclass(frozen=True)
class PodFailure:
    pod: str
    rank: int
    retryable: bool
    reason: str
    message: str
    exit_code: int | None = None
    finished_at: str | None = None  # None: no termination time (a deleted or vanished pod)
    detail: str | None = None  # the trainer's whole termination message, of which `message` shows the cause

    def as_status(self) -> dict[str, object]:
        out: dict[str, object] = {"pod": self.pod, "rank": self.rank, "reason": self.reason, "message": self.message}
        if self.exit_code is not None:
            out["exitCode"] = self.exit_code
        if self.detail:
            out["detail"] = self.detail
        return out


def _signal_name(number: int) -> str:
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def cause(text: str | None) -> str:
    """The one line worth showing of a termination message: the error in the trainer's JSON summary; else,
    from a log tail (FallbackToLogsOnError), its last exception line, or failing that its last line."""
    summary = parse_summary(text)
    if summary is not None:
        error = summary.get("error")
        lines = [line.strip() for line in error.splitlines() if line.strip()] if isinstance(error, str) else []
        return _shorten(lines[0]) if lines else ""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line)
        if match:
            return _shorten(match.group(1))
    if not lines:
        return ""
    # No exception: the end of the last line says the most (a launcher's last word, a kubelet's message).
    last = lines[-1]
    return last if len(last) <= MAX_CAUSE else "..." + last[3 - MAX_CAUSE:]


def _shorten(line: str) -> str:
    return line if len(line) <= MAX_CAUSE else line[:MAX_CAUSE - 3] + "..."


def _describe(view: PodView, what: str, detail: str | None = None) -> str:
    message = f"pod {view.name} (rank {view.rank}): {what}"
    shown = cause(detail)
    if shown:
        message += f": {shown}"
    return message[:MAX_MESSAGE]


def classify(view: PodView, retryable_exit_codes: Iterable[int] = ()) -> PodFailure | None:
    """The pod's failure, or None when it is pending, running or succeeded."""
    rank = view.rank if view.rank is not None else -1
    trainer = view.trainer
    finished_at = trainer.finished_at if trainer is not None else None
    termination = (trainer.message or "").strip() if trainer is not None else ""

    def failure(retryable: bool, reason: str, message: str, exit_code: int | None = None) -> PodFailure:
        return PodFailure(pod=view.name, rank=rank, retryable=retryable, reason=reason, message=message,
                          exit_code=exit_code, finished_at=finished_at, detail=termination or None)

    exit_code = trainer.exit_code if trainer is not None and trainer.state == "terminated" else None
    if view.trainer_succeeded:
        return None

    # Disruptions first: an evicted or preempted trainer may exit with any code on its way out.
    if view.disruption_reason is not None:
        reason = _DISRUPTION_REASONS.get(view.disruption_reason, R.POD_DELETED)
        return failure(True, reason, _describe(view, f"disrupted ({view.disruption_reason})", view.message),
                       exit_code)
    if view.deleting:
        return failure(True, R.POD_DELETED, _describe(view, "deleted while the job was running"), exit_code)
    if view.phase == "Failed" and view.reason == "Evicted":
        return failure(True, R.EVICTED, _describe(view, "evicted", view.message), exit_code)
    if view.reason in _POD_REASON_NODE_LOST or view.phase == "Unknown":
        return failure(True, R.NODE_LOST, _describe(view, f"node {view.node_name or '?'} lost "
                                                          f"({view.reason or view.phase})", view.message), exit_code)

    if trainer is not None and trainer.state == "terminated":
        code = trainer.exit_code if trainer.exit_code is not None else -1
        detail = trainer.message
        if trainer.reason == "OOMKilled":
            return failure(True, R.OOM_KILLED, _describe(view, f"trainer OOMKilled (exit code {code})"), code)
        if trainer.signal:
            return failure(True, R.SIGNALED, _describe(view, f"trainer killed by {_signal_name(trainer.signal)}",
                                                       detail), code)
        if code >= C.SIGNAL_EXIT_BASE:
            return failure(True, R.SIGNALED,
                           _describe(view, f"trainer exited with code {code} "
                                           f"({_signal_name(code - C.SIGNAL_EXIT_BASE)})", detail),
                           code)
        if code == C.EXIT_INVALID_CONFIG:
            return failure(False, R.INVALID_CONFIG, _describe(view, "trainer rejected its configuration (exit code 2)",
                                                              detail), code)
        if code in set(retryable_exit_codes):
            return failure(True, R.RETRYABLE_EXIT_CODE,
                           _describe(view, f"trainer exited with retryable code {code}", detail), code)
        return failure(False, R.NON_RETRYABLE_EXIT_CODE, _describe(view, f"trainer exited with code {code}", detail),
                       code)

    if view.phase == "Failed":
        # Failed without a trainer exit: rejected at admission on the node (e.g. OutOfnvidia.com/gpu).
        what = f"pod failed ({view.reason})" if view.reason else "pod failed"
        return failure(True, R.POD_FAILED, _describe(view, what, view.message))
    return None


def vanished(pod_name: str, rank: int) -> PodFailure:
    """A pod of the running gang that no longer exists (deleted, or garbage-collected with its node)."""
    return PodFailure(pod=pod_name, rank=rank, retryable=True, reason=R.POD_DELETED,
                      message=f"pod {pod_name} (rank {rank}): disappeared while the job was running")


def root_cause(failures: Iterable[PodFailure]) -> PodFailure:
    """The failure that most likely started it: the earliest. When one rank dies the others follow
    (often with exit code 1 from a broken collective), so the first is the cause; a pod that vanished
    or is being deleted has no exit time and counts as first. Ties favour the retryable failure."""
    ordered = sorted(failures, key=lambda f: (f.finished_at is not None, f.finished_at or "", not f.retryable,
                                              f.rank))
    if not ordered:
        raise ValueError("no failures")
    return ordered[0]
