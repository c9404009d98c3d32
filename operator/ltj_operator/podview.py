"""What the operator needs to know about one observed pod, extracted once from its manifest.

Pure: a pod dict (as the API returns it) in, a frozen view out. Everything else (failure
classification, status decisions) works on these views, never on raw dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from . import constants as C


@dataclass(frozen=True)
class ContainerView:
    state: str  # waiting | running | terminated | unknown
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    started_at: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str = ""
    rank: int | None = None
    attempt: int | None = None
    owner_uid: str | None = None
    phase: str = "Pending"
    reason: str | None = None
    message: str | None = None
    deleting: bool = False
    disruption_reason: str | None = None  # the DisruptionTarget condition's reason, when True
    node_name: str | None = None
    unschedulable: str | None = None  # the scheduler's message while PodScheduled=False/Unschedulable
    unschedulable_since: str | None = None  # that condition's lastTransitionTime
    trainer: ContainerView | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def trainer_running(self) -> bool:
        return self.trainer is not None and self.trainer.state == "running" and not self.deleting

    @property
    def trainer_succeeded(self) -> bool:
        if self.trainer is not None and self.trainer.state == "terminated":
            return self.trainer.exit_code == 0
        return self.phase == "Succeeded"

    @property
    def awaits_claim(self) -> bool:
        """The scheduler waits for a claim of the pod to bind (a provisioner is making its volume)."""
        return "unbound immediate PersistentVolumeClaims" in (self.unschedulable or "")

    @property
    def pending_detail(self) -> str | None:
        """Why the pod is not running yet, in the words of the scheduler or kubelet."""
        if self.unschedulable:
            return self.unschedulable
        if self.trainer is not None and self.trainer.state == "waiting" and self.trainer.reason:
            detail = self.trainer.reason
            if self.trainer.message:
                detail += f": {self.trainer.message}"
            return detail
        return None


def _int_label(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _container(statuses: Any, name: str) -> ContainerView | None:
    if not isinstance(statuses, list):
        return None
    for status in statuses:
        if not isinstance(status, Mapping) or status.get("name") != name:
            continue
        state = status.get("state") or {}
        if state.get("terminated"):
            t = state["terminated"]
            return ContainerView(state="terminated", reason=t.get("reason"), message=t.get("message"),
                                 exit_code=t.get("exitCode"), signal=t.get("signal") or None,
                                 started_at=t.get("startedAt"), finished_at=t.get("finishedAt"))
        if state.get("running") is not None:
            return ContainerView(state="running", started_at=(state["running"] or {}).get("startedAt"))
        if state.get("waiting") is not None:
            w = state["waiting"] or {}
            return ContainerView(state="waiting", reason=w.get("reason"), message=w.get("message"))
        return ContainerView(state="unknown")
    return None


def observe_pod(pod: Mapping[str, Any]) -> PodView:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    owner_uid = None
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            owner_uid = ref.get("uid")
    disruption = None
    unschedulable = unschedulable_since = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == C.TRUE:
            disruption = cond.get("reason") or "DisruptionTarget"
        if (cond.get("type") == "PodScheduled" and cond.get("status") == C.FALSE
                and cond.get("reason") == "Unschedulable"):
            unschedulable = cond.get("message") or "the scheduler found no node for the pod"
            unschedulable_since = cond.get("lastTransitionTime")
    return PodView(
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        rank=_int_label(labels.get(C.LABEL_NODE_RANK)),
        attempt=_int_label(labels.get(C.LABEL_ATTEMPT)),
        owner_uid=owner_uid,
        phase=status.get("phase") or "Pending",
        reason=status.get("reason"),
        message=status.get("message"),
        deleting=bool(meta.get("deletionTimestamp")),
        disruption_reason=disruption,
        node_name=(pod.get("spec") or {}).get("nodeName"),
        unschedulable=unschedulable,
        unschedulable_since=unschedulable_since,
        trainer=_container(status.get("containerStatuses"), C.TRAINER_CONTAINER),
    )

