"""One pass of one job, shaped like the status machine it serves: observe (a snapshot) -> apply the
children the decision needs -> `decide`, fed what they came to -> at most one status write -> the
deletions that follow the record. Synchronous, in a worker thread.

Crash safety sets the order. What a status records (a new attempt, a restart, a resumption, a
terminal phase) is written before pods are deleted or a new gang is created, so an operator that dies
in between finds the old pods stale on its next pass instead of mistaking them for a new failure. So
a pass whose decision has something new to record writes it first: the job's other children go in
the same round trip, the pods after it, and what they came to, should it change the record (a
refusal), is recorded by the next pass, which then comes at once. Every other pass creates first and
records what its creates came to: a job's first gang (an operator that dies in between derives the
same status from its pods, and the record waits for them: see status.Outcomes) and a pass with
nothing new to record (a retry after a refusal).

The children (render.render_children: the relay's ServiceAccount, Role and RoleBinding, the trainer's
ServiceAccount or the relay's token Secret, the claim, the NetworkPolicy and the Service) all exist,
and are the job's, before any pod of a gang is created: a child whose name is taken by an object the
job does not control must stop the gang before a rank runs beside it (a foreign Service could answer
for the master's address, a foreign binding decides what the relay may do). A new job's first pass
makes them in the round trip that observes its pods; every later gang ensures them again. Every create
is create-if-absent; one the API server refuses (a quota, admission, a name taken by an object the job
does not control) is recorded as Created=False, and the pass is retried with backoff until it gets
through.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from . import constants as C
from . import kueue, render
from .config import OperatorConfig
from .expectations import Expectations
from .kube import ApiError, Kube, NotOwned, StaleWrite
from .podview import observe_pod
from .spec import Job, applied_job, parse_or_error, pod_name
from .status import (PROGRESS_HOLD_SECONDS, ClearAdmission, CreatePods, CreateWorkload, Decision, DeleteJob, DeletePods,
                     EventNote, FinishWorkload, Observed, Outcomes, SetPodsReady, StallPolicy, decide, transition)

log = logging.getLogger(__name__)

# Statuses with which the API server refuses a create for good until something changes (bad request,
# forbidden: e.g. quota exceeded, invalid): worth a condition, unlike a transient 5xx.
REFUSALS = frozenset({400, 403, 422})
# The status fields every status write is conditional on (see Kube.patch_job_status).
FENCE = ("attempt", "restarts")


@dataclass(frozen=True)
class Outcome:
    gone: bool
    requeue_after: float | None = None
    events: tuple[EventNote, ...] = ()
    body: Mapping[str, Any] | None = field(default=None, compare=False)
    decision: Decision | None = field(default=None, compare=False)
    # A refusal on record, or a call that failed: the caller posts the events all the same and retries
    # the pass with backoff (everything here is idempotent).
    error: Exception | None = field(default=None, compare=False)


@dataclass
class Made:
    """What a pass's creates came to."""
    refusal: ApiError | None = None  # the first one the API server refused
    others: bool = False  # the job's children other than its pods all exist
    gang: bool = False  # the job's first gang was created
    events: list[EventNote] = field(default_factory=list)

    def outcomes(self, remembered: Outcomes) -> Outcomes:
        return replace(remembered, refusal=None if self.refusal is None else str(self.refusal),
                       not_owned=isinstance(self.refusal, NotOwned), gang_created=self.gang)


@dataclass(frozen=True)
class Snapshot:
    """What a pass starts from: the job as read (`job`: as last applied when `spec_error` refuses an
    edit), its pods (seen or expected) and claim, what the controller remembers of its own writes, and
    what a new job's other children, made in the round trip that observed it, came to (`early`)."""
    namespace: str
    name: str
    body: Mapping[str, Any]
    job: Job | None
    spec_error: str | None
    observed: Observed
    remembered: Outcomes
    early: Made | None

    @property
    def status(self) -> Mapping[str, Any]:
        return self.body.get("status") or {}


@dataclass(frozen=True)
class Children:
    """What a stage of a pass creates (see the module docstring)."""
    pods: CreatePods | None = None
    first_gang: bool = False  # the pods are the job's first gang
    others: bool = False  # the job's children other than its pods, to ensure before them (not made while observing)
    workload: bool = False  # the job's Kueue Workload (never with pods: they wait for its admission)

    @classmethod
    def needed(cls, snap: Snapshot, plan: Decision) -> "Children":
        if snap.job is None:
            return cls()
        pods = next((a for a in plan.actions if isinstance(a, CreatePods)), None)
        first_gang = pods is not None and snap.status.get("attempt") is None
        return cls(pods=pods, first_gang=first_gang, others=pods is not None and snap.early is None,
                   workload=any(isinstance(a, CreateWorkload) for a in plan.actions))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def reconcile(kube: Kube, config: OperatorConfig, expectations: Expectations, namespace: str, name: str,
              now: Callable[[], dt.datetime] = _utcnow) -> Outcome:
    body = kube.get_job(namespace, name)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        # Deleted: garbage collection removes the children through their owner references.
        expectations.forget(namespace, name)
        return Outcome(gone=True)
    snap = observe(kube, config, expectations, body, namespace, name)
    at = now()
    status, remembered = snap.status, snap.remembered
    plan = _decide(snap, config, at, remembered)
    children = Children.needed(snap, plan)
    # A first gang and a pass with nothing new to record create before they record; any other record
    # goes first, with its children in the round trip of the write or after it.
    first = bool(plan.record(status)) and not children.first_gang
    decision, made, later, requeue_after = plan, Made(), Made(), plan.requeue_after
    failure: Exception | None = None
    noted = True  # the decision's events go with its record
    try:
        made = apply(kube, expectations, config, snap, Children() if first else children)
        outcomes = made.outcomes(remembered)
        decision = plan if outcomes == remembered else _decide(snap, config, at, outcomes)
        requeue_after = decision.requeue_after
        record = decision.record(status)
        later = apply(kube, expectations, config, snap, children if first else Children(), record)
        line = transition(status, record) if record else None
        if line:
            log.info("%s/%s: %s", namespace, name, line)
        if decision.phase in C.TERMINAL_PHASES:
            expectations.finished(namespace, name)
        elif record or made.gang:
            expectations.wrote(namespace, name)
        after = later.outcomes(remembered)
        if after != remembered and _decide(snap, config, at, after).record({**status, **record}):
            # What came after the record (a refusal): the next pass's, at once.
            requeue_after, later.refusal = 0.0, None
        act(kube, expectations, snap, decision)
    except StaleWrite as exc:
        # Another writer moved the job on since it was read (nothing of this pass's record was written, and
        # the deletions that follow a record were not made): read it again and decide anew, at once.
        log.info("%s/%s: %s; deciding again", namespace, name, exc.message)
        requeue_after, noted = 0.0, False
    except Exception as exc:  # noqa: BLE001 - reported by the caller, which retries the whole pass
        failure = exc
    return Outcome(gone=False, requeue_after=requeue_after,
                   events=(*(decision.events if noted else ()), *made.events, *later.events),
                   body=body, decision=decision, error=failure or made.refusal or later.refusal)


def _decide(snap: Snapshot, config: OperatorConfig, at: dt.datetime, outcomes: Outcomes) -> Decision:
    return decide(snap.job, snap.status, snap.observed, at,
                  generation=(snap.body.get("metadata") or {}).get("generation"), spec_error=snap.spec_error,
                  spec=snap.body.get("spec"),
                  stall=StallPolicy(factor=config.stall_factor, min_seconds=config.stall_min_seconds),
                  outcomes=outcomes, hold_seconds=PROGRESS_HOLD_SECONDS)


def _write(kube: Kube, snap: Snapshot, patch: Mapping[str, Any]) -> None:
    log.debug("%s/%s: status patch %s", snap.namespace, snap.name, sorted(patch))
    # Fenced on what the decision started from: the attempt and restart count only move forwards.
    kube.patch_job_status(snap.namespace, snap.name, patch, fence={key: snap.status.get(key) for key in FENCE})


def observe(kube: Kube, config: OperatorConfig, expectations: Expectations, body: Mapping[str, Any],
            namespace: str, name: str) -> Snapshot:
    job, error = parse_or_error(body)
    if error is not None:
        job = applied_job(body)  # an invalid edit: the job goes on with the spec last applied, if any
    status = body.get("status") or {}
    # A new job's first pass creates its gang: what its pods need at creation (create-if-absent, and
    # harmless should the decision not create them) is made in the round trip that observes its pods.
    # Not for a job that names a queue: its gang waits for Kueue, and until then it holds nothing (a claim).
    early = (_create_others(kube, config, job)
             if job is not None and status.get("attempt") is None and not job.spec.run_policy.suspend
             and job.meta.queue is None and expectations.awaits_pods(namespace, name) else [])
    observed, *results = kube.all([lambda: _observe(kube, expectations, job, status, namespace, name), *early])
    refusal = _refused(results)
    remembered = Outcomes(since_write=expectations.since_write(namespace, name))
    return Snapshot(namespace, name, body, job, error, observed, remembered,
                    Made(refusal=refusal, others=refusal is None) if early else None)


def _observe(kube: Kube, expectations: Expectations, job: Job | None, status: Mapping[str, Any], namespace: str,
             name: str) -> Observed:
    pods = expectations.pods(namespace, name, kube.pod_views(namespace, name))
    modes: tuple[str, ...] | None = None
    # The claim's access modes only matter to a status record: none is written before the job's pods exist.
    # (A new job reads as the CRD's default status, phase Pending: what counts is a recorded attempt.)
    if (job is not None and job.spec.nodes > 1 and (status.get("attempt") is not None or pods)
            and status.get("phase") not in C.TERMINAL_PHASES):
        template = job.spec.output.volume_claim_template
        if template is not None:
            modes = template.access_modes
        else:
            modes = kube.claim_access_modes(namespace, job.spec.output.claim(name))
    # Only a job that names a queue asks whether Kueue is there (one cached discovery answer for all): an
    # active one, and a finished one until its Workload is marked finished.
    queue = status.get("queue")
    unfinished = isinstance(queue, Mapping) and bool(queue.get("workload")) and not queue.get("finished")
    installed = (kube.serves(C.KUEUE_API) if job is not None and job.meta.queue is not None
                 and (status.get("phase") not in C.TERMINAL_PHASES or unfinished) else None)
    return Observed(pods=pods, claim_access_modes=modes, kueue_installed=installed,
                    queue=_observe_queue(kube, job, status) if installed and job is not None else None)


def _observe_queue(kube: Kube, job: Job, status: Mapping[str, Any]) -> kueue.QueueObserved:
    """The job's Workload; while it has none, the priority to create it with; once it is admitted, the
    flavors' placement unless status.queue records this admission's."""
    body = kube.get(C.KUEUE_API, "Workload", job.meta.namespace, kueue.workload_name(job))
    if body is None:
        return kueue.QueueObserved() if status.get("phase") in C.TERMINAL_PHASES else _priority(kube, job)
    view = kueue.observe_workload(body)
    if view.owner_uid != job.meta.uid:
        return kueue.QueueObserved(problem=(C.Reason.WORKLOAD_NOT_OWNED, f"Workload {view.name} exists and is not "
                                            "controlled by this job; delete it or rename the job"))
    if not view.admitted or kueue.recorded_placement(job, status.get("queue"), view) is not None:
        return kueue.QueueObserved(workload=view)
    flavors = {name: kube.get_cluster(C.KUEUE_API, "ResourceFlavor", name) for name in kueue.flavor_names(view)}
    try:
        return kueue.QueueObserved(workload=view, placement=kueue.placement(job, view, flavors))
    except kueue.PlacementError as exc:
        return kueue.QueueObserved(workload=view, problem=(C.Reason.PLACEMENT_FAILED, str(exc)))


def _priority(kube: Kube, job: Job) -> kueue.QueueObserved:
    """The priority of the job's new Workload, read as jobframework reads it (kueue.priority_source)."""
    source = kueue.priority_source(job)
    if source is None:
        return kueue.QueueObserved(priority=kueue.default_priority(
            kube.list_cluster(kueue.PRIORITY_CLASS_API[kueue.POD_PRIORITY_CLASS], "PriorityClass")))
    group_kind, name = source
    obj = kube.get_cluster(kueue.PRIORITY_CLASS_API[group_kind], group_kind[1], name)
    if obj is None:
        where = (f"label {C.LABEL_KUEUE_PRIORITY_CLASS}" if group_kind == kueue.WORKLOAD_PRIORITY_CLASS
                 else "spec.podTemplate.priorityClassName")
        return kueue.QueueObserved(problem=(C.Reason.PRIORITY_CLASS_NOT_FOUND,
                                            f"{where}: {group_kind[1]} {name} does not exist; the job's Workload is "
                                            "created once it does"))
    return kueue.QueueObserved(priority=kueue.priority_of(group_kind, obj))


def apply(kube: Kube, expectations: Expectations, config: OperatorConfig, snap: Snapshot, children: Children,
          record: Mapping[str, Any] | None = None) -> Made:
    """Create `children` and write `record`, the pass's one status write: the record and the job's other
    children in one round trip, then the pods unless one of those children is missing or not the job's.
    Each is one flat call in its round trip (Kube.all inside Kube.all could exhaust its threads); a
    refusal comes back as the call's result."""
    job = snap.job
    writes = [lambda: _write(kube, snap, record)] if record else []
    others = _create_others(kube, config, job) if job is not None and children.others else []
    workload = _create_workload(kube, config, snap) if job is not None and children.workload else []
    results = kube.all([*writes, *others, *workload])[len(writes):]
    early = snap.early if children.pods is not None else None
    made = Made(refusal=(early.refusal if early else None) or _refused(results),
                others=early.others if early else _made(others, results[:len(others)]))
    if job is not None and workload and results[-1] is True:
        made.events.append(EventNote("Normal", C.Reason.CREATED_WORKLOAD, f"created Workload "
                                     f"{kueue.workload_name(job)} in LocalQueue {job.meta.queue}"))
    if job is not None and children.pods is not None and made.others:
        _create_pods(kube, expectations, config, job, children, children.pods, made)
    return made


def _create_pods(kube: Kube, expectations: Expectations, config: OperatorConfig, job: Job, children: Children,
                 action: CreatePods, made: Made) -> None:
    ns, name = job.meta.namespace, job.meta.name
    placement = {p.name: p for p in action.placement}
    manifests = [render.render_pod(job, rank, action.attempt, config, action.resume_from,
                                   placement.get(kueue.podset_of(rank))) for rank in action.ranks]
    pods = kube.all([_refusable(lambda m=m: kube.create(m)) for m in manifests])
    expectations.created(ns, name, [observe_pod(p) for p in pods if isinstance(p, Mapping)])
    made.refusal = made.refusal or _refused(pods)
    made.gang = children.first_gang and _refused(pods) is None
    for rank, result in zip(action.ranks, pods):
        if result is not None:
            continue
        existing = kube.get("v1", "Pod", ns, pod_name(name, rank))
        owners = [r.get("uid") for r in ((existing or {}).get("metadata") or {}).get("ownerReferences") or []]
        if existing is not None and job.meta.uid not in owners:
            made.events.append(EventNote("Warning", C.Reason.POD_NAME_CONFLICT,
                                         f"pod {pod_name(name, rank)} exists and is not owned by this job"))


def act(kube: Kube, expectations: Expectations, snap: Snapshot, decision: Decision) -> None:
    """The decision's deletions and Workload status writes, which follow its record."""
    job, namespace, name = snap.job, snap.namespace, snap.name
    # The Workload's status writes are conditional on this pass's read of it (stale: 409, the pass again).
    workload = snap.observed.queue.workload if snap.observed.queue is not None else None

    def read(name: str) -> Mapping[str, Any] | None:
        return workload.read if workload is not None and workload.name == name else None

    for action in decision.actions:
        if isinstance(action, DeletePods):
            done = kube.all([lambda pod=pod, uid=uid: kube.delete_pod(namespace, pod, uid) for pod, uid in action.pods])
            expectations.deleted(namespace, name, [uid for (_, uid), deleted in zip(action.pods, done) if deleted])
        elif isinstance(action, DeleteJob) and job is not None:
            kube.delete_job(namespace, name, job.meta.uid)
        elif isinstance(action, FinishWorkload):
            kube.finish_workload(namespace, action.workload, action.reason, action.message, read(action.workload))
        elif isinstance(action, ClearAdmission):
            kube.clear_admission(namespace, action.workload, read(action.workload))
        elif isinstance(action, SetPodsReady):
            kube.set_pods_ready(namespace, action.workload, action.ready, read(action.workload))


def _create_workload(kube: Kube, config: OperatorConfig, snap: Snapshot) -> list[Callable[[], Any]]:
    """Create-if-absent of the job's Workload (owner checked, as the other children), as a refusable call:
    its result is True when this call created it."""
    job, queue = snap.job, snap.observed.queue
    assert job is not None and queue is not None and queue.priority is not None  # decide asks only then
    manifest = render.render_workload(job, config, queue.priority)
    return [_refusable(lambda: kube.ensure(manifest))]


def _create_others(kube: Kube, config: OperatorConfig, job: Job) -> list[Callable[[], Any]]:
    """Create-if-absent of the job's children but its pods, as refusable calls for Kube.all. A child that
    needs another goes in that one's call, after it: the relay's token Secret after its ServiceAccount
    (the token controller deletes a token Secret whose account it cannot find), the RoleBinding after
    the Role it binds (without the `bind` verb the operator binds only a Role that exists: the API
    server checks that the operator holds what the Role grants)."""
    calls: dict[tuple[str, str], Callable[[], Any]] = {}
    for manifest in render.render_children(job, config):
        # A Secret in the way cannot be checked: the operator may not read Secrets. The token Secret is
        # mounted only into the relay's container, which writes nothing but this job's status with it.
        ensure = kube.create if manifest["kind"] == "Secret" else kube.ensure
        call = _refusable(lambda m=manifest, ensure=ensure: ensure(m))
        needs = _needs(manifest)
        if needs is None:
            calls[(manifest["kind"], manifest["metadata"]["name"])] = call
        else:
            calls[needs] = _then(calls[needs], call)
    return list(calls.values())


def _needs(manifest: Mapping[str, Any]) -> tuple[str, str] | None:
    """The child (kind, name) that `manifest` must follow, if any."""
    if manifest.get("type") == C.SERVICE_ACCOUNT_TOKEN_TYPE:
        return "ServiceAccount", manifest["metadata"]["annotations"][C.ANNOTATION_SERVICE_ACCOUNT_NAME]
    if manifest["kind"] == "RoleBinding":
        return manifest["roleRef"]["kind"], manifest["roleRef"]["name"]
    return None


def _then(first: Callable[[], Any], second: Callable[[], Any]) -> Callable[[], Any]:
    """`first`, then `second` unless the API server refused `first` (the result is that refusal)."""
    def both() -> Any:
        result = first()
        return result if isinstance(result, ApiError) else second()
    return both


def _refused(results: list[Any]) -> ApiError | None:
    return next((r for r in results if isinstance(r, ApiError)), None)


def _made(calls: list[Callable[[], Any]], results: list[Any]) -> bool:
    """Whether there were such calls and none was refused."""
    return bool(calls) and _refused(results) is None


def _refusal(exc: Exception) -> bool:
    """The API server refuses the create for good until something changes (quota, admission, a name
    taken by an object the job does not control), unlike a transient error."""
    return isinstance(exc, NotOwned) or (isinstance(exc, ApiError) and exc.status in REFUSALS)


def _refusable(call: Callable[[], Any]) -> Callable[[], Any]:
    """`call`, returning the API server's refusal instead of raising it (other errors are raised)."""
    def refusable() -> Any:
        try:
            return call()
        except ApiError as exc:
            if not _refusal(exc):
                raise
            return exc
    return refusable
