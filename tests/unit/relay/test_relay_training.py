"""status.training as a fold of event sequences: progress, ETA, top-k, early stop, resume, replay."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from ltj_operator import training as tr
from ltj_api import events as ev
from ltj_api.events import Event

pytestmark = pytest.mark.unit

CRD = Path(__file__).resolve().parents[3] / "crds" / "ltj.dev_lightningtrainingjobs.yaml"

T0 = tr.parse_time("2025-01-01T00:00:00Z")
assert T0 is not None


class Log:
    """Builds events the way the trainer writes them: seq continues, time in RFC 3339."""

    def __init__(self, seq: int = 0):
        self.seq = seq
        self.events: list[Event] = []

    def add(self, at: float, type_: str, **fields: Any) -> Event:
        self.seq += 1
        e = Event(seq=self.seq, time=tr.format_time(T0 + at), type=type_, fields=fields)
        self.events.append(e)
        return e

    def started(self, at: float, attempt: int = 0, resumed_from: str | None = None, max_epochs: int = 10,
                mode: str = "min", precision: str = "32-true") -> Event:
        return self.add(at, ev.STARTED, world_size=2, num_nodes=2, devices=1, precision=precision,
                        accelerator="cpu", sync_batchnorm=False, resumed_from=resumed_from, attempt=attempt,
                        max_epochs=max_epochs, monitor="val_loss", mode=mode, model_class="digits_cnn",
                        data_class="digits")

    def epoch(self, at: float, epoch: int, loss: float, steps_per_epoch: int = 20, top_k: int = 3,
              mode: str = "min") -> None:
        """One epoch's validation, its top-k checkpoint (when it made the cut) and the last checkpoint."""
        step = (epoch + 1) * steps_per_epoch
        self.add(at, ev.VALIDATION, epoch=epoch, step=step, metrics={"val_loss": loss, "val_acc": 1 - loss})
        path = f"/output/checkpoints/m_epoch={epoch:02d}-val_loss={loss:.2f}.ckpt"
        self.scores[path] = loss
        best = sorted(self.scores.items(), key=lambda kv: kv[1], reverse=(mode == "max"))[:top_k]
        self.scores = dict(best)
        listed = [{"path": p, "score": s} for p, s in best]
        if path in self.scores:
            self.add(at + 0.1, ev.CHECKPOINT, path=path, score=loss, epoch=epoch, step=step, kind="top_k",
                     top_k=listed, best_path=best[0][0], best_score=best[0][1])
        self.add(at + 0.2, ev.CHECKPOINT, path="/output/checkpoints/last.ckpt", score=loss, epoch=epoch,
                 step=step, kind="last", top_k=listed, best_path=best[0][0], best_score=best[0][1])

    scores: dict[str, float] = {}


@pytest.fixture(autouse=True)
def _fresh_scores() -> None:
    Log.scores = {}


def status(state: tr.TrainingState, at: float) -> dict[str, Any]:
    out = tr.to_status(state, T0 + at)
    json.dumps(out, allow_nan=False)  # JSON and Kubernetes friendly, or this raises
    return out


def test_empty_state() -> None:
    s = tr.fold([])
    out = status(s, 0)
    assert out["seq"] == 0
    assert out["finished"] is False
    assert "progress" not in out and "etaSeconds" not in out and "earlyStopped" not in out


def test_a_full_run() -> None:
    log = Log()
    log.started(0, max_epochs=4)
    for i, loss in enumerate([0.9, 0.7, 0.8, 0.6]):
        log.epoch(10 + 10 * i, i, loss)
    log.add(50, ev.FIT_END, epoch=4, step=80, best_path=log.events[-1].get("best_path"), best_score=0.6,
            stopped_early=False)
    log.add(51, ev.TEST, metrics={"test_loss": 0.61, "test_acc": 0.93}, ckpt_path="best")

    # Intermediate: after epoch 1 (second validation).
    mid = tr.fold([e for e in log.events if e.seq <= 7])
    out = status(mid, 21)
    assert out["epoch"] == 1 and out["step"] == 40 and out["maxEpochs"] == 4
    assert out["progress"] == 50.0
    assert out["metrics"] == {"val_acc": pytest.approx(0.3), "val_loss": 0.7}
    assert out["bestScore"] == 0.7
    assert out["bestCheckpoint"].endswith("epoch=01-val_loss=0.70.ckpt")
    assert out["lastCheckpoint"] == "/output/checkpoints/last.ckpt"
    assert out["monitor"] == "val_loss" and out["mode"] == "min"
    # 50% in 20 s from the start: 20 s left at the last validation, 1 s ago.
    assert out["etaSeconds"] == 19
    assert out["finished"] is False
    assert out["attempt"] == 0 and out["startedCount"] == 1 and "resumedFrom" not in out
    assert out["worldSize"] == 2

    final = tr.fold(log.events)
    out = status(final, 60)
    assert out["seq"] == log.seq
    assert out["finished"] is True and out["progress"] == 100.0 and out["etaSeconds"] == 0
    assert out["testMetrics"] == {"test_acc": 0.93, "test_loss": 0.61}
    assert [k["score"] for k in out["topK"]] == [0.6, 0.7, 0.8]
    assert [k["epoch"] for k in out["topK"]] == [3, 1, 2]
    assert all(k["step"] == (k["epoch"] + 1) * 20 for k in out["topK"])
    assert out["bestCheckpoint"] == out["topK"][0]["path"]
    assert out["lastEventTime"] == log.events[-1].time
    # Bursts every 10 s (validation + checkpoints), then fit_end and test within 2 s of each other.
    assert out["eventIntervalSeconds"] == pytest.approx(10.0)


def test_top_k_is_pruned_to_the_latest_listing_and_sorted_for_max_mode() -> None:
    log = Log()
    log.started(0, max_epochs=6, mode="max")
    for i, acc in enumerate([0.5, 0.6, 0.55, 0.7, 0.65]):
        log.epoch(10 * (i + 1), i, acc, top_k=2, mode="max")
    s = tr.fold(log.events)
    top = status(s, 60)["topK"]
    assert [k["score"] for k in top] == [0.7, 0.65]
    assert [k["epoch"] for k in top] == [3, 4]
    # Only what can still be listed is remembered (bounded state on long runs).
    assert {r.path for r in s.known_checkpoints} <= {r.path for r in s.top_k} | {s.last_checkpoint}


def test_resumed_run_continues_seq_and_keeps_history() -> None:
    log = Log()
    log.started(0, max_epochs=5)
    log.epoch(10, 0, 0.9)
    log.epoch(20, 1, 0.8)
    before = tr.fold(log.events)
    # The pod died; the gang restarted and resumed from last.ckpt. The seq continues.
    log.started(100, attempt=1, resumed_from="/output/checkpoints/last.ckpt", max_epochs=5)
    restarted = tr.fold(log.events[before.seq:], before)
    out = status(restarted, 101)
    assert out["seq"] == before.seq + 1
    assert out["attempt"] == 1 and out["startedCount"] == 2
    assert out["resumedFrom"] == "/output/checkpoints/last.ckpt"
    assert out["epoch"] == 1 and out["bestScore"] == 0.8  # history is kept across the restart
    assert out["progress"] == 40.0
    assert "etaSeconds" not in out  # the rate restarts with the attempt: the downtime is not speed
    log.epoch(110, 2, 0.7)
    log.epoch(120, 3, 0.6)
    out = status(tr.fold(log.events), 120)
    assert out["epoch"] == 3 and out["progress"] == 80.0
    assert out["etaSeconds"] == 10  # 20% per 10 s in this attempt


def test_a_sigterm_restart_names_the_checkpoint_really_restored_and_the_precision_used() -> None:
    log = Log()
    # fp16 asked for on CPU: the trainer's started event carries what Lightning trains in.
    log.started(0, max_epochs=5, precision="32-true")
    log.epoch(10, 0, 0.9)
    log.epoch(20, 1, 0.8)
    sigterm = "/output/checkpoints/sigterm.ckpt"
    log.add(25, ev.CHECKPOINT, path=sigterm, score=None, epoch=2, step=50, kind="sigterm",
            top_k=[{"path": p, "score": v} for p, v in Log.scores.items()], best_path=None, best_score=None)
    # Lightning's fit(ckpt_path="last") chose sigterm.ckpt, newer than last.ckpt: the event names it.
    log.started(100, attempt=1, resumed_from=sigterm, max_epochs=5, precision="32-true")
    log.epoch(110, 2, 0.7)
    whole = tr.fold(log.events)
    out = status(whole, 111)
    assert out["resumedFrom"] == sigterm and out["precision"] == "32-true"
    # Later saves move lastCheckpoint (where a next attempt resumes), not what this run restored.
    assert out["lastCheckpoint"] == "/output/checkpoints/last.ckpt" and out["attempt"] == 1
    # Idempotent by seq: re-delivering the first attempt's start, or everything, changes nothing.
    assert tr.fold(log.events[:1], whole) == whole and tr.fold(log.events, whole) == whole
    assert tr.fold(log.events[5:], tr.fold(log.events[:8])) == whole


def test_a_fresh_start_has_no_resumed_from_and_bf16_shows_as_lightning_names_it() -> None:
    log = Log()
    log.started(0, precision="bf16-mixed")
    out = status(tr.fold(log.events), 1)
    assert "resumedFrom" not in out and out["precision"] == "bf16-mixed"


def test_every_status_field_is_declared_in_the_crd() -> None:
    """The API server prunes undeclared status fields silently: all that to_status writes must be in the schema."""
    crd = yaml.safe_load(CRD.read_text())
    declared = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
        "training"]["properties"]
    log = Log()
    log.started(0, max_epochs=4, precision="16-mixed")
    log.epoch(10, 0, 0.9)
    log.started(20, attempt=1, resumed_from="/output/checkpoints/last.ckpt")
    log.epoch(30, 1, 0.8)
    log.add(31, ev.EARLY_STOPPED, epoch=1, reason="patience", message="m", best_score=0.8, monitor="val_loss")
    log.add(32, ev.FIT_END, epoch=1, step=40, best_path=None, best_score=None, stopped_early=True)
    log.add(33, ev.TEST, metrics={"test_loss": 0.8})
    log.add(34, ev.ERROR, message="late", exception="RuntimeError")
    out = status(tr.with_skipped(tr.fold(log.events), 1), 40)
    assert set(out) <= set(declared), f"the API server would drop {sorted(set(out) - set(declared))}"
    assert {"resumedFrom", "precision", "earlyStopped", "error", "testMetrics", "skippedLines"} <= set(out)
    assert set(out["display"]) == set(declared["display"]["properties"])


def test_display_rounds_counts_epochs_from_1_and_keeps_metric_names() -> None:
    """The strings `kubectl get` and `kubectl describe` show; the numeric fields keep the full values."""
    log = Log()
    log.started(0, max_epochs=12)
    log.add(1, ev.PROGRESS, epoch=0, step=1, batch=1, batches=20, steps_per_epoch=20)
    assert status(tr.fold(log.events), 1)["display"] == {"epoch": "1/12"}  # Lightning's epoch 0 is the first
    # LearningRateMonitor's lr-AdamW: kubectl describe would show a key of the metrics map as "Lr - Adam W".
    log.add(10, ev.VALIDATION, epoch=0, step=20,
            metrics={"val_loss": 0.031234567, "lr-AdamW": 0.001, "trainLoss": 1234567.0, "val_acc": math.nan})
    best = "/output/checkpoints/m_epoch=00-val_loss=0.03.ckpt"
    log.add(11, ev.CHECKPOINT, path=best, score=0.031234567, epoch=0, step=20, kind="top_k",
            top_k=[{"path": best, "score": 0.031234567}], best_path=best, best_score=0.031234567)
    log.add(11.1, ev.CHECKPOINT, path="/output/checkpoints/last.ckpt", score=0.031234567, epoch=0, step=20,
            kind="last", top_k=[{"path": best, "score": 0.031234567}], best_path=best, best_score=0.031234567)
    out = status(tr.fold(log.events), 12)
    assert out["display"] == {"epoch": "1/12", "best": "val_loss=0.03123", "bestCheckpoint": "m_epoch=00-val_loss=0.03.ckpt",
                              "metrics": "lr-AdamW=0.001, trainLoss=1.235e+06, val_acc=n/a, val_loss=0.03123"}
    assert out["bestScore"] == 0.031234567 and out["bestCheckpoint"] == best
    assert out["metrics"]["lr-AdamW"] == 0.001 and out["lastCheckpoint"] == "/output/checkpoints/last.ckpt"
    log.add(20, ev.PROGRESS, epoch=1, step=25, batch=5, batches=20, steps_per_epoch=20)
    assert status(tr.fold(log.events), 20)["display"]["epoch"] == "2/12"  # the epoch in progress
    log.add(30, ev.FIT_END, epoch=11, step=240, best_path=best, best_score=0.031234567, stopped_early=False)
    log.add(31, ev.TEST, metrics={"test_acc": 0.987654})
    out = status(tr.fold(log.events), 31)
    assert (out["display"]["epoch"], out["display"]["testMetrics"]) == ("12/12", "test_acc=0.9877")


def test_display_without_an_epoch_limit_or_monitor_and_bounded() -> None:
    log = Log()
    log.add(0, ev.VALIDATION, epoch=2, step=30, metrics={f"metric_{i:03d}_{'x' * 200}": i for i in range(64)})
    log.add(1, ev.CHECKPOINT, path="/output/a.ckpt", epoch=2, step=30, best_path="/output/a.ckpt", best_score=2.5)
    out = status(tr.fold(log.events), 2)
    assert (out["display"]["epoch"], out["display"]["best"]) == ("3", "2.5")
    assert len(out["display"]["metrics"]) <= tr.MAX_DISPLAY


def test_early_stop() -> None:
    log = Log()
    log.started(0, max_epochs=10)
    for i, loss in enumerate([0.5, 0.6, 0.7, 0.8]):
        log.epoch(10 * (i + 1), i, loss)
    log.add(41, ev.EARLY_STOPPED, epoch=3, reason="patience",
            message="Monitored metric val_loss did not improve in the last 3 records. Best score: 0.500.",
            best_score=0.5, monitor="val_loss")
    s = tr.fold(log.events)
    out = status(s, 41)
    assert out["earlyStopped"] == {"epoch": 3, "reason": "patience", "bestScore": 0.5, "monitor": "val_loss",
                                   "message": log.events[-1].get("message")}
    assert out["finished"] is False  # fit_end not seen yet
    log.add(42, ev.FIT_END, epoch=4, step=80, best_path=s.best_checkpoint, best_score=0.5, stopped_early=True)
    out = status(tr.fold(log.events), 43)
    assert out["finished"] is True and out["progress"] == 100.0
    assert out["earlyStopped"]["epoch"] == 3
    # A later restart (e.g. SIGKILL right after the stop) does not forget that it stopped.
    log.started(60, attempt=1, resumed_from="/output/checkpoints/last.ckpt")
    out = status(tr.fold(log.events), 61)
    assert out["earlyStopped"]["epoch"] == 3
    assert out["finished"] is False


def test_training_past_an_early_stop_clears_it() -> None:
    log = Log()
    log.started(0, max_epochs=10)
    log.epoch(10, 0, 0.5)
    log.add(11, ev.EARLY_STOPPED, epoch=0, reason="stopping_threshold", message="m", best_score=0.5)
    log.started(20, attempt=1, resumed_from="/output/checkpoints/last.ckpt")
    log.epoch(30, 1, 0.4)
    assert "earlyStopped" not in status(tr.fold(log.events), 30)


def test_replay_is_idempotent_and_order_independent() -> None:
    log = Log()
    log.started(0, max_epochs=3)
    for i in range(3):
        log.epoch(10 * (i + 1), i, 1.0 / (i + 1))
    log.add(31, ev.FIT_END, epoch=3, step=60, best_path=None, best_score=None, stopped_early=False)
    whole = tr.fold(log.events)
    assert tr.fold(log.events, whole) == whole  # folding twice changes nothing
    assert tr.fold(list(reversed(log.events))) == whole  # out of order within a batch
    # Overlapping batches, each re-delivering events already applied.
    s = tr.TrainingState()
    for lo in range(0, len(log.events), 3):
        s = tr.fold(log.events[max(0, lo - 4): lo + 3], s)
    assert s == whole
    assert status(s, 40) == status(whole, 40)


def test_stale_events_never_move_status_backwards() -> None:
    log = Log()
    log.started(0, max_epochs=3)
    log.epoch(10, 0, 0.9)
    log.epoch(20, 1, 0.5)
    s = tr.fold(log.events)
    stale = Event(seq=2, time=tr.format_time(T0 + 25), type=ev.VALIDATION,
                  fields={"epoch": 0, "step": 1, "metrics": {"val_loss": 99.0}})
    assert tr.fold([stale], s) == s
    # Duplicate seq inside one batch: the first wins, deterministically.
    a = Event(seq=s.seq + 1, time=log.events[-1].time, type=ev.VALIDATION,
              fields={"epoch": 2, "step": 60, "metrics": {"val_loss": 0.1}})
    b = Event(seq=s.seq + 1, time=log.events[-1].time, type=ev.VALIDATION,
              fields={"epoch": 2, "step": 60, "metrics": {"val_loss": 0.2}})
    assert tr.fold([a, b], s).metrics == (("val_loss", 0.1),)


def test_no_nan_or_infinity_anywhere() -> None:
    log = Log()
    log.started(0, max_epochs=2)
    log.add(5, ev.VALIDATION, epoch=0, step=10, metrics={"val_loss": math.nan, "val_acc": math.inf,
                                                          "lr": -math.inf, "ok": 0.5, "note": "text"})
    log.add(6, ev.CHECKPOINT, path="/output/a.ckpt", score=math.nan, epoch=0, step=10, kind="top_k",
            top_k=[{"path": "/output/a.ckpt", "score": math.nan}], best_path="/output/a.ckpt", best_score=math.nan)
    log.add(7, ev.EARLY_STOPPED, epoch=0, reason="non_finite",
            message="Monitored metric val_loss = nan is not finite.", best_score=math.inf)
    log.add(8, ev.TEST, metrics={"test_loss": math.nan})
    out = status(tr.fold(log.events), 9)
    assert out["metrics"] == {"val_loss": None, "val_acc": None, "lr": None, "ok": 0.5}
    assert "bestScore" not in out
    assert out["topK"] == [{"path": "/output/a.ckpt", "epoch": 0, "step": 10}]
    assert out["earlyStopped"] == {"epoch": 0, "reason": "non_finite", "monitor": "val_loss",
                                   "message": "Monitored metric val_loss = nan is not finite."}
    assert out["testMetrics"] == {"test_loss": None}


def test_malformed_fields_are_ignored_not_fatal() -> None:
    log = Log()
    log.add(0, ev.STARTED, max_epochs="ten", attempt=None, mode="sideways", monitor=None)
    log.add(1, ev.VALIDATION, epoch="0", step=True, metrics=[1, 2])
    log.add(2, ev.CHECKPOINT, path=7, top_k="all", epoch=None)
    log.add(3, ev.ERROR, message="x" * 5000, exception="RuntimeError")
    log.add(4, ev.TEST, metrics=None)
    out = status(tr.fold(log.events), 5)
    assert out["seq"] == 5
    assert "maxEpochs" not in out and "mode" not in out and "epoch" not in out
    assert out["metrics"] == {}
    assert out["error"]["exception"] == "RuntimeError"
    assert out["error"]["message"].startswith("xxx") and len(out["error"]["message"]) <= tr.MAX_MESSAGE
    assert out["testMetrics"] == {}


def test_progress_from_steps_with_validation_inside_epochs() -> None:
    log = Log()
    log.started(0, max_epochs=2)
    # val_check_interval=0.5: two validations per 100-step epoch.
    for i, (epoch, step) in enumerate([(0, 50), (0, 100), (1, 150)]):
        log.add(10 * (i + 1), ev.VALIDATION, epoch=epoch, step=step, metrics={"val_loss": 1.0})
    s = tr.fold(log.events)
    assert s.steps_per_epoch == 100
    out = status(s, 30)
    assert out["progress"] == 75.0
    assert out["etaSeconds"] == 10


def test_progress_events_move_step_progress_and_eta_within_an_epoch() -> None:
    log = Log()
    log.started(0, max_epochs=4)
    log.add(2, ev.PROGRESS, epoch=0, step=1, batch=1, batches=50, steps_per_epoch=50)
    first = status(tr.fold(log.events), 2)
    assert (first["step"], first["progress"], "epoch" not in first) == (1, 0.5, True)
    log.add(12, ev.PROGRESS, epoch=0, step=21, batch=21, batches=50, steps_per_epoch=50)
    out = status(tr.fold(log.events), 12)
    # 10.5 % in the 12 s since the start: 89.5 % to go at that rate; the epoch stays unvalidated.
    assert (out["step"], out["progress"], out["etaSeconds"]) == (21, 10.5, 102)
    assert "epoch" not in out and out["metrics"] == {}
    # The validation closing epoch 0 takes over (its own step and metrics), and so does the next step.
    log.add(27, ev.VALIDATION, epoch=0, step=50, metrics={"val_loss": 1.0})
    log.add(28, ev.PROGRESS, epoch=1, step=60, batch=10, batches=50, steps_per_epoch=50)
    out = status(tr.fold(log.events), 28)
    assert (out["epoch"], out["step"], out["progress"], out["metrics"]) == (0, 60, 30.0, {"val_loss": 1.0})


def test_a_progress_event_without_the_epoch_length_moves_only_the_step() -> None:
    log = Log()
    log.started(0, max_epochs=4)
    log.add(5, ev.PROGRESS, epoch=0, step=7, batch=7, batches=None, steps_per_epoch=None)
    out = status(tr.fold(log.events), 5)
    assert (out["step"], out["progress"]) == (7, 0.0)


def test_error_and_unfinished_attempt() -> None:
    log = Log()
    log.started(0, max_epochs=2)
    log.add(3, ev.ERROR, message="CUDA out of memory", exception="OutOfMemoryError")
    out = status(tr.fold(log.events), 4)
    assert out["error"] == {"message": "CUDA out of memory", "exception": "OutOfMemoryError"}
    assert out["finished"] is False and out["progress"] == 0.0


def test_with_skipped() -> None:
    s = tr.fold([])
    assert tr.with_skipped(s, 0) is s
    assert status(tr.with_skipped(s, 3), 0)["skippedLines"] == 3


def test_values_the_crd_would_reject_are_left_out() -> None:
    """The CRD validates date-time and minimum 0: one bad event must not block every later write."""
    log = Log()
    log.started(0, max_epochs=-1, attempt=-2)
    log.add(1, ev.VALIDATION, epoch=-1, step=-5, metrics={"val_loss": 1.0})
    bad = Event(seq=log.seq + 1, time="yesterday", type=ev.CHECKPOINT,
                fields={"path": "/o/a.ckpt", "epoch": -3, "step": 2.0, "top_k": [{"path": "/o/a.ckpt", "score": 1}]})
    future = Event(seq=log.seq + 2, time="99999-01-01T00:00:00Z", type=ev.TEST, fields={"metrics": {}})
    far = Event(seq=log.seq + 3, time="9999-12-31T23:59:59-05:00", type=ev.ERROR, fields={"message": "m"})
    out = status(tr.fold(log.events + [bad, future, far]), 10)
    for key in ("maxEpochs", "attempt", "epoch", "progress"):
        assert key not in out, key
    assert out["step"] == 2
    assert out["topK"] == [{"path": "/o/a.ckpt", "score": 1.0, "step": 2}]
    assert out["lastEventTime"] == log.events[-1].time  # the last parseable time
    assert tr.parse_time(out["lastEventTime"]) == T0 + 1


# -- status.training.history -------------------------------------------------------------------------
def _history(state: tr.TrainingState, at: float = 1000) -> list[dict[str, Any]]:
    return status(state, at).get("history", [])


def test_history_keeps_one_entry_per_validated_epoch() -> None:
    log = Log()
    log.started(0, max_epochs=5)
    # val_check_interval=0.5: two validations in epoch 0, the epoch's entry is its last one.
    log.add(5, ev.VALIDATION, epoch=0, step=10, metrics={"val_loss": 0.95, "val_acc": 0.05})
    for i, loss in enumerate([0.9, 0.7, 0.8]):
        log.epoch(10 * (i + 1), i, loss)
    history = _history(tr.fold(log.events))
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[0] == {"epoch": 0, "step": 20, "time": tr.format_time(T0 + 10),
                          "metrics": {"val_acc": pytest.approx(0.1), "val_loss": 0.9}}
    assert [h["metrics"]["val_loss"] for h in history] == [0.9, 0.7, 0.8]
    assert "history" not in status(tr.fold(log.events[:1]), 1)  # nothing validated yet


def test_a_restart_that_repeats_epochs_replaces_their_entries() -> None:
    log = Log()
    log.started(0, max_epochs=6)
    for i, loss in enumerate([0.9, 0.8, 0.7, 0.6]):
        log.epoch(10 * (i + 1), i, loss)
    # The gang died in epoch 4 and resumed from a checkpoint of epoch 1: epochs 2 and 3 run again.
    log.started(100, attempt=1, resumed_from="/output/checkpoints/m_epoch=01.ckpt", max_epochs=6)
    log.epoch(110, 2, 0.65)
    s = tr.fold(log.events)
    # The abandoned run's epoch 3 is gone until trained again, not left beside the new epoch 2.
    assert [(h["epoch"], h["metrics"]["val_loss"]) for h in _history(s)] == [(0, 0.9), (1, 0.8), (2, 0.65)]
    log.epoch(120, 3, 0.55)
    whole = tr.fold(log.events)
    assert [(h["epoch"], h["metrics"]["val_loss"]) for h in _history(whole)] == [
        (0, 0.9), (1, 0.8), (2, 0.65), (3, 0.55)]
    # Idempotent by seq like the rest of the fold: replays and overlapping batches change nothing.
    assert tr.fold(log.events, whole) == whole
    s = tr.TrainingState()
    for lo in range(0, len(log.events), 3):
        s = tr.fold(log.events[max(0, lo - 4): lo + 3], s)
    assert s == whole


def test_history_is_bounded_in_epochs_metrics_and_names() -> None:
    log = Log()
    log.started(0, max_epochs=1000)
    long_name = "m" * (tr.MAX_HISTORY_NAME + 1)
    metrics = {**{f"a{i:02d}": float(i) for i in range(40)}, long_name: 1.0, "val_loss": 0.5, "bad": math.nan}
    for epoch in range(tr.MAX_HISTORY + 50):
        log.add(epoch, ev.VALIDATION, epoch=epoch, step=epoch + 1, metrics=metrics)
    history = _history(tr.fold(log.events))
    assert [h["epoch"] for h in history] == list(range(50, tr.MAX_HISTORY + 50))  # the newest, oldest first
    kept = history[-1]["metrics"]
    assert len(kept) == tr.MAX_HISTORY_METRICS
    assert "val_loss" in kept  # the monitored metric is kept whatever its place by name
    assert long_name not in kept
    # The whole history stays small whatever the trainer logs: every status write carries it.
    assert len(json.dumps(history)) < 200_000


def test_history_bounds_match_the_crd() -> None:
    crd = yaml.safe_load(CRD.read_text())
    history = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
        "training"]["properties"]["history"]
    assert history["maxItems"] == tr.MAX_HISTORY
    assert history["items"]["properties"]["metrics"]["maxProperties"] == tr.MAX_HISTORY_METRICS
    assert f"last {tr.MAX_HISTORY} validated epochs" in history["description"]


# -- status.trainerStatus ------------------------------------------------------------------------------
# Kubeflow Trainer's TrainJob status.trainerStatus (pkg/apis/trainer/v1alpha1/trainjob_types.go,
# TrainerStatus and Metric): names, types and limits that tools written for it rely on.
KUBEFLOW_TRAINER_STATUS = {
    "progressPercentage": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 100},
    "estimatedRemainingSeconds": {"type": "integer", "format": "int32", "minimum": 0},
    "lastUpdatedTime": {"type": "string", "format": "date-time"},
    "metrics": {"type": "array", "maxItems": 256, "x-kubernetes-list-type": "atomic"},
}
KUBEFLOW_METRIC = {"name": {"type": "string", "minLength": 1, "maxLength": 64},
                   "value": {"type": "string", "minLength": 1, "maxLength": 64}}


def test_trainer_status_schema_is_kubeflow_trainers() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
        "trainerStatus"]
    assert set(schema["properties"]) == set(KUBEFLOW_TRAINER_STATUS)
    for field, want in KUBEFLOW_TRAINER_STATUS.items():
        assert {k: v for k, v in schema["properties"][field].items() if k in want} == want, field
    item = schema["properties"]["metrics"]["items"]
    assert set(item["required"]) == {"name", "value"}
    for field, want in KUBEFLOW_METRIC.items():
        assert {k: v for k, v in item["properties"][field].items() if k in want} == want, field
    assert [r["rule"] for r in schema["x-kubernetes-validations"]] == ["has(self.lastUpdatedTime)"]


def _conforms(ts: dict[str, Any]) -> None:
    """What the TrainJob schema accepts (the API server checks the same in tests/integration/test_relay.py)."""
    assert set(ts) <= set(KUBEFLOW_TRAINER_STATUS) and "lastUpdatedTime" in ts
    assert tr.parse_time(ts["lastUpdatedTime"]) is not None and ts["lastUpdatedTime"].endswith("Z")
    for field in ("progressPercentage", "estimatedRemainingSeconds"):
        if field in ts:
            assert isinstance(ts[field], int) and 0 <= ts[field] <= tr.INT32_MAX
    assert ts.get("progressPercentage", 0) <= 100
    assert len(ts.get("metrics", [])) <= 256
    for m in ts.get("metrics", []):
        assert set(m) == {"name", "value"} and all(isinstance(v, str) and 1 <= len(v) <= 64 for v in m.values())


def test_trainer_status_maps_progress_eta_and_metrics() -> None:
    log = Log()
    log.started(0, max_epochs=3)
    assert tr.trainer_status(tr.fold(log.events), T0 + 0.9) == {
        "lastUpdatedTime": "2025-01-01T00:00:00Z", "progressPercentage": 0}  # whole seconds, like metav1.Time
    log.epoch(10, 0, 0.9)
    s = tr.fold(log.events)
    ts = tr.trainer_status(s, T0 + 11)
    _conforms(ts)
    training = status(s, 11)
    # 33.3 % rounds down to 33; the ETA is status.training's.
    assert (training["progress"], ts["progressPercentage"]) == (33.3, 33)
    assert ts["estimatedRemainingSeconds"] == training["etaSeconds"] == 19
    assert ts["metrics"] == [{"name": "val_acc", "value": repr(1 - 0.9)}, {"name": "val_loss", "value": "0.9"}]
    assert tr.parse_time(ts["lastUpdatedTime"]) == T0 + 11
    log.epoch(20, 1, 0.7)
    log.epoch(30, 2, 0.8)
    log.add(31, ev.FIT_END, epoch=2, step=60, best_path=None, best_score=None, stopped_early=False)
    log.add(32, ev.TEST, metrics={"test_loss": 0.71, "val_loss": 0.69})
    ts = tr.trainer_status(tr.fold(log.events), T0 + 33)
    _conforms(ts)
    assert (ts["progressPercentage"], ts["estimatedRemainingSeconds"]) == (100, 0)
    # Test metrics follow the validation metrics; one named like a validation metric replaces it.
    assert ts["metrics"] == [{"name": "val_acc", "value": repr(1 - 0.8)}, {"name": "val_loss", "value": "0.69"},
                             {"name": "test_loss", "value": "0.71"}]


def test_trainer_status_says_100_only_at_the_end() -> None:
    log = Log()
    log.started(0, max_epochs=1)
    log.add(10, ev.VALIDATION, epoch=0, step=20, metrics={"val_loss": 0.5})
    s = tr.fold(log.events)
    assert status(s, 11)["progress"] == 100.0  # every step done, but the trainer has not reported the end
    assert tr.trainer_status(s, T0 + 11)["progressPercentage"] == 99


def test_trainer_status_leaves_out_what_it_cannot_hold() -> None:
    log = Log()
    log.add(0, ev.VALIDATION, epoch=0, step=1, metrics={
        "nan": math.nan, "inf": math.inf, "x" * 65: 1.0, "tiny": 1.2345678901234568e-300,
        "big": -1.7976931348623157e308})
    ts = tr.trainer_status(tr.fold(log.events), T0 + 1)
    _conforms(ts)
    assert ts["metrics"] == [{"name": "big", "value": "-1.7976931348623157e+308"},
                             {"name": "tiny", "value": "1.2345678901234568e-300"}]
    assert "progressPercentage" not in ts and "estimatedRemainingSeconds" not in ts  # no maxEpochs: unknown
    # An ETA beyond int32 (a very slow start of a very long run) is capped, not rejected by the API server.
    log = Log()
    log.started(0, max_epochs=10**9)
    log.add(1, ev.PROGRESS, epoch=0, step=1, batch=1, batches=10**6, steps_per_epoch=10**6)
    ts = tr.trainer_status(tr.fold(log.events), T0 + 1)
    _conforms(ts)
    assert ts["estimatedRemainingSeconds"] == tr.INT32_MAX and ts["progressPercentage"] == 0


def test_checkpoints_remembered_are_bounded_without_top_k_lists() -> None:
    """A trainer whose checkpoint events never list the top-k: the state keeps the newest few, not every path."""
    log = Log()
    log.started(0)
    for i in range(5 * tr.MAX_TOP_K):
        log.add(1 + i, ev.CHECKPOINT, path=f"/output/checkpoints/c{i}.ckpt", score=1.0 / (i + 1), epoch=i, step=i)
    s = tr.fold(log.events)
    assert len(s.known_checkpoints) == tr.MAX_TOP_K
    assert s.known_checkpoints[-1].path == f"/output/checkpoints/c{5 * tr.MAX_TOP_K - 1}.ckpt"
    assert s.last_checkpoint == s.known_checkpoints[-1].path


def test_the_log_is_named_by_its_first_event() -> None:
    log = Log()
    log.started(0)
    log.epoch(10, 0, 0.9)
    s = tr.fold(log.events[:1])
    assert s.log_start == tr.format_time(T0)
    assert tr.fold(log.events[1:], s).log_start == s.log_start  # later events keep it
    out = status(tr.fold(log.events), 20)
    assert out["logStartTime"] == tr.format_time(T0) and out["logRestarts"] == 0
