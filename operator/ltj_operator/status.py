"""The job's state machine: one pure function, `decide`, from what is observed to what should be.

Inputs: the parsed job (or the reason it does not parse, and the job as last applied), the current
status (including `status.training`, which the relay writes), the observed pods and claim, the time,
and what the reconciler's own writes came to (`Outcomes`: a create the API server refused, the first
gang created, the time since its last status write). Output: the complete operator-owned status and whether to
record it now, the actions that bring the world closer to it (create pods, delete pods, delete the
job), when to look again, and the Kubernetes Events worth posting. No I/O, no clock.

Rules that keep it level-based and safe to repeat:
- Succeeded and Failed are terminal: the phase never leaves them but for one edit; later calls only clean
  up pods per cleanPodPolicy, refine the result from late training data and expire the TTL.
- An edit of a finished job is never dropped without a word. A Succeeded job that did not stop early and
  whose edit raises spec.training.maxEpochs above the epochs it trained trains on, as Lightning's
  fit(ckpt_path="last") with a higher max_epochs does: a new attempt, no restart, resuming from its last
  checkpoint (TrainingExtended). An edit of only the fields that govern a finished job
  (FINISHED_JOB_FIELDS) is applied. Any other edit is not: the job keeps the spec on record,
  EditApplied=False (JobFinished) says why and how to train again, with a Warning once per generation.
- The gang attempt only grows. Pods are labelled with their attempt; pods of another attempt are
  stale and deleted, and the pods of a new attempt are created only once the stale ones are gone
  (names are reused). A restart records the new attempt in the status BEFORE the old pods are
  deleted, so a crash in between can neither lose nor double-count the restart.
- A pod of the current attempt that vanishes after the whole gang was seen counts as a failure.
- Conditions are keyed by type; lastTransitionTime changes only when the status does.
- A Warning event goes with the record of its cause, once: the condition it reports turning True (or
  its message changing, for a refusal), a new generation's spec warnings. A claim still binding is no
  cause: the scheduler waits for it at every start where the claim's class binds immediately.
- An edit the operator finds invalid never fails a job that has a valid spec on record
  (status.appliedSpec): the job goes on with that spec and EditApplied=False says why; a later valid
  edit is applied and turns it True. Only a job that never had a valid spec fails.
- A job labelled kueue.x-k8s.io/queue-name, where Kueue is installed, creates no pods until Kueue admits
  its Workload (CreateWorkload while it has none); QuotaReserved and status.queue carry Kueue's reason
  and message meanwhile, an Event per cause; the admission's placement goes on every pod of its gangs.
  A finished job's Workload is marked Finished (FinishWorkload) once none of its pods still runs.
  An active job's Workload carries PodsReady as jobframework keeps it (SetPodsReady, kueue.pods_ready_update:
  True while the whole gang runs), whether or not Kueue configures waitForPodsReady (the operator cannot
  tell): a write only when its status or reason changes, and none in a pass with another Workload write.
- A job whose Workload Kueue evicts (Evicted=True: preempted, deactivated, a PodsReady timeout, ...) stops
  the way a suspended one does: Suspended, its pods deleted with their grace period (every rank gets
  SIGTERM and the trainer saves a checkpoint), no failure and no restart counted; each eviction is counted
  once (keyed by the time Kueue evicted it). Once no pod of it is left, the Workload's admission is cleared
  (ClearAdmission), which gives the quota back and queues it again; when Kueue admits it again, a new
  attempt resumes from the last checkpoint.
- Outcomes change only what is recorded, never the actions: a refusal is Created=False with the API
  server's message until the children exist; a first gang's record waits for its pods to be seen;
  progress right after the last write waits for the rest of the gang (PROGRESS_HOLD_SECONDS).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Union

from ltj_api.summary import parse as parse_summary

from . import constants as C
from .failures import PodFailure, classify, root_cause, vanished
from .kueue import (FINISHED_FAILED, FINISHED_SUCCEEDED, PodSetPlacement, QueueObserved, WorkloadView,
                    pods_ready_update, recorded_placement, workload_name)
from .podview import PodView
from .spec import Job, on_spec, pod_name

R = C.Reason

# Status fields the operator owns (everything but `training` and `trainerStatus`, which are the relay's).
OPERATOR_FIELDS = ("phase", "conditions", "observedGeneration", "startTime", "completionTime", "restarts",
                   "attempt", "launchedAttempt", "readyNodes", "nodes", "failure", "resumeFrom", "result",
                   "appliedGeneration", "appliedSpec", "queue", "evictions", "lastEviction")
MAX_CONDITION_MESSAGE = 4096
# How soon to look again while waiting for old pods to go (their deletion events also wake us).
STALE_POD_RECHECK_SECONDS = 5.0
# Progress inside Pending ("1 of 2 pod(s) running") that follows an earlier status write of ours this
# closely waits for the rest of the gang: the next pod's event usually finds it all running, and one
# write says so instead of two in a row (the Job controller batches its pod updates over 1 s likewise).
PROGRESS_HOLD_SECONDS = 1.0
# A pod the scheduler holds back for an unbound claim is pending, not unschedulable, this long: a provisioner
# binds a new claim within seconds, and only a claim that stays unbound is worth a warning.
CLAIM_BINDING_SECONDS = 30.0
# After a success, how long cleanPodPolicy Running leaves the ranks still seen running to finish on their own.
# Rank 0 exits 0 only after the gang's last collective, so the others are exiting too, and their pods' reports
# may reach us after rank 0's; deleting them then would cut their last lines and lose their logs. A rank still
# running after this is hung and is deleted.
FINISH_GRACE_SECONDS = 30.0
# How soon a job held for a queue on a cluster without Kueue looks again: Kueue installed meanwhile is
# noticed at the next look after the operator's cached discovery answer expires.
KUEUE_RECHECK_SECONDS = 60.0
# The spec fields (paths under spec) that still act on a finished job: an edit of only these is applied to it.
FINISHED_JOB_FIELDS = frozenset({"runPolicy.ttlSecondsAfterFinished", "runPolicy.cleanPodPolicy"})
# The one field whose raise trains a succeeded job on.
MAX_EPOCHS_FIELD = "training.maxEpochs"


# --- time ------------------------------------------------------------------------------------


def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment


# --- inputs and outputs ----------------------------------------------------------------------


@dataclass(frozen=True)
class StallPolicy:
    factor: float = 5.0
    min_seconds: float = 600.0


@dataclass(frozen=True)
class Observed:
    pods: tuple[PodView, ...] = ()
    # The output claim's access modes when known (status of a bound claim, else its spec).
    claim_access_modes: tuple[str, ...] | None = None
    # Whether the API server serves Kueue's API; None when not looked up (the job names no queue).
    kueue_installed: bool | None = None
    # The job's Workload and what goes with it, where Kueue is installed and the job names a queue.
    queue: QueueObserved | None = None


@dataclass(frozen=True)
class Outcomes:
    """What the reconciler met beyond the observation, and remembers of its own writes."""
    # The API server refused to create one of the job's children (quota, admission, a name taken by an
    # object the job does not control): its message.
    refusal: str | None = None
    # The refusal is a child's name taken by an object the job does not control (kube.NotOwned).
    not_owned: bool = False
    # This pass created the job's first gang, before any status of the job was recorded.
    gang_created: bool = False
    # Seconds since the reconciler last wrote the job's status or created its first gang (None: never).
    since_write: float | None = None


@dataclass(frozen=True)
class CreatePods:
    ranks: tuple[int, ...]
    attempt: int
    resume_from: str | None  # LTJ_RESUME for the new pods (restart attempts only)
    placement: tuple[PodSetPlacement, ...] = ()  # Kueue's admission, per pod set (kueue.podset_of)


@dataclass(frozen=True)
class CreateWorkload:
    """The job's Workload (render.render_workload), create-if-absent."""


@dataclass(frozen=True)
class FinishWorkload:
    """Mark the job's Workload Finished, which releases its quota (jobframework's reasons)."""
    workload: str
    reason: str
    message: str


@dataclass(frozen=True)
class ClearAdmission:
    """Clear the admission of the job's evicted Workload (kueue.cleared_admission), which releases its quota
    and queues it again: once no pod of the job is left."""
    workload: str


@dataclass(frozen=True)
class SetPodsReady:
    """Give the job's Workload the PodsReady condition of a gang that is (not) wholly ready
    (kueue.pods_ready_patch), which Kueue's waitForPodsReady times."""
    workload: str
    ready: bool


@dataclass(frozen=True)
class DeletePods:
    pods: tuple[tuple[str, str], ...]  # (name, uid): the uid guards against deleting a newer namesake
    reason: str


@dataclass(frozen=True)
class DeleteJob:
    reason: str


Action = Union[CreatePods, DeletePods, DeleteJob, CreateWorkload, FinishWorkload, ClearAdmission, SetPodsReady]


@dataclass(frozen=True)
class EventNote:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    status: Mapping[str, Any]
    actions: tuple[Action, ...] = ()
    requeue_after: float | None = None
    events: tuple[EventNote, ...] = ()
    held: bool = False  # the status is recorded by a later pass (see Outcomes)

    @property
    def phase(self) -> str:
        return str(self.status["phase"])

    def condition(self, type_: str) -> Mapping[str, Any] | None:
        for cond in self.status.get("conditions") or ():
            if cond.get("type") == type_:
                return cond
        return None

    def status_patch(self, current: Mapping[str, Any] | None) -> dict[str, Any]:
        """The merge patch (operator fields only) that turns `current` into this decision; empty when
        nothing changed, so a repeated reconcile writes nothing. None removes a field."""
        return _patch(self.status, current or {})

    def record(self, current: Mapping[str, Any] | None) -> dict[str, Any]:
        """The status patch to write now: empty when nothing changed or the record is held."""
        return {} if self.held else self.status_patch(current)


def _patch(status: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    return {key: status.get(key) for key in OPERATOR_FIELDS if status.get(key) != current.get(key)}


# --- conditions ------------------------------------------------------------------------------


class _Conditions:
    def __init__(self, existing: Any, now: str, generation: int):
        self.now = now
        self.generation = generation
        self.items: dict[str, dict[str, Any]] = {}
        for cond in existing if isinstance(existing, list) else ():
            if isinstance(cond, Mapping) and isinstance(cond.get("type"), str):
                self.items[cond["type"]] = dict(cond)
        self.before = {k: dict(v) for k, v in self.items.items()}

    def set(self, type_: str, status: str, reason: str, message: str) -> None:
        old = self.items.get(type_)
        keep_time = old is not None and old.get("status") == status and old.get("lastTransitionTime")
        self.items[type_] = {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message[:MAX_CONDITION_MESSAGE],
            "lastTransitionTime": old["lastTransitionTime"] if keep_time and old else self.now,
            "observedGeneration": self.generation,
        }

    def settle(self, type_: str, reason: str, message: str) -> None:
        """Set to False, but only if the condition was ever reported (absent means 'never happened')."""
        if type_ in self.items:
            self.set(type_, C.FALSE, reason, message)

    def is_true(self, type_: str) -> bool:
        return self.items.get(type_, {}).get("status") == C.TRUE

    def was_true(self, type_: str) -> bool:
        return self.before.get(type_, {}).get("status") == C.TRUE

    def became_true(self, type_: str) -> bool:
        return self.is_true(type_) and not self.was_true(type_)

    def changed(self, type_: str) -> bool:
        """Its status, reason or message differs from the recorded one."""
        now, before = self.items.get(type_, {}), self.before.get(type_, {})
        return any(now.get(k) != before.get(k) for k in ("status", "reason", "message"))

    def since(self, type_: str) -> dt.datetime | None:
        return parse_time(self.items.get(type_, {}).get("lastTransitionTime"))

    def as_list(self) -> list[dict[str, Any]]:
        order = {t: i for i, t in enumerate(C.CONDITION_TYPES)}
        return sorted(self.items.values(), key=lambda c: (order.get(c["type"], len(order)), c["type"]))


# --- helpers ---------------------------------------------------------------------------------


def _changed(before: Any, after: Any, path: str = "") -> set[str]:
    """The paths (dotted, under spec) where two specs differ; a list differs as a whole."""
    both = (before, after)
    if any(isinstance(v, Mapping) for v in both) and all(isinstance(v, Mapping) or v is None for v in both):
        old, new = before or {}, after or {}
        return {p for key in old.keys() | new.keys()
                for p in _changed(old.get(key), new.get(key), f"{path}.{key}" if path else key)}
    return set() if before == after else {path}


def _created_message(nodes: int, attempt: int) -> str:
    return f"created {nodes} pod(s) for attempt {attempt}"


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _score(value: Any) -> str:
    number = _number(value)
    return f"{number:.6g}" if number is not None else "n/a"


def _early_stop_info(training: Mapping[str, Any], summary: Mapping[str, Any] | None) -> tuple[bool, str]:
    es = training.get("earlyStopped")
    if isinstance(es, Mapping) and es:
        detail = f"early stopping at epoch {es.get('epoch', '?')}"
        if es.get("reason"):
            detail += f": {es['reason']}"
        return True, detail
    if summary is not None and summary.get("early_stopped"):
        detail = "early stopping (from the trainer's termination message)"
        if isinstance(summary.get("early_stopped"), Mapping) and summary["early_stopped"].get("reason"):
            detail += f": {summary['early_stopped']['reason']}"
        return True, detail
    return False, ""


def _result(training: Mapping[str, Any], summary: Mapping[str, Any] | None,
            previous: Any) -> dict[str, Any] | None:
    """The final outcome: from status.training when the relay delivered the end of training, else
    from the trainer's termination summary (the relay may have died), else what we had."""
    if training.get("finished"):
        out: dict[str, Any] = {"source": "training"}
        epoch = training.get("epoch")
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            out["epochs"] = epoch + 1  # the relay reports Lightning's 0-based epoch index
        values = {
            "bestCheckpoint": training.get("bestCheckpoint"),
            "bestScore": _number(training.get("bestScore")),
            "monitor": training.get("monitor"),
            "earlyStopped": bool(training.get("earlyStopped")),
            "testMetrics": training.get("testMetrics"),
        }
    elif summary is not None:
        out = {"source": "terminationMessage"}
        epochs = summary.get("epochs")
        if isinstance(epochs, int) and not isinstance(epochs, bool):
            out["epochs"] = epochs
        values = {
            "bestCheckpoint": summary.get("best_checkpoint"),
            "bestScore": _number(summary.get("best_score")),
            "monitor": summary.get("monitor"),
            "earlyStopped": bool(summary.get("early_stopped")),
            "testMetrics": summary.get("test_metrics"),
        }
    else:
        return dict(previous) if isinstance(previous, Mapping) else None
    for key, value in values.items():
        if key == "testMetrics":
            if isinstance(value, Mapping):
                metrics = {str(k): _number(v) for k, v in value.items() if _number(v) is not None}
                if metrics:
                    out[key] = metrics
        elif key == "earlyStopped" or value is not None and value != "":
            out[key] = value
    return out


# --- the decision ----------------------------------------------------------------------------


class _Decider:
    def __init__(self, job: Job | None, status: Mapping[str, Any] | None, observed: Observed, now: dt.datetime,
                 generation: int, spec_error: str | None, spec: Mapping[str, Any] | None, stall: StallPolicy,
                 outcomes: Outcomes, hold_seconds: float):
        self.job = job
        self.prev: Mapping[str, Any] = status or {}
        self.observed = observed
        self.now = now
        self.now_s = format_time(now)
        self.spec_error = spec_error
        self.stall = stall
        self.outcomes = outcomes
        self.hold_seconds = hold_seconds
        self.conds = _Conditions(self.prev.get("conditions"), self.now_s, generation)
        training = self.prev.get("training")
        self.training: Mapping[str, Any] = training if isinstance(training, Mapping) else {}
        self.phase: str = self.prev.get("phase") if self.prev.get("phase") in C.PHASES else C.PHASE_PENDING
        self.prev_phase = self.prev.get("phase")
        self.restarts = _int(self.prev.get("restarts"), 0)
        self.attempt = _int(self.prev.get("attempt"), 0)
        self.launched = _int(self.prev.get("launchedAttempt"), -1)
        self.start_time: str | None = self.prev.get("startTime")
        self.completion_time: str | None = self.prev.get("completionTime")
        self.failure: Any = self.prev.get("failure")
        self.resume_from: str | None = self.prev.get("resumeFrom")
        self.result: Any = self.prev.get("result")
        self.queue: Any = self.prev.get("queue")
        self.evictions = _int(self.prev.get("evictions"), 0)
        self.last_eviction: Any = self.prev.get("lastEviction")
        self.placement: tuple[PodSetPlacement, ...] = ()
        self.generation = generation
        # The spec the job runs on: the one it has when valid, else the last one applied.
        valid = spec_error is None and job is not None and spec is not None
        self.spec = spec if valid else None
        self.applied_spec: Any = spec if valid else self.prev.get("appliedSpec")
        self.applied_generation: Any = generation if valid else self.prev.get("appliedGeneration")
        self.ready = 0
        self.actions: list[Action] = []
        self.events: list[EventNote] = []
        self.requeues: list[float] = []
        self.summary: Mapping[str, Any] | None = None

    # -- small tools --
    @property
    def nodes(self) -> int:
        return self.job.spec.nodes if self.job is not None else _int(self.prev.get("nodes"), 0)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(EventNote(type_, reason, message[:1024]))

    def requeue(self, seconds: float) -> None:
        self.requeues.append(max(1.0, seconds))

    # A pod is the job's only when the job controls it (its controller reference has the job's uid): one
    # merely labelled like the job's is foreign, neither counted nor deleted, and its name blocks its rank.
    def ours(self) -> list[PodView]:
        uid = self.job.meta.uid if self.job is not None else None
        return [p for p in self.observed.pods if not uid or p.owner_uid == uid]

    def foreign(self) -> list[PodView]:
        uid = self.job.meta.uid if self.job is not None else None
        return [p for p in self.observed.pods if uid and p.owner_uid != uid]

    def current(self) -> dict[int, PodView]:
        out: dict[int, PodView] = {}
        for pod in self.ours():
            if pod.attempt == self.attempt and pod.rank is not None and 0 <= pod.rank < max(self.nodes, 1):
                out[pod.rank] = pod
        return out

    def stale(self) -> list[PodView]:
        return [p for p in self.ours() if p.attempt != self.attempt or p.rank is None or p.rank >= self.nodes]

    def delete(self, pods: Iterable[PodView], reason: str) -> int:
        targets = tuple((p.name, p.uid) for p in pods if not p.deleting)
        if targets:
            self.actions.append(DeletePods(targets, reason))
        return len(targets)

    # -- the whole decision --
    def run(self) -> Decision:
        self.observe_training()
        if self.phase in C.TERMINAL_PHASES:
            self.finished_edit()
        if self.phase in C.TERMINAL_PHASES:
            self.terminal()
        elif self.job is None:
            self.fail(R.INVALID_SPEC, f"invalid spec: {self.spec_error or 'missing'}")
        else:
            self.check_edit()
            self.active()
            self.pods_ready()
            self.record_outcomes()
        return self.build()

    def observe_training(self) -> None:
        rank0 = self.current().get(0)
        if rank0 is not None and rank0.trainer is not None and rank0.trainer.state == "terminated":
            self.summary = parse_summary(rank0.trainer.message)
        last = self.training.get("lastCheckpoint")
        if isinstance(last, str) and last:
            if last != self.resume_from:
                self.event("Normal", R.CHECKPOINT_SAVED, f"checkpoint saved: {last}")
            self.resume_from = last
            detail = f"latest checkpoint {last}"
            if isinstance(self.training.get("epoch"), int):
                detail += f" (epoch {self.training['epoch']}"
                detail += f", step {self.training['step']})" if isinstance(self.training.get("step"), int) else ")"
            self.conds.set(C.COND_CHECKPOINT_SAVED, C.TRUE, R.CHECKPOINT_SAVED, detail)
        stopped, detail = _early_stop_info(self.training, self.summary)
        if stopped:
            self.conds.set(C.COND_EARLY_STOPPED, C.TRUE, R.EARLY_STOPPED, detail)
            if self.conds.became_true(C.COND_EARLY_STOPPED):
                self.event("Normal", R.EARLY_STOPPED, detail)

    def check_edit(self) -> None:
        """An invalid edit of a job with a valid spec on record: the job runs on, on that spec."""
        job = self.job
        assert job is not None
        if self.spec_error is not None:
            message = (f"the edit of generation {self.generation} is not applied: {self.spec_error}; the job runs "
                       f"on its spec of generation {job.meta.generation}")
            self.conds.set(C.COND_EDIT_APPLIED, C.FALSE, R.INVALID_EDIT, message)
            if self.conds.changed(C.COND_EDIT_APPLIED):
                self.event("Warning", R.INVALID_EDIT, message)
        else:
            self.edit_applied()

    def edit_applied(self) -> None:
        if C.COND_EDIT_APPLIED in self.conds.items:  # reported only once an edit was refused
            self.conds.set(C.COND_EDIT_APPLIED, C.TRUE, R.EDIT_APPLIED,
                           f"the job runs on its spec of generation {self.generation}")

    # -- an edit of a finished job --
    def finished_edit(self) -> None:
        """The edit of a finished job since the spec on record trains it on, is applied, or is not applied
        and says why (see the module docstring)."""
        job, before, generation = self.job, self.prev.get("appliedSpec"), self.prev.get("appliedGeneration")
        if (job is None or not isinstance(before, Mapping) or not isinstance(generation, int)
                or generation == self.generation):
            return  # no edit since the spec on record (with none on record, the spec as it is becomes it)
        changed = _changed(before, self.spec) if self.spec is not None else set()
        if self.spec is not None and changed <= FINISHED_JOB_FIELDS:
            self.edit_applied()
            return
        others = sorted(changed - FINISHED_JOB_FIELDS - {MAX_EPOCHS_FIELD})
        # An invalid edit comes with the job as applied already (spec.applied_job).
        applied = job if self.spec is None else on_spec(job, before, generation)
        result = _result(self.training, self.summary, self.result) or {}
        stopped = _early_stop_info(self.training, self.summary)[0] or bool(result.get("earlyStopped"))
        had = applied.spec.training.max_epochs if applied is not None else None
        trained = _int(result.get("epochs"), had if had is not None else -1)
        wanted = job.spec.training.max_epochs
        if self.spec is None:
            why = f"the edit is invalid: {self.spec_error}"
        elif self.phase == C.PHASE_FAILED:
            why = "a failed job does not train again"
        elif stopped:
            why = "it stopped early, so a higher maxEpochs would not train it on"
        elif others:
            why = "a finished job takes no edit of " + ", ".join(f"spec.{path}" for path in others)
        elif trained < 0:
            why = "the epochs it trained are not on record"
        elif wanted <= trained:
            why = f"spec.training.maxEpochs {wanted} is not above the {trained} epoch(s) it trained"
        elif had is not None and wanted <= had:
            why = f"spec.training.maxEpochs {wanted} is not above its maxEpochs so far, {had}"
        else:
            self.train_on(trained if had is None else had, wanted)
            return
        how = ("To train again, create a new job" if self.phase == C.PHASE_FAILED or stopped else
               f"To train on from its last checkpoint, change only spec.training.maxEpochs, to more than "
               f"{max(trained, had or trained)}; "
               "to train anew, create a new job")
        # A new job never resumes this one's checkpoints: its trainer loads only its own (a checkpoint is a pickle).
        which, checkpoint = ("last", self.resume_from) if self.resume_from else ("best", result.get("bestCheckpoint"))
        message = (f"the edit of generation {self.generation} is not applied: the job {self.phase.lower()} and "
                   f"{why}; it keeps its spec of generation {generation}. {how} (it trains in a directory of its own"
                   + (f"; this job's {which} checkpoint is {checkpoint})" if checkpoint else ")"))
        self.conds.set(C.COND_EDIT_APPLIED, C.FALSE, R.JOB_FINISHED, message)
        recorded = self.conds.before.get(C.COND_EDIT_APPLIED, {})
        if (recorded.get("reason"), recorded.get("observedGeneration")) != (R.JOB_FINISHED, self.generation):
            self.event("Warning", R.EDIT_IGNORED, message)  # once per generation
        # The job stays on the spec on record: its cleanPodPolicy and TTL are that spec's.
        self.job = applied or job
        self.applied_spec, self.applied_generation = before, generation

    def train_on(self, before: int, after: int) -> None:
        """A new attempt, not a restart (backoffLimit does not count it), from the last checkpoint."""
        message = (f"spec.training.maxEpochs raised from {before} to {after}: training on from "
                   f"{self.resume_from or 'the last checkpoint'}")
        self.attempt += 1
        self.phase = C.PHASE_PENDING
        # As after a resumption, the active deadline counts from the new gang; the result is the next run's.
        self.completion_time = self.start_time = self.result = None
        self.conds.set(C.COND_SUCCEEDED, C.FALSE, R.TRAINING_EXTENDED, message)
        self.event("Normal", R.TRAINING_EXTENDED, message)

    # -- terminal phases --
    def terminal(self) -> None:
        if self.phase == C.PHASE_SUCCEEDED:
            stopped, _ = _early_stop_info(self.training, self.summary)
            cond = self.conds.items.get(C.COND_SUCCEEDED)
            if stopped and cond is not None and cond.get("reason") == R.MAX_EPOCHS_REACHED:
                # The relay delivered the early stop after the pods finished: same status, better reason.
                self.conds.set(C.COND_SUCCEEDED, C.TRUE, R.EARLY_STOPPED, self.success_message())
        self.result = _result(self.training, self.summary, self.result)
        self.cleanup()
        self.finish_workload()
        self.expire()

    def cleanup(self) -> None:
        policy = self.job.spec.run_policy.clean_pod_policy if self.job is not None else C.CLEAN_POD_POLICY_RUNNING
        stale = self.stale()
        victims = list(stale)
        for pod in self.current().values():
            if policy == C.CLEAN_POD_POLICY_ALL:
                victims.append(pod)
            elif policy == C.CLEAN_POD_POLICY_RUNNING and self.running_policy_deletes(pod):
                victims.append(pod)
        count = self.delete(victims, R.CLEANED_UP)
        if count:
            self.event("Normal", R.CLEANED_UP, f"deleting {count} pod(s) (cleanPodPolicy {policy})")

    def running_policy_deletes(self, pod: PodView) -> bool:
        """Whether cleanPodPolicy Running deletes the pod now: running or pending, as PyTorchJob's does,
        but never once its trainer has exited (the pod finishes on its own once the relay has drained),
        and after a success only when FINISH_GRACE_SECONDS have not brought its exit."""
        if pod.finished or (pod.trainer is not None and pod.trainer.state == "terminated"):
            return False
        finished = parse_time(self.completion_time)
        if self.phase != C.PHASE_SUCCEEDED or finished is None:
            return True
        left = (finished + dt.timedelta(seconds=FINISH_GRACE_SECONDS) - self.now).total_seconds()
        if left > 0:
            self.requeue(left)
            return False
        return True

    def expire(self) -> None:
        ttl = self.job.spec.run_policy.ttl_seconds_after_finished if self.job is not None else None
        finished = parse_time(self.completion_time)
        if ttl is None or finished is None:
            return
        expiry = finished + dt.timedelta(seconds=ttl)
        if self.now >= expiry:
            self.actions.append(DeleteJob(R.TTL_EXPIRED))
            self.event("Normal", R.TTL_EXPIRED, f"deleting the job {ttl}s after it finished (ttlSecondsAfterFinished)")
        else:
            self.requeue((expiry - self.now).total_seconds())

    def finish(self, phase: str, cond_type: str, reason: str, message: str, event_type: str) -> None:
        self.phase = phase
        self.completion_time = self.completion_time or self.now_s
        self.conds.set(cond_type, C.TRUE, reason, message)
        self.conds.set(C.COND_RUNNING, C.FALSE, R.JOB_FINISHED, f"the job {phase.lower()}")
        for type_ in (C.COND_RESTARTING, C.COND_UNSCHEDULABLE, C.COND_STALLED, C.COND_SUSPENDED):
            if self.conds.is_true(type_):
                self.conds.set(type_, C.FALSE, R.JOB_FINISHED, f"the job {phase.lower()}")
        self.event(event_type, reason, message)
        self.terminal()

    def fail(self, reason: str, message: str) -> None:
        self.finish(C.PHASE_FAILED, C.COND_FAILED, reason, message, "Warning")

    def success_message(self) -> str:
        stopped, detail = _early_stop_info(self.training, self.summary)
        if stopped:
            message = f"training finished by {detail}"
        elif self.job is not None:
            message = f"training finished after maxEpochs ({self.job.spec.training.max_epochs})"
        else:
            message = "training finished"
        if self.summary is not None and not self.training.get("finished"):
            # The relay has not delivered the end of training: the trainer's own summary is newer.
            best_ckpt, best, monitor = (self.summary.get("best_checkpoint"), self.summary.get("best_score"),
                                        self.summary.get("monitor"))
        else:
            best_ckpt, best, monitor = (self.training.get("bestCheckpoint"), self.training.get("bestScore"),
                                        self.training.get("monitor"))
        if best_ckpt or _number(best) is not None:
            message += f"; best {monitor or 'score'} {_score(best)}"
            if best_ckpt:
                message += f" at {best_ckpt}"
        return message

    def succeed(self) -> None:
        stopped, _ = _early_stop_info(self.training, self.summary)
        reason = R.EARLY_STOPPED if stopped else R.MAX_EPOCHS_REACHED
        if not stopped:
            # Early-stopping state is part of every finished job's status, not only a stopped one's.
            enabled = self.job is not None and self.job.spec.training.early_stopping.enabled
            self.conds.set(C.COND_EARLY_STOPPED, C.FALSE,
                           R.MAX_EPOCHS_REACHED if enabled else R.EARLY_STOPPING_DISABLED,
                           "training ran to maxEpochs without stopping early" if enabled
                           else "early stopping is disabled for this job")
        self.finish(C.PHASE_SUCCEEDED, C.COND_SUCCEEDED, reason, self.success_message(), "Normal")

    # -- active phases --
    def active(self) -> None:
        job = self.job
        assert job is not None
        policy = job.spec.run_policy
        self.check_volume()

        # Before the suspension: a suspended job's evicted Workload gives its quota back all the same.
        if self.evicted():
            return
        if policy.suspend:
            self.suspend()
            return
        if self.phase == C.PHASE_SUSPENDED:
            self.resume()

        current = self.current()
        if current and self.start_time is None:
            # The first gang's status is written after its pods exist (see reconcile): it started when seen.
            self.start_time = self.now_s
        if len(current) == self.nodes:
            if self.launched != self.attempt:
                self.launched = self.attempt
                self.conds.set(C.COND_CREATED, C.TRUE, R.PODS_CREATED, _created_message(self.nodes, self.attempt))

        rank0 = current.get(0)
        if rank0 is not None and rank0.trainer_succeeded:
            self.succeed()
            return

        if self.deadline_passed():
            return

        failures = self.failures(current)
        if failures:
            self.handle_failure(root_cause(failures))
            return

        if not self.held_for_queue():
            self.create_missing(current)
        self.update_running(current)
        self.check_schedulable(current)
        self.check_stalled()

    def check_volume(self) -> None:
        modes = self.observed.claim_access_modes
        job = self.job
        assert job is not None
        if job.spec.nodes > 1 and modes is not None and "ReadWriteMany" not in modes:
            claim = job.spec.output.claim(job.meta.name)
            self.conds.set(C.COND_VOLUME_NOT_SHARED, C.TRUE, R.ACCESS_MODE_NOT_RWX,
                           f"the output claim {claim} is {', '.join(modes) or 'without access modes'}, but this "
                           f"{job.spec.nodes}-node job needs ReadWriteMany: every rank reads the same checkpoint "
                           "when the gang resumes, so restarts may fail or the pods may not schedule together")
            if self.conds.became_true(C.COND_VOLUME_NOT_SHARED):
                self.event("Warning", R.ACCESS_MODE_NOT_RWX, self.conds.items[C.COND_VOLUME_NOT_SHARED]["message"])
        elif modes is not None or job.spec.nodes == 1:
            self.conds.settle(C.COND_VOLUME_NOT_SHARED, R.VOLUME_SHARED,
                              "the output volume is shared (ReadWriteMany) or the job has one node")

    def suspend(self) -> None:
        count = self.delete(self.ours(), R.SUSPENDED)
        if self.phase != C.PHASE_SUSPENDED:
            self.event("Normal", R.SUSPENDED, f"job suspended: deleting {count} pod(s); status and checkpoints are kept")
        self.phase = C.PHASE_SUSPENDED
        self.conds.set(C.COND_SUSPENDED, C.TRUE, R.SUSPENDED,
                       "the job is suspended (spec.runPolicy.suspend); its pods are deleted, status and checkpoints "
                       "are kept")
        self.conds.settle(C.COND_RUNNING, R.SUSPENDED, "the job is suspended")
        self.conds.settle(C.COND_RESTARTING, R.SUSPENDED, "the job is suspended")
        self.conds.settle(C.COND_UNSCHEDULABLE, R.SUSPENDED, "the job is suspended")
        self.conds.settle(C.COND_STALLED, R.SUSPENDED, "the job is suspended")
        # Like batch/v1 Job: the active deadline counts again from the resumption.
        self.start_time = None
        if self.stale() or any(p for p in self.ours()):
            self.requeue(STALE_POD_RECHECK_SECONDS)

    def evicted_workload(self) -> WorkloadView | None:
        """The job's Workload while Kueue evicts it: Evicted=True from the eviction until Kueue admits it
        again (its admission cleared or not)."""
        job = self.job
        assert job is not None
        observed = self.observed.queue
        if job.meta.queue is None or not self.observed.kueue_installed or observed is None:
            return None
        view = observed.workload
        return view if view is not None and view.evicted is not None else None

    def evicted(self) -> bool:
        """Kueue evicted the job's Workload: the gang stops as on suspend, and the quota goes back once its
        pods are gone (see the module docstring). A rank 0 that finished training first makes the job a
        success instead: its Workload is then marked Finished, as jobframework does for a finished job."""
        view = self.evicted_workload()
        if view is None:
            return False
        job = self.job
        assert job is not None and view.evicted is not None
        rank0 = self.current().get(0)
        if rank0 is not None and rank0.trainer_succeeded:
            self.succeed()
            return True
        why = f"{view.evicted.reason}: {view.evicted.message}"
        last = self.last_eviction if isinstance(self.last_eviction, Mapping) else {}
        if (last.get("time"), last.get("reason")) != (view.evicted_at, view.evicted.reason):
            self.evictions += 1
            self.last_eviction = {"reason": view.evicted.reason, "message": view.evicted.message[:MAX_CONDITION_MESSAGE],
                                  **({"time": view.evicted_at} if view.evicted_at else {}), "attempt": self.attempt}
            self.event("Normal", R.WORKLOAD_EVICTED,
                       f"Kueue evicted Workload {view.name} ({why}): stopping the gang, which saves a checkpoint "
                       f"(eviction {self.evictions})")
        self.delete(self.ours(), R.WORKLOAD_EVICTED)
        self.phase = C.PHASE_SUSPENDED
        self.conds.set(C.COND_SUSPENDED, C.TRUE, R.WORKLOAD_EVICTED,
                       f"Kueue evicted Workload {view.name} ({why}); its pods are stopped with their grace period, "
                       "each rank saving a checkpoint on SIGTERM, and the job waits in LocalQueue "
                       f"{job.meta.queue} to resume from its last checkpoint once admitted again (eviction "
                       f"{self.evictions}; evictions do not count against backoffLimit)")
        for type_ in (C.COND_RUNNING, C.COND_RESTARTING, C.COND_UNSCHEDULABLE, C.COND_STALLED):
            self.conds.settle(type_, R.WORKLOAD_EVICTED, "Kueue evicted the job")
        # As on suspend: the active deadline counts again from the resumption.
        self.start_time = None
        if not view.holds_quota:
            # Cleared: Kueue's own verdict on the queued Workload (Pending, the eviction's message at first).
            reserved = view.quota_reserved
            reason = reserved.reason if reserved is not None and reserved.reason else R.WORKLOAD_EVICTED
            return self.wait_for_queue(view.name, reason, reserved.message if reserved is not None else why,
                                       "Warning" if reason == "Inadmissible" else "Normal")
        if self.ours():
            self.requeue(STALE_POD_RECHECK_SECONDS)  # their deletion events also wake us
        else:
            self.actions.append(ClearAdmission(view.name))
        return self.wait_for_queue(view.name, R.WORKLOAD_EVICTED, f"Kueue evicted Workload {view.name} ({why}): "
                                   "its quota is released once the job's pods are gone", None)

    def resume(self) -> None:
        if self.launched == self.attempt or any(p.attempt == self.attempt for p in self.ours()):
            # The suspended gang ran: its successor is a new attempt that resumes from the checkpoint.
            self.attempt += 1
        evicted = self.conds.items.get(C.COND_SUSPENDED, {}).get("reason") == R.WORKLOAD_EVICTED
        self.phase = C.PHASE_PENDING
        message = f"the job resumed (attempt {self.attempt})"
        if evicted:
            last = self.last_eviction if isinstance(self.last_eviction, Mapping) else {}
            message = (f"the job resumed after eviction {self.evictions} by Kueue ({last.get('reason', 'evicted')}), "
                       f"as attempt {self.attempt}")
        if self.attempt > 0:
            message += f", continuing from {self.resume_from or 'the last checkpoint'}"
        self.conds.set(C.COND_SUSPENDED, C.FALSE, R.RESUMED, message)
        self.event("Normal", R.RESUMED, message)

    def deadline_passed(self) -> bool:
        job = self.job
        assert job is not None
        limit = job.spec.run_policy.active_deadline_seconds
        started = parse_time(self.start_time)
        if limit is None or started is None:
            return False
        deadline = started + dt.timedelta(seconds=limit)
        if self.now >= deadline:
            self.fail(R.DEADLINE_EXCEEDED, f"the job was active for longer than activeDeadlineSeconds ({limit}s) "
                                           f"since {self.start_time}")
            return True
        self.requeue((deadline - self.now).total_seconds())
        return False

    def failures(self, current: Mapping[int, PodView]) -> list[PodFailure]:
        job = self.job
        assert job is not None
        codes = job.spec.run_policy.retryable_exit_codes
        found = [f for f in (classify(p, codes) for p in current.values()) if f is not None]
        if self.launched == self.attempt:
            for rank in range(self.nodes):
                if rank not in current:
                    found.append(vanished(pod_name(job.meta.name, rank), rank))
        return found

    def handle_failure(self, root: PodFailure) -> None:
        job = self.job
        assert job is not None
        self.failure = root.as_status()
        limit = job.spec.run_policy.backoff_limit
        if not root.retryable:
            self.fail(root.reason, root.message)
        elif self.restarts >= limit:
            self.fail(R.BACKOFF_LIMIT_EXCEEDED,
                      f"{root.message}; the gang was already restarted {self.restarts} time(s) (backoffLimit {limit})")
        else:
            self.restart(root, limit)

    def restart(self, root: PodFailure, limit: int) -> None:
        old = list(self.current().values())
        self.restarts += 1
        self.attempt += 1
        self.phase = C.PHASE_RESTARTING
        message = (f"restart {self.restarts} of at most {limit} (attempt {self.attempt}) after {root.message}; "
                   f"resuming from {self.resume_from or 'the last checkpoint'}")
        self.conds.set(C.COND_RESTARTING, C.TRUE, root.reason, message)
        self.conds.set(C.COND_RUNNING, C.FALSE, root.reason, f"restarting the gang after {root.message}")
        self.conds.settle(C.COND_UNSCHEDULABLE, R.PODS_SCHEDULED, "restarting the gang")
        self.conds.settle(C.COND_STALLED, R.NOT_RUNNING, "restarting the gang")
        self.delete(old, root.reason)
        self.event("Warning", root.reason, message)
        self.requeue(STALE_POD_RECHECK_SECONDS)

    def create_missing(self, current: Mapping[int, PodView]) -> None:
        job = self.job
        assert job is not None
        if self.launched == self.attempt:
            return
        missing = [r for r in range(self.nodes) if r not in current]
        if not missing:
            return
        foreign = sorted({p.name for p in self.foreign()} & {pod_name(job.meta.name, r) for r in missing})
        # A new gang starts once the whole old one is gone: a new rank started beside an old rank 0 that
        # is still shutting down rendezvouses with it at the same address, fails, and restarts the gang again.
        stale = self.stale()
        self.delete(stale, R.CLEANED_UP)  # normally deleting already; not if a restart or suspension was interrupted
        ready = () if stale else tuple(r for r in missing
                                       if pod_name(job.meta.name, r) not in {p.name for p in self.foreign()})
        if foreign:
            self.conds.set(C.COND_CREATED, C.FALSE, R.POD_NAME_CONFLICT,
                           f"pod name(s) {', '.join(foreign)} are taken by pods this job does not own")
        elif self.conds.items.get(C.COND_CREATED, {}).get("reason") in (R.POD_CREATION_FAILED, R.ALREADY_EXISTS):
            pass  # keep the refusal visible while we keep trying
        elif not self.conds.is_true(C.COND_CREATED):
            self.conds.set(C.COND_CREATED, C.FALSE, R.CREATING_PODS,
                           f"creating {self.nodes} pod(s) for attempt {self.attempt}")
        if ready:
            resume = (self.resume_from or "last") if self.attempt > 0 else None
            self.actions.append(CreatePods(ready, self.attempt, resume, self.placement))
            self.start_time = self.start_time or self.now_s
            names = ", ".join(pod_name(job.meta.name, r) for r in ready)
            self.event("Normal", R.CREATING_PODS, f"creating pod(s) {names} (attempt {self.attempt})")
        if len(ready) < len(missing):
            self.requeue(STALE_POD_RECHECK_SECONDS)

    def held_for_queue(self) -> bool:
        """A job labelled with a Kueue queue is Kueue's to admit: it creates no pods until its Workload is
        admitted (those it has keep running), and its status says why it waits. Where no Kueue API is
        served nothing ever admits it, which it says instead of waiting without a word or running outside
        the queue its owner asked for."""
        job = self.job
        assert job is not None
        queue = job.meta.queue
        if queue is None or self.observed.kueue_installed is None:
            if self.conds.items.get(C.COND_QUOTA_RESERVED, {}).get("reason") == R.KUEUE_NOT_INSTALLED:
                del self.conds.items[C.COND_QUOTA_RESERVED]  # no longer true, and nothing else to report
            if queue is None:
                self.queue = None
            return False
        if self.observed.kueue_installed is False:
            message = (f"the job is labelled {C.LABEL_KUEUE_QUEUE}={queue}, but this cluster does not serve "
                       f"{C.KUEUE_API} (Kueue is not installed): no pods are created until Kueue is installed or "
                       "the label is removed")
            self.conds.set(C.COND_QUOTA_RESERVED, C.FALSE, R.KUEUE_NOT_INSTALLED, message)
            if self.conds.changed(C.COND_QUOTA_RESERVED):
                self.event("Warning", R.KUEUE_NOT_INSTALLED, message)
            self.requeue(KUEUE_RECHECK_SECONDS)
            return True
        observed = self.observed.queue or QueueObserved()
        view, name = observed.workload, workload_name(job)
        if observed.problem is not None:
            reason, message = observed.problem
            return self.wait_for_queue(name, reason, message, "Warning")
        if view is None:
            self.actions.append(CreateWorkload())
            # No event of its own: the creation's (CreatedWorkload) says it.
            return self.wait_for_queue(name, R.WORKLOAD_CREATED, f"creating Workload {name} in LocalQueue {queue}: "
                                       "no pods are created until Kueue admits it", None)
        if not view.admitted:
            waiting = next((c for c in (view.quota_reserved, view.admitted_condition)
                            if c is not None and c.status != C.TRUE and c.reason), None)
            if waiting is None:
                return self.wait_for_queue(name, R.WORKLOAD_CREATED, f"Workload {name} in LocalQueue {queue} waits "
                                           "for Kueue: no pods are created until Kueue admits it", None)
            # Kueue's own words; Inadmissible (no such LocalQueue, a stopped ClusterQueue) needs a person.
            return self.wait_for_queue(name, waiting.reason, waiting.message,
                                       "Warning" if waiting.reason == "Inadmissible" else "Normal")
        placement = observed.placement or recorded_placement(job, self.prev.get("queue"), view)
        if placement is None:
            # Only a decision fed no flavors gets here (observe reads them for every new admission).
            return self.wait_for_queue(name, R.WORKLOAD_CREATED, f"Workload {name} is admitted; reading its flavors",
                                       None)
        self.placement = placement
        flavors = ", ".join(f"{p.name}: " + ", ".join(f"{r}={f}" for r, f in sorted(p.flavors.items()))
                            for p in placement)
        message = f"Workload {name} is admitted by ClusterQueue {view.cluster_queue} ({flavors})"
        self.conds.set(C.COND_QUOTA_RESERVED, C.TRUE, R.ADMITTED, message)
        if self.conds.changed(C.COND_QUOTA_RESERVED):
            self.event("Normal", R.ADMITTED, message)
        self.queue = {"name": queue, "workload": name, "admitted": True, "clusterQueue": view.cluster_queue,
                      "reason": R.ADMITTED, "message": message, "podSets": [p.as_status() for p in placement]}
        return False

    def pods_ready(self) -> None:
        """An active queued job's Workload says whether its gang is wholly ready (phase Running: every rank's
        trainer runs, or has finished while the gang runs on), as jobframework says it for its jobs: without
        it a cluster whose Kueue configures waitForPodsReady would evict every ltj job at its timeout. One
        Workload write per pass: after another (its admission cleared), the next pass writes PodsReady."""
        job, observed = self.job, self.observed.queue
        assert job is not None
        if job.meta.queue is None or not self.observed.kueue_installed or observed is None:
            return
        if self.phase in C.TERMINAL_PHASES:
            return  # its Workload is to be marked Finished, which Kueue does not time
        view = observed.workload
        if view is None or observed.problem is not None:
            return
        if any(isinstance(a, (CreateWorkload, FinishWorkload, ClearAdmission)) for a in self.actions):
            return
        ready = self.phase == C.PHASE_RUNNING
        if pods_ready_update(view, ready) is not None:
            self.actions.append(SetPodsReady(view.name, ready))

    def wait_for_queue(self, workload: str, reason: str, message: str, event: str | None) -> bool:
        """Held for Kueue: QuotaReserved=False says why (an event of type `event` when that changes), and
        status.queue names the queue and the Workload."""
        job = self.job
        assert job is not None
        self.conds.set(C.COND_QUOTA_RESERVED, C.FALSE, reason, message)
        if event is not None and self.conds.changed(C.COND_QUOTA_RESERVED):
            self.event(event, reason, message)
        self.queue = {"name": job.meta.queue, "workload": workload, "admitted": False, "reason": reason,
                      "message": message[:MAX_CONDITION_MESSAGE]}
        return True

    def finish_workload(self) -> None:
        """A finished job's Workload is marked Finished, which releases its quota, once none of its pods still
        runs (a pod shutting down still holds its GPUs): what jobframework does for its jobs."""
        observed = self.observed.queue
        if observed is None or not isinstance(self.queue, Mapping):
            return
        view = observed.workload
        if view is None:
            # Deleted (by a user): it holds no quota any more, and there is nothing to mark.
            self.queue = {**self.queue, "admitted": False, "finished": True}
            return
        if view.finished is not None:
            message = f"Workload {view.name} is finished: Kueue released its quota"
            self.conds.set(C.COND_QUOTA_RESERVED, C.FALSE, R.WORKLOAD_FINISHED, message)
            if not self.queue.get("finished"):
                self.event("Normal", R.FINISHED_WORKLOAD, message)
            self.queue = {**self.queue, "admitted": False, "finished": True, "reason": R.WORKLOAD_FINISHED,
                          "message": message}
            return
        if any(not p.finished for p in self.ours()):
            return  # their events bring the next pass
        done = self.conds.items.get(self.phase, {})
        self.actions.append(FinishWorkload(view.name, FINISHED_SUCCEEDED if self.phase == C.PHASE_SUCCEEDED
                                           else FINISHED_FAILED, str(done.get("message") or f"the job {self.phase}")))

    def update_running(self, current: Mapping[int, PodView]) -> None:
        self.ready = sum(1 for p in current.values() if p.trainer_running)
        all_running = len(current) == self.nodes and self.ready == self.nodes
        if all_running:
            if self.phase != C.PHASE_RUNNING:
                self.event("Normal", R.ALL_PODS_RUNNING, f"all {self.nodes} pod(s) running (attempt {self.attempt})")
            self.phase = C.PHASE_RUNNING
            self.conds.set(C.COND_RUNNING, C.TRUE, R.ALL_PODS_RUNNING,
                           f"all {self.nodes} pod(s) running (attempt {self.attempt})")
            if self.conds.is_true(C.COND_RESTARTING):
                self.conds.set(C.COND_RESTARTING, C.FALSE, R.RESTART_COMPLETE,
                               f"the gang runs again after restart {self.restarts}")
            return
        if self.phase == C.PHASE_RUNNING and _int(self.prev.get("attempt"), 0) == self.attempt:
            # Same gang, some rank already done (e.g. exited 0 before rank 0): still running.
            return
        if self.phase != C.PHASE_RESTARTING:
            self.phase = C.PHASE_PENDING
        waiting = [f"{p.name}: {p.pending_detail}" for _, p in sorted(current.items()) if p.pending_detail]
        missing = self.nodes - len(current)
        detail = f"{self.ready} of {self.nodes} pod(s) running"
        if missing:
            detail += f", {missing} not created yet"
        if waiting:
            detail += "; " + "; ".join(waiting)
        self.conds.set(C.COND_RUNNING, C.FALSE, R.PODS_PENDING, detail)

    def check_schedulable(self, current: Mapping[int, PodView]) -> None:
        stuck = [f"{p.name}: {p.unschedulable}" for _, p in sorted(current.items())
                 if p.unschedulable and not self.binding(p)]
        if stuck:
            self.conds.set(C.COND_UNSCHEDULABLE, C.TRUE, R.PODS_UNSCHEDULABLE, "; ".join(stuck))
            if self.conds.became_true(C.COND_UNSCHEDULABLE):
                self.event("Warning", R.PODS_UNSCHEDULABLE, "; ".join(stuck))
        else:
            self.conds.settle(C.COND_UNSCHEDULABLE, R.PODS_SCHEDULED, "all pods are scheduled")

    def binding(self, pod: PodView) -> bool:
        """The pod waits for its claim to bind, for less than CLAIM_BINDING_SECONDS (then look again)."""
        since = parse_time(pod.unschedulable_since)
        if not pod.awaits_claim or since is None:
            return False
        left = CLAIM_BINDING_SECONDS - (self.now - since).total_seconds()
        if left > 0:
            self.requeue(left)
        return left > 0

    def check_stalled(self) -> None:
        if self.phase != C.PHASE_RUNNING:
            if self.conds.is_true(C.COND_STALLED):
                self.conds.set(C.COND_STALLED, C.FALSE, R.NOT_RUNNING, "the gang is not running")
            return
        # The last event's own time; the relay's write time only when it reports no event time (a relay
        # that rewrites its status must not hide a silent trainer).
        last_event = parse_time(self.training.get("lastEventTime")) or parse_time(self.training.get("updateTime"))
        moments = [m for m in (self.conds.since(C.COND_RUNNING), last_event) if m is not None]
        if not moments:
            return
        last = max(moments)
        interval = _number(self.training.get("eventIntervalSeconds"))
        threshold = self.stall.min_seconds
        if interval is not None and interval > 0:
            threshold = max(threshold, self.stall.factor * interval)
        quiet = (self.now - last).total_seconds()
        if quiet > threshold:
            # No elapsed-time figure in the message: it must stay the same on every reconcile.
            message = (f"no training event since {format_time(last)} while all pods run (threshold "
                       f"{int(threshold)}s" + (f" = max({self.stall.factor:g} x recent event interval "
                                                f"{interval:.0f}s, {self.stall.min_seconds:.0f}s)" if interval else "")
                       + ")")
            self.conds.set(C.COND_STALLED, C.TRUE, R.NO_RECENT_EVENTS, message)
            if self.conds.became_true(C.COND_STALLED):
                self.event("Warning", R.NO_RECENT_EVENTS, message)
        else:
            self.conds.settle(C.COND_STALLED, R.EVENTS_FLOWING, "training events arrive")
            self.requeue(threshold - quiet + 1)

    # -- what the reconciler's creates came to --
    def record_outcomes(self) -> None:
        if self.phase in C.TERMINAL_PHASES:
            return
        refusal = self.outcomes.refusal
        if refusal is not None:
            # Retried with backoff until the children exist; activeDeadlineSeconds bounds it like any wait.
            # No pod is created meanwhile: the reconciler creates pods only once every other child exists.
            if self.outcomes.not_owned:
                reason, message = R.ALREADY_EXISTS, f"no pods are created while a child's name is taken: {refusal}"
            else:
                reason, message = R.POD_CREATION_FAILED, f"the API server refused to create the job's objects: {refusal}"
            self.conds.set(C.COND_CREATED, C.FALSE, reason, message)
            if self.conds.changed(C.COND_CREATED):  # not again at each retry of the same refusal
                self.event("Warning", reason, message)

    def deferred(self) -> bool:
        """A first gang just created is not recorded: an operator that stops before its pods are seen
        derives the same status from them, and the pass their events start records it."""
        return self.outcomes.gang_created and self.outcomes.refusal is None

    def hold(self, status: Mapping[str, Any]) -> float | None:
        """Seconds the record of `status` waits, or None. Progress (or a first record that only says
        Pending) right after our last write waits for the next pod's event or the hold's end, so a gang
        coming up writes Running without a write queued ahead of it."""
        since = self.outcomes.since_write
        if since is None or since >= self.hold_seconds or self.events:
            return None
        if any(isinstance(a, CreatePods) for a in self.actions):
            return None
        patch = _patch(status, self.prev)
        if patch and (progress_only(self.prev, patch) or first_record_pending(self.prev, status)):
            return self.hold_seconds - since
        return None

    # -- output --
    def build(self) -> Decision:
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": self.conds.as_list(),
            "observedGeneration": self.generation,
            "startTime": self.start_time,
            "completionTime": self.completion_time,
            "restarts": self.restarts,
            "attempt": self.attempt,
            "launchedAttempt": self.launched if self.launched >= 0 else None,
            "readyNodes": self.ready,
            "nodes": self.nodes,
            "failure": self.failure,
            "resumeFrom": self.resume_from,
            "result": self.result,
            "appliedGeneration": self.applied_generation,
            "appliedSpec": self.applied_spec,
            "queue": self.queue,
            "evictions": self.evictions or None,
            "lastEviction": self.last_eviction,
        }
        requeue = min(self.requeues) if self.requeues else None
        deferred = self.deferred()
        hold = None if deferred else self.hold(status)
        if hold is not None:
            requeue = hold if requeue is None else min(requeue, hold)
        elif (not deferred and self.job is not None and self.spec_error is None
              and self.prev.get("observedGeneration") != self.generation):
            # With the record of the generation they concern: once, not at every pass until it is recorded.
            for warning in self.job.spec.warnings:
                self.event("Warning", R.SPEC_WARNING, warning)
        return Decision(
            status=status,
            actions=tuple(self.actions),
            requeue_after=requeue,
            events=tuple(self.events),
            held=deferred or hold is not None,
        )


def progress_only(current: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """The patch only reports a waiting gang's progress: its ready count and the message of
    Running=False/PodsPending, with the phase (Pending or Restarting) and every other condition unchanged."""
    if not patch or not set(patch) <= {"readyNodes", "conditions"}:
        return False
    if current.get("phase") not in (C.PHASE_PENDING, C.PHASE_RESTARTING):
        return False
    before = {c.get("type"): c for c in current.get("conditions") or []}
    after = {c.get("type"): c for c in patch.get("conditions", current.get("conditions")) or []}
    changed = {t for t in before.keys() | after.keys() if before.get(t) != after.get(t)}
    running = after.get(C.COND_RUNNING) or {}
    return (changed <= {C.COND_RUNNING} and running.get("status") == C.FALSE
            and running.get("reason") == R.PODS_PENDING)


def transition(current: Mapping[str, Any], record: Mapping[str, Any]) -> str | None:
    """The one log line a status record is worth when it moves the job along (its first record, a new
    phase, a restart), else None: progress and condition refreshes are not transitions."""
    merged = {**current, **record}
    phase, restarts = merged.get("phase"), _int(merged.get("restarts"), 0)
    if restarts > _int(current.get("restarts"), 0):
        failure = (merged.get("failure") or {}).get("message")
        return f"restart {restarts} (attempt {merged.get('attempt')})" + (f" after {failure}" if failure else "")
    if current.get("attempt") is None and merged.get("attempt") is not None:
        return f"created: gang of attempt {merged['attempt']}, phase {phase}"
    if phase == current.get("phase"):
        return None
    if phase in C.TERMINAL_PHASES:
        done = next((c for c in merged.get("conditions") or [] if c.get("type") == phase), {})
        return f"finished: {phase}" + (f" ({done['reason']}: {done.get('message', '')})" if done.get("reason") else "")
    return f"phase {current.get('phase')} -> {phase}"


def first_record_pending(current: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """`status` is a job's first record (no attempt recorded yet) and says its gang is Pending (which the
    patch leaves out when the job reads as Pending already: the CRD's default status)."""
    return current.get("attempt") is None and status.get("phase") == C.PHASE_PENDING


def decide(job: Job | None, status: Mapping[str, Any] | None, observed: Observed, now: dt.datetime, *,
           generation: int | None = None, spec_error: str | None = None, spec: Mapping[str, Any] | None = None,
           stall: StallPolicy = StallPolicy(), outcomes: Outcomes = Outcomes(),
           hold_seconds: float = PROGRESS_HOLD_SECONDS) -> Decision:
    """Decide the job's status, whether to record it now, and the next actions (see the module
    docstring for the rules).

    When the spec does not parse, ``spec_error`` says why and ``job`` is the job as last applied
    (spec.applied_job), or None when it never had a valid spec. ``generation`` is the resource's
    (metadata.generation; the job's own by default); ``spec`` the spec as written, recorded as
    status.appliedSpec once it is valid."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    fallback = job.meta.generation if job is not None else _int((status or {}).get("observedGeneration"), 0)
    return _Decider(job, status, observed, now, _int(generation, fallback), spec_error, spec, stall, outcomes,
                    hold_seconds).run()
