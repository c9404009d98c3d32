"""Kueue's side of a queued job, pure: the Workload's name, what the operator needs of a Workload
(`observe_workload`, like podview.observe_pod), the priority jobframework gives a job, and the
placement an admission puts on the pods.

The operator runs a LightningTrainingJob as a Kueue "external framework" (see README: Running with
Kueue), doing for it what Kueue's jobframework does for its built-in jobs: one Workload per job,
owned by it, named as jobframework names it; no pods until Kueue admits that Workload; the admitted
flavors' node labels and tolerations on every pod (podset.FromAssignment); the Workload marked
Finished when the job ends, which releases its quota; its PodsReady condition, which Kueue's
waitForPodsReady times, kept as jobframework keeps it (`pods_ready_update`); and when Kueue evicts the Workload (preemption,
deactivation, a PodsReady timeout), once the stopped job's pods are gone, its admission cleared
(`cleared_admission`), which gives the quota back and queues the Workload again. No I/O here: kube.py
reads and writes, reconcile.py wires, status.decide holds and stops the job.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from . import constants as C
from .spec import Job

# What jobframework's names are made of (workload_names.go): "<lowercase kind>-<job name>" cut to fit,
# "-", and the first hex digits of a hash of the kind, group, name and uid. Cut to 63 characters (its
# ShortWorkloadNames form), so the name fits a label value wherever Kueue or a user puts it in one.
WORKLOAD_HASH_LENGTH = 5
MAX_WORKLOAD_NAME_LENGTH = 63
# Pod sets as Kubeflow's PyTorchJob has them: rank 0 carries the relay sidecar, so its requests differ.
PODSET_MASTER = "master"
PODSET_WORKER = "worker"
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# Kueue's Workload condition types, and the reasons jobframework gives Finished.
WL_QUOTA_RESERVED = "QuotaReserved"
WL_ADMITTED = "Admitted"
WL_FINISHED = "Finished"
WL_EVICTED = "Evicted"
WL_REQUEUED = "Requeued"
FINISHED_SUCCEEDED = "Succeeded"
FINISHED_FAILED = "Failed"
# Clearing an evicted Workload's admission (jobframework's step "handle eviction"): QuotaReserved's reason,
# Admitted's reason and message without a reservation (workload.SyncAdmittedCondition), and the eviction
# reasons after which Requeued is True at once; after any other (a PodsReadyTimeout's backoff, a
# deactivation) Kueue's own controller sets it True when the Workload may queue again.
UNRESERVED_REASON = "Pending"
NO_RESERVATION = ("NoReservation", "The workload has no reservation")
NO_RESERVATION_UNSATISFIED = ("NoReservationUnsatisfiedChecks",
                              "The workload has no reservation and not all checks ready")
REQUEUED_AT_ONCE = frozenset({"Preempted", "NodeFailures"})
# The PodsReady condition Kueue's waitForPodsReady times admitted Workloads by, with jobframework's reasons and
# messages (generatePodsReadyCondition): False while the gang has not started (WaitForStart) or, once it had,
# while it recovers from a lost pod (WaitForRecovery); True once every pod is ready or done (Started, or
# Recovered after a WaitForRecovery).
WL_PODS_READY = "PodsReady"
WAIT_FOR_START = ("WaitForStart", "Not all pods are ready or succeeded")
WAIT_FOR_RECOVERY = ("WaitForRecovery", "At least one pod has failed, waiting for recovery")
PODS_STARTED = "Started"
PODS_RECOVERED = "Recovered"
PODS_READY_MESSAGE = "All pods reached readiness and the workload is running"
# Kueue's limit on a condition message (api.TruncateConditionMessage).
MAX_WORKLOAD_MESSAGE = 32768
# Where a job's priority comes from (jobframework.ExtractPriority): the Workload's priorityClassRef,
# (group, kind), and the API version each is read with.
WORKLOAD_PRIORITY_CLASS = ("kueue.x-k8s.io", "WorkloadPriorityClass")
POD_PRIORITY_CLASS = ("scheduling.k8s.io", "PriorityClass")
PRIORITY_CLASS_API = {WORKLOAD_PRIORITY_CLASS: C.KUEUE_API, POD_PRIORITY_CLASS: "scheduling.k8s.io/v1"}


def workload_name(job: Job) -> str:
    """The job's one Workload: deterministic, so an operator that restarts finds it instead of making another."""
    prefix = f"{C.KIND.lower()}-{job.meta.name}"[:MAX_WORKLOAD_NAME_LENGTH - 1 - WORKLOAD_HASH_LENGTH]
    digest = hashlib.sha1(f"{C.KIND}\n{C.GROUP}\n{job.meta.name}\n{job.meta.uid}".encode()).hexdigest()
    return f"{prefix}-{digest[:WORKLOAD_HASH_LENGTH]}"


def podset_of(rank: int) -> str:
    return PODSET_MASTER if rank == 0 else PODSET_WORKER


def podset_counts(job: Job) -> list[tuple[str, int]]:
    """(pod set, pods): rank 0 alone, then the other ranks when there are any."""
    return [(PODSET_MASTER, 1), *([(PODSET_WORKER, job.spec.nodes - 1)] if job.spec.nodes > 1 else [])]


# --- priority ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Priority:
    value: int = 0
    ref: Mapping[str, str] | None = None  # the Workload's spec.priorityClassRef {group, kind, name}


def priority_source(job: Job) -> tuple[tuple[str, str], str] | None:
    """The class whose value is the job's priority ((group, kind), name), as jobframework picks it: the
    job's kueue.x-k8s.io/priority-class label (a WorkloadPriorityClass), else the pods' priorityClassName
    (a PriorityClass); None: the cluster's global default PriorityClass, if any."""
    if job.meta.priority_class is not None:
        return WORKLOAD_PRIORITY_CLASS, job.meta.priority_class
    if job.spec.pod_template.priority_class_name is not None:
        return POD_PRIORITY_CLASS, job.spec.pod_template.priority_class_name
    return None


def priority_of(source: tuple[str, str], obj: Mapping[str, Any]) -> Priority:
    """The priority a class (a WorkloadPriorityClass or PriorityClass as read) gives."""
    group, kind = source
    value = obj.get("value")
    return Priority(value=value if isinstance(value, int) and not isinstance(value, bool) else 0,
                    ref={"group": group, "kind": kind, "name": str((obj.get("metadata") or {}).get("name"))})


def default_priority(classes: Sequence[Mapping[str, Any]]) -> Priority:
    """Without a named class: the global default PriorityClass (the lowest, should there be several), else 0."""
    defaults = [c for c in classes if c.get("globalDefault") is True]
    if not defaults:
        return Priority()
    return priority_of(POD_PRIORITY_CLASS, min(defaults, key=lambda c: priority_of(POD_PRIORITY_CLASS, c).value))


# --- the Workload as observed -----------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """One pod set's admission: the flavor of each resource."""
    name: str
    flavors: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Condition:
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class WorkloadView:
    name: str
    owner_uid: str | None = None  # its controller's uid
    quota_reserved: Condition | None = None
    admitted_condition: Condition | None = None
    finished: Condition | None = None
    evicted: Condition | None = None  # Evicted=True only: why Kueue wants the pods stopped
    # The Evicted condition's lastTransitionTime: which eviction it is (each sets it anew, and
    # re-admission turns Evicted False), while the condition stays True until Kueue admits it again.
    evicted_at: str | None = None
    pods_ready: Condition | None = None
    cluster_queue: str | None = None
    assignments: tuple[Assignment, ...] = ()
    # The Workload as read: the pass's writes of its status are conditional on this read's resourceVersion.
    read: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def admitted(self) -> bool:
        """Quota reserved and every admission check passed (Admitted=True), the admission on record, not
        finished and not being evicted: what Kueue's integrations wait for before they start a job."""
        return (self.quota_reserved is not None and self.quota_reserved.status == C.TRUE
                and self.admitted_condition is not None and self.admitted_condition.status == C.TRUE
                and self.cluster_queue is not None and self.finished is None and self.evicted is None)

    @property
    def holds_quota(self) -> bool:
        """Kueue counts the Workload against its ClusterQueue's quota (QuotaReserved=True): an evicted one
        until its job controller clears the admission."""
        return self.quota_reserved is not None and self.quota_reserved.status == C.TRUE


def _condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Condition | None:
    for cond in conditions:
        if cond.get("type") == type_:
            return Condition(str(cond.get("status") or ""), str(cond.get("reason") or ""),
                             str(cond.get("message") or ""))
    return None


def observe_workload(body: Mapping[str, Any]) -> WorkloadView:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    conditions = tuple(c for c in status.get("conditions") or () if isinstance(c, Mapping))
    owner = next((r for r in meta.get("ownerReferences") or () if r.get("controller")), None)
    admission = status.get("admission") or {}
    finished, evicted = _condition(conditions, WL_FINISHED), _condition(conditions, WL_EVICTED)
    evicted_at = next((str(c.get("lastTransitionTime") or "") for c in conditions if c.get("type") == WL_EVICTED), None)
    return WorkloadView(
        name=str(meta.get("name") or ""),
        owner_uid=str(owner.get("uid")) if owner else None,
        quota_reserved=_condition(conditions, WL_QUOTA_RESERVED),
        admitted_condition=_condition(conditions, WL_ADMITTED),
        finished=finished if finished is not None and finished.status == C.TRUE else None,
        evicted=evicted if evicted is not None and evicted.status == C.TRUE else None,
        evicted_at=evicted_at if evicted is not None and evicted.status == C.TRUE else None,
        pods_ready=_condition(conditions, WL_PODS_READY),
        cluster_queue=str(admission["clusterQueue"]) if admission.get("clusterQueue") else None,
        assignments=tuple(Assignment(str(a.get("name")), {str(k): str(v) for k, v in (a.get("flavors") or {}).items()})
                          for a in admission.get("podSetAssignments") or () if isinstance(a, Mapping)),
        read=body,
    )


def cleared_admission(body: Mapping[str, Any], now: dt.datetime) -> dict[str, Any] | None:
    """The status merge patch by which a job controller gives back an evicted Workload's quota once no
    pod of its job is left (jobframework's step "handle eviction", workload.UnsetQuotaReservationWithCondition
    and SetRequeuedCondition): no admission; QuotaReserved=False, reason Pending, with the eviction's
    message; Admitted=False for want of a reservation, the time it was admitted added to
    accumulatedPastExecutionTimeSeconds; Requeued with the eviction's reason and message, True only after
    a preemption or node failures. The whole conditions list, as a merge patch replaces it: each keeps its
    lastTransitionTime unless its status changes. None when the Workload is not evicted or holds no quota
    (its admission is cleared already)."""
    view = observe_workload(body)
    if view.evicted is None or not view.holds_quota:
        return None
    status = body.get("status") or {}
    conditions = [dict(c) for c in status.get("conditions") or () if isinstance(c, Mapping)]
    put = _condition_setter(body, conditions, now)
    patch: dict[str, Any] = {"admission": None}
    evicted = view.evicted
    put(WL_REQUEUED, C.TRUE if evicted.reason in REQUEUED_AT_ONCE else C.FALSE, evicted.reason, evicted.message)
    put(WL_QUOTA_RESERVED, C.FALSE, UNRESERVED_REASON, evicted.message)
    admitted = next((c for c in conditions if c.get("type") == WL_ADMITTED), None)
    if admitted is not None and admitted.get("status") == C.TRUE:
        since = _time(admitted.get("lastTransitionTime"))
        checks = [c for c in status.get("admissionChecks") or () if isinstance(c, Mapping)]
        put(WL_ADMITTED, C.FALSE, *(NO_RESERVATION if all(c.get("state") == "Ready" for c in checks)
                                    else NO_RESERVATION_UNSATISFIED))
        if since is not None:
            past = status.get("accumulatedPastExecutionTimeSeconds")
            patch["accumulatedPastExecutionTimeSeconds"] = ((past if isinstance(past, int) else 0)
                                                            + int((now - since).total_seconds()))
    patch["conditions"] = conditions
    return patch


def pods_ready_update(view: WorkloadView, gang_ready: bool) -> Condition | None:
    """The PodsReady condition the Workload is to have, as jobframework keeps it for its jobs
    (generatePodsReadyCondition), given whether the whole gang is ready (every rank's pod ready or
    succeeded); None when the Workload has it already with that status and reason (jobframework's
    HasConditionWithTypeAndReason: a new message alone is no write). Admitted means Admitted=True, as
    workload.IsAdmitted has it: an evicted Workload still admitted waits for recovery. Nothing for a
    finished Workload, which Kueue no longer times."""
    if view.finished is not None:
        return None
    current = view.pods_ready
    if view.admitted_condition is None or view.admitted_condition.status != C.TRUE:
        want = Condition(C.FALSE, *WAIT_FOR_START)
    elif gang_ready:
        recovering = current is not None and current.reason in (WAIT_FOR_RECOVERY[0], PODS_RECOVERED)
        want = Condition(C.TRUE, PODS_RECOVERED if recovering else PODS_STARTED, PODS_READY_MESSAGE)
    elif current is not None and (current.status == C.TRUE or current.reason == WAIT_FOR_RECOVERY[0]):
        want = Condition(C.FALSE, *WAIT_FOR_RECOVERY)
    else:
        want = Condition(C.FALSE, *WAIT_FOR_START)
    if current is not None and (current.status, current.reason) == (want.status, want.reason):
        return None
    return want


def pods_ready_patch(body: Mapping[str, Any], gang_ready: bool, now: dt.datetime) -> dict[str, Any] | None:
    """The status merge patch that gives the Workload (as read) its PodsReady condition (`pods_ready_update`),
    None when it has it already. The whole conditions list, as a merge patch replaces it."""
    want = pods_ready_update(observe_workload(body), gang_ready)
    if want is None:
        return None
    conditions = [dict(c) for c in (body.get("status") or {}).get("conditions") or () if isinstance(c, Mapping)]
    _condition_setter(body, conditions, now)(WL_PODS_READY, want.status, want.reason, want.message)
    return {"conditions": conditions}


def _condition_setter(body: Mapping[str, Any], conditions: list[dict[str, Any]], now: dt.datetime
                      ) -> Callable[[str, str, str, str], None]:
    """A setter of one condition of ``conditions`` (the Workload's, as read) in place, as
    apimeta.SetStatusCondition sets it: lastTransitionTime kept unless its status changes."""
    generation = (body.get("metadata") or {}).get("generation") or 0
    stamp = now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def put(type_: str, state: str, reason: str, message: str) -> None:
        new = {"type": type_, "status": state, "reason": reason, "message": message[:MAX_WORKLOAD_MESSAGE],
               "lastTransitionTime": stamp, "observedGeneration": generation}
        for i, old in enumerate(conditions):
            if old.get("type") == type_:
                if old.get("status") == state and old.get("lastTransitionTime"):
                    new["lastTransitionTime"] = old["lastTransitionTime"]
                conditions[i] = new
                return
        conditions.append(new)

    return put


def _time(value: Any) -> dt.datetime | None:
    """A metav1.Time as Kueue writes it (RFC 3339, UTC)."""
    try:
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return moment.replace(tzinfo=moment.tzinfo or dt.timezone.utc) if moment is not None else None


def flavor_names(view: WorkloadView) -> list[str]:
    """The ResourceFlavors the admission names, each once, in order."""
    return list(dict.fromkeys(f for a in view.assignments for f in a.flavors.values()))


# --- placement (jobframework's RunWithPodSetsInfo) -----------------------------------------------


@dataclass(frozen=True)
class PodSetPlacement:
    """What the admission puts on the pods of one pod set: its flavors' node labels (into nodeSelector)
    and tolerations, and the labels Kueue's integrations give admitted pods."""
    name: str
    flavors: Mapping[str, str]
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    labels: Mapping[str, str]

    def as_status(self) -> dict[str, Any]:
        return {"name": self.name, "flavors": dict(self.flavors), "nodeSelector": dict(self.node_selector),
                "tolerations": [dict(t) for t in self.tolerations]}


class PlacementError(ValueError):
    """The admission cannot be applied to the pods (a flavor missing, a node label the job sets otherwise)."""


def placement(job: Job, view: WorkloadView, flavors: Mapping[str, Mapping[str, Any] | None]
              ) -> tuple[PodSetPlacement, ...]:
    """The admission's placement per pod set, from the ResourceFlavors it names (``flavors``: name -> the
    flavor as read, None when it does not exist). As podset.FromAssignment and Merge: node labels join the
    pods' nodeSelector (a key the job sets to another value is a conflict), tolerations are appended
    once each."""
    out = []
    for assignment in view.assignments:
        selector: dict[str, str] = {}
        tolerations: list[Mapping[str, Any]] = []
        for name in dict.fromkeys(assignment.flavors.values()):
            flavor = flavors.get(name)
            if flavor is None:
                raise PlacementError(f"ResourceFlavor {name}, which Kueue admitted the job with, does not exist")
            spec = flavor.get("spec") or {}
            selector.update({str(k): str(v) for k, v in (spec.get("nodeLabels") or {}).items()})
            tolerations += [t for t in spec.get("tolerations") or () if t not in tolerations]
        for key, value in selector.items():
            own = job.spec.pod_template.node_selector.get(key)
            if own is not None and own != value:
                raise PlacementError(f"spec.podTemplate.nodeSelector {key}={own} conflicts with {key}={value} of "
                                     f"the flavor Kueue admitted pod set {assignment.name} with")
        out.append(PodSetPlacement(assignment.name, dict(assignment.flavors), selector, tuple(tolerations),
                                   _pod_labels(job, view, assignment.name)))
    return tuple(out)


def _pod_labels(job: Job, view: WorkloadView, podset: str) -> dict[str, str]:
    """The labels jobframework gives an admitted pod: its pod set, its LocalQueue, and its ClusterQueue
    where that name is a DNS label (a label value must be; Kueue leaves it out otherwise too)."""
    labels = {C.LABEL_KUEUE_PODSET: podset}
    if job.meta.queue:
        labels[C.LABEL_KUEUE_LOCAL_QUEUE] = job.meta.queue
    if view.cluster_queue and _DNS1123_LABEL.fullmatch(view.cluster_queue):
        labels[C.LABEL_KUEUE_CLUSTER_QUEUE] = view.cluster_queue
    return labels


def recorded_placement(job: Job, queue: Any, view: WorkloadView) -> tuple[PodSetPlacement, ...] | None:
    """The placement status.queue records, when it is this admission's (same ClusterQueue and flavors
    per pod set): gang restarts under one admission reuse it instead of reading the flavors again."""
    if not isinstance(queue, Mapping) or queue.get("workload") != view.name:
        return None
    if queue.get("clusterQueue") != view.cluster_queue or not view.admitted:
        return None
    recorded = queue.get("podSets")
    if not isinstance(recorded, list) or not all(isinstance(p, Mapping) for p in recorded):
        return None
    if [(p.get("name"), p.get("flavors")) for p in recorded] != [(a.name, dict(a.flavors)) for a in view.assignments]:
        return None
    return tuple(PodSetPlacement(str(p["name"]), dict(p.get("flavors") or {}), dict(p.get("nodeSelector") or {}),
                                 tuple(p.get("tolerations") or ()), _pod_labels(job, view, str(p["name"])))
                 for p in recorded)


@dataclass(frozen=True)
class QueueObserved:
    """What observe read for a job that names a queue, where Kueue is installed."""
    workload: WorkloadView | None = None
    # Resolved only while the job has no Workload (what a new one is created with).
    priority: Priority | None = None
    # The admission's placement, read from its flavors when status.queue does not record it yet.
    placement: tuple[PodSetPlacement, ...] | None = None
    # Why the job's Workload cannot be made or used: (reason, message).
    problem: tuple[str, str] | None = None
