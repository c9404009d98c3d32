"""The training status (``status.training``): a pure fold of the trainer's event log.

``fold(events, prior)`` applies events in seq order on top of a prior state; events whose seq is
not above the state's seq are ignored, so replaying a log, overlapping batches or a stale event
never move the status backwards. ``to_status(state, now)`` renders the JSON object the relay
writes (the CRD's ``status.training`` schema), with no NaN or infinity anywhere. No I/O, no clock, no torch here: the relay
(operator image) and the operator both import it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import posixpath
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ltj_api import events as ev
from ltj_api.events import Event

# Events after which the status must reach the API at once (no throttling).
FINAL_TYPES = frozenset({ev.FIT_END, ev.TEST, ev.EARLY_STOPPED, ev.ERROR})

# Bounds that keep the status object small whatever the trainer writes.
MAX_METRICS = 64
MAX_NAME = 253
MAX_PATH = 4096
MAX_MESSAGE = 1024
MAX_TOP_K = 128  # the CRD allows 1024; a status write carries the whole list
RATE_WINDOW = 6  # validation samples used for the ETA (recent rate, not the whole run)
INTERVAL_WINDOW = 16  # event times used for the mean interval
BURST_SECONDS = 2.0
MAX_TIMESTAMP = 32503680000.0  # year 3000  # events closer than this (validation + its checkpoints) are one burst
# The display strings (`kubectl get` columns, `kubectl describe`) round to this many significant digits;
# the numeric fields keep the full values.
DISPLAY_DIGITS = 4
MAX_DISPLAY = 1024
# status.training.history: the last MAX_HISTORY validated epochs, each with at most MAX_HISTORY_METRICS
# metrics (the monitored one first) whose names fit MAX_HISTORY_NAME; this keeps the history within a
# few hundred kB whatever the trainer logs, since every status write carries all of it.
MAX_HISTORY = 100
MAX_HISTORY_METRICS = 32
MAX_HISTORY_NAME = 64
# status.trainerStatus mirrors Kubeflow Trainer's TrainJob TrainerStatus: int32 fields, metric names and
# string values of 1 to 64 characters, at most 256 metrics.
INT32_MAX = 2**31 - 1
TRAINER_METRIC_TEXT = 64
TRAINER_METRICS = 256

Metrics = tuple[tuple[str, "float | None"], ...]


@dataclass(frozen=True)
class CheckpointRef:
    path: str
    score: float | None
    epoch: int | None
    step: int | None


@dataclass(frozen=True)
class EarlyStop:
    epoch: int | None
    reason: str | None
    message: str | None
    best_score: float | None
    monitor: str | None


@dataclass(frozen=True)
class ErrorInfo:
    message: str
    exception: str | None


@dataclass(frozen=True)
class Sample:
    """One point of the progress curve: event time (epoch seconds) and where training was."""

    t: float
    epoch: int | None  # None: the start of a fresh run (progress 0)
    step: int | None


@dataclass(frozen=True)
class EpochRecord:
    """One validated epoch of the history: its last validation's step, time and metrics."""

    epoch: int
    step: int | None
    t: float | None
    metrics: Metrics


@dataclass(frozen=True)
class TrainingState:
    seq: int = 0
    epoch: int | None = None
    step: int | None = None
    max_epochs: int | None = None
    metrics: Metrics = ()
    monitor: str | None = None
    mode: str | None = None
    best_score: float | None = None
    best_checkpoint: str | None = None
    last_checkpoint: str | None = None
    # top_k: best first; known_checkpoints remembers epoch/step of every checkpoint still listed.
    top_k: tuple[CheckpointRef, ...] = ()
    known_checkpoints: tuple[CheckpointRef, ...] = ()
    early_stopped: EarlyStop | None = None
    test_metrics: Metrics | None = None
    finished: bool = False
    last_event_time: str | None = None
    attempt: int | None = None
    world_size: int | None = None
    resumed_from: str | None = None  # the checkpoint the trainer restored (Lightning's resolved path)
    precision: str | None = None  # Lightning's precision as used (fp16 asked on a CPU trains in 32-true)
    error: ErrorInfo | None = None
    skipped_lines: int = 0
    started_count: int = 0
    steps_per_epoch: float | None = None
    samples: tuple[Sample, ...] = ()  # recent progress samples of the current attempt
    event_times: tuple[float, ...] = ()  # recent event times of the current attempt
    last_validation: Sample | None = None
    position: Sample | None = None  # where training last was: the latest progress or validation
    history: tuple[EpochRecord, ...] = ()  # ascending epochs, at most MAX_HISTORY
    # Which log this state folds: the time of its first event (a log started again has another).
    log_start: str | None = None
    log_restarts: int = 0  # how many earlier logs of the same path the status has replaced


# -- value hygiene ---------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    """A finite float, or None (NaN, infinities, non-numbers, bools)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _int(value: Any) -> int | None:
    """A non-negative integer (epochs, steps, attempts: the CRD rejects negatives), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


def _text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    s = value if isinstance(value, str) else str(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _path(value: Any) -> str | None:
    return _text(value, MAX_PATH) if isinstance(value, str) and value else None


def _metrics(value: Any) -> Metrics:
    """Numeric metrics, names sorted; non-finite values become None, non-numbers are dropped."""
    if not isinstance(value, Mapping):
        return ()
    out: dict[str, float | None] = {}
    for k, v in value.items():
        if len(out) >= MAX_METRICS:
            break
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[_text(k, MAX_NAME) or ""] = _number(v)
    return tuple(sorted(out.items()))


def parse_time(value: str | None) -> float | None:
    """Seconds since the epoch from an RFC 3339 time, or None."""
    if not value:
        return None
    try:
        t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    ts = t.timestamp()
    return ts if 0 <= ts < MAX_TIMESTAMP else None  # garbage years would break formatting


def format_time(t: float) -> str:
    return (_dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"))


# -- the fold ----------------------------------------------------------------------------------------
def fold(events: Iterable[Event], prior: TrainingState | None = None) -> TrainingState:
    """The state after applying ``events`` (any order) to ``prior``; seqs at or below its seq are ignored."""
    state = prior or TrainingState()
    by_seq: dict[int, Event] = {}
    for e in events:
        if e.seq > state.seq:
            by_seq.setdefault(e.seq, e)  # a duplicate seq within a batch: the first one wins
    for seq in sorted(by_seq):
        state = _apply(state, by_seq[seq])
    return state


def _better(mode: str | None, a: float, b: float) -> bool:
    return a > b if mode == "max" else a < b


def _sort_top_k(refs: Iterable[CheckpointRef], mode: str | None) -> tuple[CheckpointRef, ...]:
    sign = -1.0 if mode == "max" else 1.0
    # Best first; unscored last; path breaks ties so the order is deterministic.
    return tuple(sorted(refs, key=lambda r: (r.score is None, sign * (r.score or 0.0), r.path)))


def _apply(s: TrainingState, e: Event) -> TrainingState:
    t = parse_time(e.time)
    times = s.event_times
    if t is not None:
        times = (times + (t,))[-INTERVAL_WINDOW:]
    # Normalized: the CRD validates date-time, and a bad time must not block the status write.
    s = dataclasses.replace(s, seq=e.seq, last_event_time=format_time(t) if t is not None else s.last_event_time,
                            event_times=times,
                            log_start=s.log_start if s.seq else (format_time(t) if t is not None else None))
    handler = _HANDLERS.get(e.type)
    return handler(s, e, t) if handler else s


def _on_started(s: TrainingState, e: Event, t: float | None) -> TrainingState:
    max_epochs = _int(e.get("max_epochs"))
    resumed = _path(e.get("resumed_from"))
    mode, precision = e.get("mode"), e.get("precision")
    # A new attempt: rates and intervals restart (the gap between attempts is not training speed).
    samples = (Sample(t, None, 0),) if t is not None and resumed is None else ()
    return dataclasses.replace(
        s,
        attempt=_int(e.get("attempt")),
        world_size=_int(e.get("world_size")),
        resumed_from=resumed,
        precision=_text(precision, MAX_NAME) if isinstance(precision, str) and precision else None,
        max_epochs=max_epochs if max_epochs is not None and max_epochs > 0 else None,
        monitor=_text(e.get("monitor"), MAX_NAME) or s.monitor,
        mode=mode if mode in ("min", "max") else s.mode,
        started_count=s.started_count + 1,
        finished=False,
        samples=samples,
        event_times=(t,) if t is not None else (),
    )


def _on_progress(s: TrainingState, e: Event, t: float | None) -> TrainingState:
    """A step within an epoch: the step and the progress curve move; the epoch and its metrics stay
    those of the last validation."""
    epoch, step, spe = _int(e.get("epoch")), _int(e.get("step")), _int(e.get("steps_per_epoch"))
    if step is None:
        return s
    spe = spe if spe is not None and spe > 0 else s.steps_per_epoch
    if not spe:  # without the epoch's length a step says nothing about how far training is
        return dataclasses.replace(s, step=step)
    sample = Sample(t if t is not None else 0.0, epoch, step)
    return dataclasses.replace(
        s,
        step=step,
        steps_per_epoch=spe,
        samples=(s.samples + (sample,))[-RATE_WINDOW:] if t is not None else s.samples,
        position=sample,
    )


def _history_metrics(metrics: Metrics, monitor: str | None) -> Metrics:
    named = [(k, v) for k, v in metrics if len(k) <= MAX_HISTORY_NAME]
    named.sort(key=lambda kv: kv[0] != monitor)  # stable: the monitored metric first, the rest by name
    return tuple(sorted(named[:MAX_HISTORY_METRICS]))


def _with_epoch(history: tuple[EpochRecord, ...], record: EpochRecord) -> tuple[EpochRecord, ...]:
    """The history with ``record`` as its newest epoch. An epoch validated again (a second validation
    within it, or a restarted gang repeating it) replaces its entry, and entries of later epochs go:
    they belong to the run the restart abandoned, and the new run records them again."""
    return (tuple(h for h in history if h.epoch < record.epoch) + (record,))[-MAX_HISTORY:]


def _on_validation(s: TrainingState, e: Event, t: float | None) -> TrainingState:
    epoch, step = _int(e.get("epoch")), _int(e.get("step"))
    metrics = _metrics(e.get("metrics"))
    spe = s.steps_per_epoch
    prev = s.last_validation
    # The last validation of an epoch ends it: its step over the epochs done so far is the
    # epoch length (exact for end-of-epoch validation, which is Lightning's default).
    if (prev is not None and prev.epoch is not None and prev.step is not None and epoch is not None
            and epoch > prev.epoch and prev.step > 0):
        spe = prev.step / (prev.epoch + 1)
    sample = Sample(t if t is not None else 0.0, epoch, step)
    samples = (s.samples + (sample,))[-RATE_WINDOW:] if t is not None else s.samples
    early = s.early_stopped
    if early is not None and early.epoch is not None and epoch is not None and epoch > early.epoch:
        early = None  # training went on past the stop (e.g. resumed with more patience)
    return dataclasses.replace(
        s,
        epoch=epoch if epoch is not None else s.epoch,
        step=step if step is not None else s.step,
        metrics=metrics,
        steps_per_epoch=spe,
        samples=samples,
        last_validation=sample,
        position=sample,
        early_stopped=early,
        history=s.history if epoch is None else _with_epoch(
            s.history, EpochRecord(epoch, step, t, _history_metrics(metrics, s.monitor))),
    )


def _on_checkpoint(s: TrainingState, e: Event, t: float | None) -> TrainingState:
    path = _path(e.get("path"))
    epoch, step = _int(e.get("epoch")), _int(e.get("step"))
    known = {r.path: r for r in s.known_checkpoints}
    if path is not None:
        known.pop(path, None)  # newest last
        known[path] = CheckpointRef(path, _number(e.get("score")), epoch, step)
    top_k = s.top_k
    listed = e.get("top_k")
    if isinstance(listed, list):
        refs: dict[str, CheckpointRef] = {}
        for item in listed:
            if not isinstance(item, Mapping) or _path(item.get("path")) is None:
                continue
            p = _path(item.get("path"))
            assert p is not None
            k = known.get(p)
            refs[p] = CheckpointRef(p, _number(item.get("score")), k.epoch if k else None, k.step if k else None)
        top_k = _sort_top_k(refs.values(), s.mode)[:MAX_TOP_K]
        # Remember only what can still be listed: the top-k and the newest checkpoint.
        keep = {r.path for r in top_k} | ({path} if path else set())
        known = {p: r for p, r in known.items() if p in keep}
    # Bounded whatever the trainer writes (checkpoints that never come with a top-k list): the listed
    # top-k and the newest MAX_TOP_K others.
    listed_paths = {r.path for r in top_k}
    unlisted = [p for p in known if p not in listed_paths]
    for p in unlisted[:-MAX_TOP_K]:
        del known[p]
    best_path = _path(e.get("best_path"))
    best_score = _number(e.get("best_score"))
    if best_path is None and top_k:
        best_path, best_score = top_k[0].path, top_k[0].score
    return dataclasses.replace(
        s,
        epoch=epoch if epoch is not None else s.epoch,
        step=step if step is not None else s.step,
        last_checkpoint=path or s.last_checkpoint,
        top_k=top_k,
        known_checkpoints=tuple(known.values()),
        best_checkpoint=best_path or s.best_checkpoint,
        best_score=best_score if best_path else s.best_score,
    )


def _on_early_stopped(s: TrainingState, e: Event, t: float | None) -> TrainingState:
    epoch = _int(e.get("epoch"))
    monitor = _text(e.get("monitor"), MAX_NAME) or s.monitor
    stop = EarlyStop(epoch=epoch, reason=_text(e.get("reason"), MAX_MESSAGE),
                     message=_text(e.get("message"), MAX_MESSAGE), best_score=_number(e.get("best_score")),
                     monitor=monitor)
    return dataclasses.replace(s, early_stopped=stop, epoch=epoch if epoch is not None else s.epoch,
                               monitor=monitor)


def _on_fit_end(s: TrainingState, e: Event, t: float | None) -> TrainingState:
    epoch, step = _int(e.get("epoch")), _int(e.get("step"))
    best_path = _path(e.get("best_path"))
    return dataclasses.replace(
        s,
        finished=True,
        epoch=epoch if epoch is not None else s.epoch,
        step=step if step is not None else s.step,
        best_checkpoint=best_path or s.best_checkpoint,
        best_score=_number(e.get("best_score")) if best_path else s.best_score,
    )


def _on_test(s: TrainingState, e: Event, t: float | None) -> TrainingState:
    return dataclasses.replace(s, test_metrics=_metrics(e.get("metrics")))


def _on_error(s: TrainingState, e: Event, t: float | None) -> TrainingState:
    exc = e.get("exception")
    return dataclasses.replace(s, error=ErrorInfo(message=_text(e.get("message"), MAX_MESSAGE) or "",
                                                  exception=_text(exc, MAX_NAME) if isinstance(exc, str) and exc
                                                  else None))


_HANDLERS = {
    ev.STARTED: _on_started,
    ev.PROGRESS: _on_progress,
    ev.VALIDATION: _on_validation,
    ev.CHECKPOINT: _on_checkpoint,
    ev.EARLY_STOPPED: _on_early_stopped,
    ev.FIT_END: _on_fit_end,
    ev.TEST: _on_test,
    ev.ERROR: _on_error,
}


def with_skipped(state: TrainingState, skipped: int) -> TrainingState:
    """The state with the reader's count of skipped lines (the fold sees only valid events)."""
    return state if state.skipped_lines == skipped else dataclasses.replace(state, skipped_lines=skipped)


# -- derived values ------------------------------------------------------------------------------------
def _fraction(s: TrainingState, sample: Sample) -> float | None:
    """How far (0..1) training was at a sample, from steps when the epoch length is known, else epochs."""
    if s.max_epochs is None:
        return None
    if sample.epoch is None:
        return 0.0
    if s.steps_per_epoch and sample.step is not None:
        f = sample.step / (s.steps_per_epoch * s.max_epochs)
    else:
        f = (sample.epoch + 1) / s.max_epochs
    return min(max(f, 0.0), 1.0)


def progress(s: TrainingState) -> float | None:
    """Percent done (0..100), or None while unknown."""
    if s.finished:
        return 100.0
    if s.position is None:
        return 0.0 if s.max_epochs is not None else None
    f = _fraction(s, s.position)
    return None if f is None else round(100.0 * f, 1)


def eta_seconds(s: TrainingState, now: float) -> int | None:
    """Seconds left at the recent rate of validation events, or None while unknown."""
    if s.finished:
        return 0
    if len(s.samples) < 2:
        return None
    first, last = s.samples[0], s.samples[-1]
    f0, f1 = _fraction(s, first), _fraction(s, last)
    if f0 is None or f1 is None or last.t <= first.t or f1 <= f0:
        return None
    rate = (f1 - f0) / (last.t - first.t)
    left = (1.0 - f1) / rate - max(0.0, now - last.t)
    return max(0, int(round(left)))


def mean_event_interval(s: TrainingState) -> float | None:
    """Mean seconds between recent bursts of events (a validation and its checkpoints are one)."""
    bursts: list[float] = []
    for t in sorted(s.event_times):
        if not bursts or t - bursts[-1] >= BURST_SECONDS:
            bursts.append(t)
    if len(bursts) < 2:
        return None
    return round((bursts[-1] - bursts[0]) / (len(bursts) - 1), 3)


def _metrics_dict(m: Metrics) -> dict[str, float | None]:
    return {k: v for k, v in m}


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.{DISPLAY_DIGITS}g}"


def display(state: TrainingState) -> dict[str, str]:
    """What a person reads in `kubectl get` and `kubectl describe`: printer columns cannot format numbers."""
    out: dict[str, str] = {}
    epochs = [e for e in (state.epoch, state.position.epoch if state.position else None) if e is not None]
    if epochs:
        # The epoch in progress or last finished, counted from 1 as users do (Lightning's index is 0-based).
        out["epoch"] = str(max(epochs) + 1) + (f"/{state.max_epochs}" if state.max_epochs else "")
    if state.best_score is not None:
        out["best"] = (f"{state.monitor}=" if state.monitor else "") + _shown(state.best_score)
    if state.best_checkpoint:
        out["bestCheckpoint"] = posixpath.basename(state.best_checkpoint) or state.best_checkpoint
    for key, metrics in (("metrics", state.metrics), ("testMetrics", state.test_metrics)):
        if metrics:
            # A string keeps names such as lr-AdamW as logged: kubectl describe re-spells map keys ("Lr - Adam W").
            out[key] = _text(", ".join(f"{k}={_shown(v)}" for k, v in metrics), MAX_DISPLAY) or ""
    return out


def to_status(state: TrainingState, now: float) -> dict[str, Any]:
    """The ``status.training`` object; absent values are left out (never null at the top level)."""
    out: dict[str, Any] = {
        "seq": state.seq,
        "epoch": state.epoch,
        "step": state.step,
        "maxEpochs": state.max_epochs,
        "progress": progress(state),
        "etaSeconds": eta_seconds(state, now),
        "metrics": _metrics_dict(state.metrics),
        "monitor": state.monitor,
        "mode": state.mode,
        "bestScore": state.best_score,
        "bestCheckpoint": state.best_checkpoint,
        "lastCheckpoint": state.last_checkpoint,
        "topK": [{k: v for k, v in (("path", r.path), ("score", r.score), ("epoch", r.epoch),
                                    ("step", r.step)) if v is not None} for r in state.top_k],
        "testMetrics": _metrics_dict(state.test_metrics) if state.test_metrics is not None else None,
        "finished": state.finished,
        "lastEventTime": state.last_event_time,
        "eventIntervalSeconds": mean_event_interval(state),
        "attempt": state.attempt,
        "worldSize": state.world_size,
        "resumedFrom": state.resumed_from,
        "precision": state.precision,
        "skippedLines": state.skipped_lines,
        "startedCount": state.started_count,
        "logStartTime": state.log_start,
        "logRestarts": state.log_restarts,
        "updateTime": format_time(now),
        "display": display(state) or None,
        "history": [{k: v for k, v in (("epoch", h.epoch), ("step", h.step),
                                       ("time", format_time(h.t) if h.t is not None else None),
                                       ("metrics", _metrics_dict(h.metrics))) if v is not None}
                    for h in state.history] or None,
    }
    if state.early_stopped is not None:
        es = state.early_stopped
        out["earlyStopped"] = {k: v for k, v in (("epoch", es.epoch), ("reason", es.reason),
                                                 ("message", es.message), ("bestScore", es.best_score),
                                                 ("monitor", es.monitor)) if v is not None}
    if state.error is not None:
        out["error"] = {"message": state.error.message, **({"exception": state.error.exception}
                                                           if state.error.exception else {})}
    return {k: v for k, v in out.items() if v is not None}


def _trainer_metrics(state: TrainingState) -> list[dict[str, str]]:
    """The latest validation metrics, then the test metrics, as TrainerStatus metrics: finite values
    only (a string cannot say null) and names that fit its limit; a test metric named like a validation
    metric replaces it."""
    out: dict[str, str] = {}
    for name, value in state.metrics + (state.test_metrics or ()):
        if value is None or not 0 < len(name) <= TRAINER_METRIC_TEXT:
            out.pop(name, None)
            continue
        out[name] = repr(value)  # the shortest text that reads back as the same float (at most 24 characters)
    return [{"name": k, "value": v} for k, v in out.items()][:TRAINER_METRICS]


def trainer_status(state: TrainingState, now: float) -> dict[str, Any]:
    """``status.trainerStatus``: the fields, types and limits of Kubeflow Trainer's TrainJob
    ``TrainerStatus``, from the same state as ``to_status``, so tools written for TrainJob progress read
    ltj jobs unchanged. ``lastUpdatedTime`` is always set (TrainJob's CRD requires it)."""
    out: dict[str, Any] = {"lastUpdatedTime": _dt.datetime.fromtimestamp(int(now), _dt.timezone.utc)
                           .strftime("%Y-%m-%dT%H:%M:%SZ")}  # metav1.Time: whole seconds
    percent = progress(state)
    if percent is not None:
        # Whole percent, rounded down: 100 means the trainer reported the end, never almost done.
        out["progressPercentage"] = 100 if state.finished else min(99, max(0, int(percent)))
    eta = eta_seconds(state, now)
    if eta is not None:
        out["estimatedRemainingSeconds"] = min(eta, INT32_MAX)
    metrics = _trainer_metrics(state)
    if metrics:
        out["metrics"] = metrics
    return out
