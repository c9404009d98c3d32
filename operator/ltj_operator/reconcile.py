"""One reconcile of one job: observe -> decide -> write status -> act. Synchronous, in a worker thread.

Order matters for crash safety: the status (new attempt, restart count, terminal phase) is written
before pods are deleted or a new gang is created, so an operator that dies in between finds the old
pods stale on its next pass instead of mistaking them for a new failure. A job's first gang is the
exception: it has no earlier gang to mistake, so its status is first written once its pods exist
(derived from them), a write less. Pods are created once what they need at creation exists (the
relay's ServiceAccount and Role, the claim); a new job's first pass makes those while it observes
its pods, in the same round trip. The Service and the relay's RoleBinding are not needed
before the containers run: they go with the status write that records the gang as launched (the pass
its pods' events trigger), in the same round trip, so a pass that creates pods writes only what the
pods need. Every pass of a launched gang makes sure of them until this process has created them; a
refusal (a quota, say) is reported as Created=False until they get through.
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
from .status import (PROGRESS_HOLD_SECONDS, CreatePods, Decision, DeleteJob, DeletePods, EventNote, Observed,
                     StallPolicy, creation_failed, creation_recovered, decide, first_record_pending,
                     progress_only)

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
    status = body.get("status") or {}
    # The claim's access modes only matter to a status record: none is written before the job's pods exist.
    if job is not None and job.spec.nodes > 1 and (status or pods) and status.get("phase") not in C.TERMINAL_PHASES:
        template = job.spec.output.volume_claim_template
        if template is not None:
            modes = template.access_modes
        else:
            modes = kube.claim_access_modes(namespace, job.spec.output.claim(name))
    return Observed(pods=pods, claim_access_modes=modes)


def _refusal(exc: Exception) -> bool:
    """The API server refuses the create for good until something changes (quota, admission, a name
    taken by an object the job does not control), unlike a transient error."""
    return isinstance(exc, NotOwned) or (isinstance(exc, ApiError) and exc.status in REFUSALS)


def reconcile(kube: Kube, config: OperatorConfig, namespace: str, name: str,
              now: Callable[[], dt.datetime] = _utcnow) -> Outcome:
    body = kube.get_job(namespace, name)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        # Deleted: garbage collection removes the children through their owner references.
        return Outcome(gone=True)
    meta = body.get("metadata") or {}
    job, error = parse_or_error(body)
    status = body.get("status") or {}
    # A new job's first pass creates its gang: what its pods need at creation (create-if-absent, and
    # harmless should the decision not create them) is made in the round trip that observes its pods.
    early = (_prerequisites(kube, job)
             if job is not None and status.get("attempt") is None and not job.spec.run_policy.suspend
             and kube.awaits_pods(namespace, name) else [])
    observed, *early_results = kube.all([lambda: observe(kube, job, body, namespace, name), *early])
    decision = decide(job, status, observed, now(),
                      generation=meta.get("generation"), spec_error=error,
                      stall=StallPolicy(factor=config.stall_factor, min_seconds=config.stall_min_seconds))
    patch = decision.status_patch(status)
    events = list(decision.events)
    if job is None:
        if patch:
            kube.patch_job_status(namespace, name, patch)
        return Outcome(gone=False, requeue_after=decision.requeue_after, events=tuple(events), body=body,
                       decision=decision, error=_delete_pods(kube, namespace, decision))
    if status.get("observedGeneration") != job.meta.generation:
        events.extend(EventNote("Warning", "SpecWarning", w) for w in job.spec.warnings)

    creates = any(isinstance(a, CreatePods) for a in decision.actions)
    # A job's first gang needs no record before its pods: an operator that dies before the next write
    # finds pods of attempt 0 and derives the same status from them (no restart to double-count). The
    # pass the new pods' events trigger writes it, often already Running: a status write less per job.
    deferred = creates and status.get("attempt") is None
    write = bool(patch) and not deferred
    # Progress right after our last write waits (status.PROGRESS_HOLD_SECONDS): the next pod's event or
    # this requeue writes it, so a gang coming up writes Running without a write queued ahead of it. So
    # does the deferred first record of a gang just created while it only says Pending.
    requeue_after = decision.requeue_after
    holdable = (write and not creates and not decision.events
                and (progress_only(status, patch) or first_record_pending(status, patch)))
    since = kube.since_status_write(namespace, name) if holdable else None
    if since is not None and since < PROGRESS_HOLD_SECONDS:
        write = False
        left = PROGRESS_HOLD_SECONDS - since
        requeue_after = left if requeue_after is None else min(requeue_after, left)
    # Independent calls go in one round trip: the status write, the pods' prerequisites (create-if-absent
    # and harmless before the status records a new attempt; only the pods must follow that record), and
    # the companions of a launched gang that this process has not made sure of yet.
    # Each is one flat call (Kube.all inside Kube.all could exhaust its threads); a refusal comes back
    # as the call's result: a prerequisite's is left for apply_actions to meet again and report.
    writes: list[Callable[[], Any]] = []
    if write:
        log.debug("%s/%s: status patch %s", namespace, name, sorted(patch))
        writes.append(lambda: kube.patch_job_status(namespace, name, patch))
    prerequisites = _prerequisites(kube, job) if write and creates else []
    companions_due = (decision.status.get("launchedAttempt") is not None
                      and decision.status.get("phase") not in C.TERMINAL_PHASES
                      and not kube.companions_created(namespace, name, job.meta.uid))
    companions = _companions(kube, job) if companions_due else []
    results = kube.all([*writes, *prerequisites, *companions])[len(writes):]
    refusals = [r if isinstance(r, ApiError) else None for r in results]
    prerequisites_ready = _all_made(prerequisites, results) or _all_made(early, early_results)
    refused = next((r for r in refusals[len(prerequisites):] if r is not None), None)
    if companions and refused is None:
        kube.put_companions_created(namespace, name, job.meta.uid)
    written = {**status, **patch} if write else status
    if refused is not None:
        # Reported until they exist (each pass tries again); the gang itself carries on.
        refusal = creation_failed(written, _refusal_message(refused), now(), job.meta.generation)
        if refusal["conditions"] != written.get("conditions"):
            kube.patch_job_status(namespace, name, refusal)
        events.append(_refusal_event(refused))
    elif companions_due:
        recovered = creation_recovered(written, now(), job.meta.generation)
        if recovered is not None:
            kube.patch_job_status(namespace, name, recovered)
    failure: Exception | None = None
    try:
        try:
            # Unless other new jobs wait for their pods (which come first in a burst), the first gang's
            # companions go with its pods: the pass its pods' events start then has nothing to wait for
            # and writes Running as soon as the gang runs (a refused one is met again there and reported).
            with_pods = (_companions(kube, job)
                         if deferred and not kube.companions_created(namespace, name, job.meta.uid)
                         and not kube.others_await_pods(namespace, name) else [])
            events.extend(apply_actions(kube, config, job, decision, prerequisites_ready, with_pods))
            if deferred:
                kube.note_first_gang_created(namespace, name)
        except ApiError as exc:
            if not _refusal(exc):
                raise
            # Say so in the status, then retry with backoff like any failed pass.
            refusal = creation_failed({**status, **decision.status}, _refusal_message(exc), now(),
                                      job.meta.generation)
            kube.patch_job_status(namespace, name, {**patch, **refusal} if deferred else refusal)
            events.append(_refusal_event(exc))
            raise
    except Exception as exc:  # noqa: BLE001 - reported by the caller, which retries the whole pass
        failure = exc
    return Outcome(gone=False, requeue_after=requeue_after, events=tuple(events), body=body,
                   decision=decision, error=failure or refused)


def _refusal_message(exc: ApiError) -> str:
    return f"the API server refused to create the job's objects: {exc}"


def _refusal_event(exc: ApiError) -> EventNote:
    return EventNote("Warning", C.Reason.POD_CREATION_FAILED, _refusal_message(exc))


def _delete_pods(kube: Kube, namespace: str, decision: Decision) -> Exception | None:
    """The deletions of a pass without a parsed spec (its pods are cleaned up all the same)."""
    try:
        for action in decision.actions:
            if isinstance(action, DeletePods):
                for pod, uid in action.pods:
                    kube.delete_pod(namespace, pod, uid)
    except Exception as exc:  # noqa: BLE001 - reported by the caller, which retries the whole pass
        return exc
    return None


def _ensure(kube: Kube, manifest: dict[str, Any]) -> Callable[[], Any]:
    """Create-if-absent of one child, as a call for Kube.all."""
    if manifest["kind"] == "PersistentVolumeClaim":
        return lambda: kube.ensure_claim(manifest)
    return lambda: kube.create(manifest)


def _create_prerequisites(kube: Kube, job: Job) -> None:
    kube.all([_ensure(kube, m) for m in render.render_prerequisites(job)])


def _prerequisites(kube: Kube, job: Job) -> list[Callable[[], Any]]:
    """Create-if-absent of what the pods need at creation, as refusable calls for Kube.all."""
    return [_refusable(_ensure(kube, m)) for m in render.render_prerequisites(job)]


def _companions(kube: Kube, job: Job) -> list[Callable[[], Any]]:
    """Create-if-absent of what a launched gang needs beside its pods, as refusable calls for Kube.all."""
    return [_refusable(_ensure(kube, m)) for m in render.render_companions(job)]


def _all_made(calls: list[Callable[[], Any]], results: list[Any]) -> bool:
    """Whether there were such calls and none was refused (results: theirs first, in order)."""
    return bool(calls) and not any(isinstance(r, ApiError) for r in results[:len(calls)])


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


def apply_actions(kube: Kube, config: OperatorConfig, job: Job, decision: Decision,
                  prerequisites_ready: bool = False,
                  with_pods: list[Callable[[], Any]] | None = None) -> list[EventNote]:
    """Carry out the decision's actions; `with_pods`: refusable calls made in the round trip that
    creates pods (the job's companions, then remembered as made when none was refused)."""
    events: list[EventNote] = []
    ns, name = job.meta.namespace, job.meta.name
    for action in decision.actions:
        if isinstance(action, DeletePods):
            kube.all([lambda pod=pod, uid=uid: kube.delete_pod(ns, pod, uid) for pod, uid in action.pods])
        elif isinstance(action, CreatePods):
            if not prerequisites_ready:
                _create_prerequisites(kube, job)
            manifests = [render.render_pod(job, rank, action.attempt, config, action.resume_from)
                         for rank in action.ranks]
            companions = with_pods or []
            results = kube.all([*(lambda m=m: kube.create(m) for m in manifests), *companions])
            created = results[:len(manifests)]
            if _all_made(companions, results[len(manifests):]):
                kube.put_companions_created(ns, name, job.meta.uid)
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
