"""One reconcile of one job: observe -> decide -> write status -> act. Synchronous, in a worker thread.

Order matters for crash safety: the status (new attempt, restart count, terminal phase) is written
before pods are deleted, so an operator that dies in between finds the old pods stale on its next
pass instead of mistaking them for a new failure; pods are created only after their ConfigMap,
Service, claim and the relay's RBAC exist. A job's first gang is the exception: it has no earlier
gang to mistake, so its status is first written once its pods exist (derived from them), a write less.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from . import constants as C
from . import render
from .config import OperatorConfig
from .kube import ApiError, Kube, NotOwned
from .spec import Job, parse_or_error, pod_name
from .status import (CreatePods, Decision, DeleteJob, DeletePods, EventNote, Observed, StallPolicy,
                     creation_failed, decide)

log = logging.getLogger(__name__)

# Statuses with which the API server refuses a create for good until something changes (bad request,
# forbidden: e.g. quota exceeded, invalid): worth a condition, unlike a transient 5xx.
REFUSALS = frozenset({400, 403, 422})


@dataclass(frozen=True)
class Outcome:
    gone: bool
    requeue_after: float | None = None
    events: tuple[EventNote, ...] = ()
    body: Mapping[str, Any] | None = field(default=None, compare=False)
    decision: Decision | None = field(default=None, compare=False)
    # An action that failed after the status was written: the events are still worth posting, and
    # the caller retries the pass (everything here is idempotent).
    error: Exception | None = field(default=None, compare=False)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def observe(kube: Kube, job: Job | None, body: Mapping[str, Any], namespace: str, name: str) -> Observed:
    pods = kube.pod_views(namespace, name)
    modes: tuple[str, ...] | None = None
    phase = (body.get("status") or {}).get("phase")
    if job is not None and job.spec.nodes > 1 and phase not in C.TERMINAL_PHASES:
        template = job.spec.output.volume_claim_template
        if template is not None:
            modes = template.access_modes
        else:
            modes = kube.claim_access_modes(namespace, job.spec.output.claim(name))
    return Observed(pods=pods, claim_access_modes=modes)


def reconcile(kube: Kube, config: OperatorConfig, namespace: str, name: str,
              now: Callable[[], dt.datetime] = _utcnow) -> Outcome:
    body = kube.get_job(namespace, name)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        # Deleted: garbage collection removes the children through their owner references.
        return Outcome(gone=True)
    meta = body.get("metadata") or {}
    job, error = parse_or_error(body)
    status = body.get("status") or {}
    decision = decide(job, status, observe(kube, job, body, namespace, name), now(),
                      generation=meta.get("generation"), spec_error=error,
                      stall=StallPolicy(factor=config.stall_factor, min_seconds=config.stall_min_seconds))
    patch = decision.status_patch(status)
    creates = job is not None and any(isinstance(a, CreatePods) for a in decision.actions)
    children_ready = False
    # A job's first gang needs no record before its pods: an operator that dies before the next write
    # finds pods of attempt 0 and derives the same status from them (no restart to double-count). The
    # pass the new pods' events trigger writes it, often already Running: a status write less per job.
    deferred = creates and status.get("attempt") is None
    if patch and not deferred:
        log.debug("%s/%s: status patch %s", namespace, name, sorted(patch))
        if creates:
            assert job is not None
            # The job's other children are create-if-absent and harmless before the status records the
            # new attempt; only its pods must follow that record. Written together: a round trip less.
            _, children_ready = kube.all([lambda: kube.patch_job_status(namespace, name, patch),
                                          lambda: _children_created(kube, job)])
        else:
            kube.patch_job_status(namespace, name, patch)
    events = list(decision.events)
    if job is not None and status.get("observedGeneration") != job.meta.generation:
        events.extend(EventNote("Warning", "SpecWarning", w) for w in job.spec.warnings)
    error: Exception | None = None
    try:
        if job is not None:
            try:
                events.extend(apply_actions(kube, config, job, decision, children_ready))
            except ApiError as exc:
                if exc.status not in REFUSALS and not isinstance(exc, NotOwned):
                    raise
                # The API server refuses what we create (quota, admission, an invalid podTemplate):
                # say so in the status, then retry with backoff like any failed pass.
                message = f"the API server refused to create the job's objects: {exc}"
                refusal = creation_failed({**status, **decision.status}, message, now(), job.meta.generation)
                kube.patch_job_status(namespace, name, {**patch, **refusal} if deferred else refusal)
                events.append(EventNote("Warning", C.Reason.POD_CREATION_FAILED, message))
                raise
        else:
            for action in decision.actions:
                if isinstance(action, DeletePods):
                    for pod, uid in action.pods:
                        kube.delete_pod(namespace, pod, uid)
    except Exception as exc:  # noqa: BLE001 - reported by the caller, which retries the whole pass
        error = exc
    return Outcome(gone=False, requeue_after=decision.requeue_after, events=tuple(events), body=body,
                   decision=decision, error=error)


def ensure_children(kube: Kube, job: Job) -> None:
    """All children but the pods, created together (none of them needs another to exist first)."""
    def ensure(manifest: dict[str, Any]) -> Callable[[], Any]:
        if manifest["kind"] == "ConfigMap":
            return lambda: kube.ensure_config_map(manifest)
        if manifest["kind"] == "PersistentVolumeClaim":
            return lambda: kube.ensure_claim(manifest)
        return lambda: kube.create(manifest)

    kube.all([ensure(m) for m in render.render_children(job)])


def _children_created(kube: Kube, job: Job) -> bool:
    """ensure_children, where a refusal is left for apply_actions to meet again and report."""
    try:
        ensure_children(kube, job)
        return True
    except ApiError as exc:
        log.debug("%s/%s: children refused before the status write: %s", job.meta.namespace, job.meta.name, exc)
        return False


def apply_actions(kube: Kube, config: OperatorConfig, job: Job, decision: Decision,
                  children_ready: bool = False) -> list[EventNote]:
    events: list[EventNote] = []
    ns, name = job.meta.namespace, job.meta.name
    for action in decision.actions:
        if isinstance(action, DeletePods):
            kube.all([lambda pod=pod, uid=uid: kube.delete_pod(ns, pod, uid) for pod, uid in action.pods])
        elif isinstance(action, CreatePods):
            if not children_ready:  # before any pod: pods mount the ConfigMap and claim, rank 0 uses the SA
                ensure_children(kube, job)
            manifests = [render.render_pod(job, rank, action.attempt, config, action.resume_from)
                         for rank in action.ranks]
            created = kube.all([lambda m=m: kube.create(m) for m in manifests])
            for rank, was_created in zip(action.ranks, created):
                if was_created:
                    continue
                existing = kube.get("v1", "Pod", ns, pod_name(name, rank))
                owners = [r.get("uid") for r in ((existing or {}).get("metadata") or {}).get("ownerReferences") or []]
                if existing is not None and job.meta.uid not in owners:
                    events.append(EventNote("Warning", C.Reason.POD_NAME_CONFLICT,
                                            f"pod {pod_name(name, rank)} exists and is not owned by this job"))
        elif isinstance(action, DeleteJob):
            kube.delete_job(ns, name, job.meta.uid)
    return events
