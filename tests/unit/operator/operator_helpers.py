"""Builders for the operator's unit tests: job bodies and pods shaped like the API server returns them."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from ltj_operator import constants as C
from ltj_operator.spec import Job, parse_job

T0 = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
UID = "0b6f7a4e-1111-4222-8333-944455556666"


class Clock:
    """A monotonic clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def ts(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep merge; a None value deletes the key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


BASE_SPEC: dict[str, Any] = {
    "model": {"name": "digits_cnn"},
    "output": {"volumeClaimTemplate": {"storage": "1Gi"}},
}


def job_body(name: str = "mnist", namespace: str = "team-a", generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": C.API_VERSION,
        "kind": C.KIND,
        "metadata": {"name": name, "namespace": namespace, "uid": UID, "generation": generation},
        "spec": merge(BASE_SPEC, spec),
    }


def make_job(name: str = "mnist", **spec: Any) -> Job:
    return parse_job(job_body(name=name, **spec))


def pod(job: str, rank: int, attempt: int = 0, *, phase: str = "Pending", trainer: dict[str, Any] | None = None,
        owner: str = UID, deleting: bool = False, conditions: list[dict[str, Any]] | None = None,
        reason: str | None = None, message: str | None = None, node: str | None = "node-a") -> dict[str, Any]:
    """A pod of the gang as observed; `trainer` is the trainer container's `state`."""
    status: dict[str, Any] = {"phase": phase}
    if conditions is not None:
        status["conditions"] = conditions
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    if trainer is not None:
        status["containerStatuses"] = [{"name": C.TRAINER_CONTAINER, "ready": "running" in trainer,
                                        "restartCount": 0, "image": "ltj-trainer:0.1.0", "imageID": "",
                                        "state": trainer}]
    meta: dict[str, Any] = {
        "name": f"{job}-node-{rank}",
        "namespace": "team-a",
        "uid": f"pod-{job}-{rank}-{attempt}",
        "labels": {C.LABEL_JOB_NAME: job, C.LABEL_NODE_RANK: str(rank), C.LABEL_ATTEMPT: str(attempt),
                   C.LABEL_MANAGED_BY: C.MANAGED_BY, C.LABEL_COMPONENT: C.COMPONENT_TRAINER},
        "ownerReferences": [{"apiVersion": C.API_VERSION, "kind": C.KIND, "name": job, "uid": owner,
                             "controller": True, "blockOwnerDeletion": True}],
    }
    if deleting:
        meta["deletionTimestamp"] = ts(0)
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}, "status": status}


def running(job: str, rank: int, attempt: int = 0, started: float = 0) -> dict[str, Any]:
    return pod(job, rank, attempt, phase="Running", trainer={"running": {"startedAt": ts(started)}},
               conditions=[{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}])


def terminated(job: str, rank: int, attempt: int = 0, *, exit_code: int, reason: str = "Error",
               message: str | None = None, finished: float = 0, signal: int | None = None,
               phase: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": exit_code, "reason": reason, "startedAt": ts(0), "finishedAt": ts(finished)}
    if message is not None:
        state["message"] = message
    if signal is not None:
        state["signal"] = signal
    return pod(job, rank, attempt, phase=phase or ("Succeeded" if exit_code == 0 else "Failed"),
               trainer={"terminated": state})


def unschedulable(job: str, rank: int, attempt: int = 0,
                  message: str = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                  since: float = 0) -> dict[str, Any]:
    return pod(job, rank, attempt, node=None,
               conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": message, "lastTransitionTime": ts(since)}])


def workload(job: str, *, reserved: tuple[str, str, str] | None = None, admitted: tuple[str, str, str] | None = None,
             evicted: tuple[str, str, str] | None = None, pods_ready: tuple[str, str, str] | None = None,
             cluster_queue: str | None = None,
             podsets: tuple[str, ...] = ("master", "worker"), flavor: str = "gpu-a", owner: str = UID) -> dict[str, Any]:
    """The job's Workload as Kueue leaves it: conditions (status, reason, message) when given, and with
    `cluster_queue` an admission of every pod set on `flavor` (for GPUs)."""
    from ltj_operator.kueue import workload_name

    given = (("QuotaReserved", reserved), ("Admitted", admitted), ("Evicted", evicted), ("PodsReady", pods_ready))
    status: dict[str, Any] = {"conditions": [
        {"type": type_, "status": c[0], "reason": c[1], "message": c[2], "lastTransitionTime": ts(0)}
        for type_, c in given if c is not None]}
    if cluster_queue is not None:
        status["admission"] = {"clusterQueue": cluster_queue, "podSetAssignments": [
            {"name": name, "flavors": {C.GPU_RESOURCE: flavor}, "count": 1} for name in podsets]}
    return {"apiVersion": C.KUEUE_API, "kind": "Workload",
            "metadata": {"name": workload_name(make_job(job)), "namespace": "team-a", "resourceVersion": "7",
                         "ownerReferences": [{"apiVersion": C.API_VERSION, "kind": C.KIND, "name": job, "uid": owner,
                                              "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"queueName": "gpus"}, "status": status}
