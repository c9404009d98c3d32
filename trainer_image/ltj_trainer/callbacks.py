"""Lightning hooks that write the event log (global rank 0 only).

- :class:`EventCallback`: ``started`` (on_fit_start, knows the resolved resume checkpoint),
  ``progress`` (the first optimizer step of a fit, then every log_every_n_steps), ``validation`` (on_validation_end, after the epoch's metrics are reduced, never during the
  sanity check), ``early_stopped`` (on_train_end, after EarlyStopping decided) and ``fit_end``.
- :class:`CheckpointEventLogger`: a Lightning Logger whose ``after_save_checkpoint`` runs on
  rank 0 after the file is written; it diffs ``best_k_models`` to tell top-k saves from
  ``last.ckpt`` saves.
- :class:`LineProgressBar`: Lightning's progress bar where stdout is not a terminal (``kubectl
  logs``): one log line at each ``progress`` event's step (:class:`StepCadence`) and one per epoch.
- :class:`GracefulSigterm`: after a SIGTERM, stops all ranks at the same batch.
- :class:`SigtermCheckpoint`: on that SIGTERMException, saves ``sigterm.ckpt``, which
  ``fit(ckpt_path="last")`` considers on the next start.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import (Callback, EarlyStopping, ModelCheckpoint, OnExceptionCheckpoint,
                                         ProgressBar)
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from ltj_api import events
from ltj_trainer.signals import SigtermFlag

log = logging.getLogger(__name__)

SIGTERM_CHECKPOINT_NAME = "sigterm"


def number(value: Any) -> float | None:
    """A JSON-safe float: tensors and numbers become floats, NaN/inf and non-scalars None."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.detach().cpu().item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            continue
        out[str(name)] = number(value)
    return out


def _ckpt_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    cb = trainer.checkpoint_callback
    return cb if isinstance(cb, ModelCheckpoint) else None


def _early_stopping(trainer: pl.Trainer) -> EarlyStopping | None:
    cb = trainer.early_stopping_callback
    return cb if isinstance(cb, EarlyStopping) else None


@dataclass(frozen=True)
class FitOutcome:
    epochs: int  # completed epochs
    step: int
    best_path: str | None
    best_score: float | None
    stopped_early: bool
    stopped_epoch: int | None
    reason: str | None
    message: str | None
    es_best_score: float | None

    @property
    def last_epoch(self) -> int:
        return max(0, self.epochs - 1)


def fit_outcome(trainer: pl.Trainer) -> FitOutcome:
    """What Lightning itself reports about the finished fit (the summary and events use this)."""
    ckpt = _ckpt_callback(trainer)
    es = _early_stopping(trainer)
    stopped = False
    reason = message = None
    stopped_epoch = None
    es_best = None
    if es is not None:
        es_best = number(es.best_score)
        if es.stopping_reason != EarlyStoppingReason.NOT_STOPPED or es.stopped_epoch > 0:
            stopped = True
            stopped_epoch = int(es.stopped_epoch)
            reason = es.stopping_reason.name.lower()
            message = es.stopping_reason_message
    return FitOutcome(
        epochs=int(trainer.current_epoch),
        step=int(trainer.global_step),
        best_path=(ckpt.best_model_path or None) if ckpt else None,
        best_score=number(ckpt.best_model_score) if ckpt else None,
        stopped_early=stopped,
        stopped_epoch=stopped_epoch,
        reason=reason,
        message=message,
        es_best_score=es_best,
    )


class EventRecorder:
    """Writes events through :class:`ltj_api.events.Writer` on global rank 0; a no-op elsewhere."""

    def __init__(self, writer: events.Writer | None, monitor: str, started_fields: Mapping[str, Any]):
        self.writer = writer
        self.monitor = monitor
        self.started_fields = dict(started_fields)
        self.trainer: pl.Trainer | None = None
        self._seen_top_k: set[str] = set()

    @property
    def active(self) -> bool:
        return self.writer is not None

    @property
    def last_seq(self) -> int:
        return self.writer.seq if self.writer is not None else 0

    def emit(self, type_: str, **fields: Any) -> None:
        if self.writer is None:
            return
        try:
            self.writer.write(type_, **fields)
        except OSError as e:  # a full or vanished volume must not kill training; say it loudly
            log.error("cannot write %s event to %s: %s", type_, self.writer.path, e)

    # -- checkpoints ------------------------------------------------------------------------

    def seed_top_k(self, cb: ModelCheckpoint | None) -> None:
        # After a resume best_k_models holds the restored top-k: those files are not new saves.
        self._seen_top_k = set(cb.best_k_models) if cb is not None else set()

    @staticmethod
    def top_k(cb: ModelCheckpoint) -> list[dict[str, Any]]:
        reverse = cb.mode == "max"
        items = [(p, number(s)) for p, s in cb.best_k_models.items()]
        items.sort(key=lambda it: (it[1] is None, -(it[1] or 0.0) if reverse else (it[1] or 0.0)))
        return [{"path": p, "score": s} for p, s in items]

    def _where(self) -> tuple[int, int]:
        t = self.trainer
        return (int(t.current_epoch), int(t.global_step)) if t is not None else (0, 0)

    def checkpoint_saved(self, cb: ModelCheckpoint) -> None:
        if self.writer is None:
            return
        epoch, step = self._where()
        new = [p for p in cb.best_k_models if p not in self._seen_top_k]
        self._seen_top_k = set(cb.best_k_models)
        common = {
            "epoch": epoch,
            "step": step,
            "top_k": self.top_k(cb),
            "best_path": cb.best_model_path or None,
            "best_score": number(cb.best_model_score),
        }
        if new:
            for path in new:
                self.emit(events.CHECKPOINT, path=path, score=number(cb.best_k_models[path]), kind="top_k", **common)
        elif cb.last_model_path:
            # No new top-k file: this save was last.ckpt (ModelCheckpoint saves top-k first, then last).
            self.emit(events.CHECKPOINT, path=cb.last_model_path, score=number(cb.current_score), kind="last", **common)

    def sigterm_saved(self, path: str, cb: ModelCheckpoint | None) -> None:
        epoch, step = self._where()
        self.emit(
            events.CHECKPOINT,
            path=path,
            score=None,
            epoch=epoch,
            step=step,
            kind="sigterm",
            top_k=self.top_k(cb) if cb else [],
            best_path=(cb.best_model_path or None) if cb else None,
            best_score=number(cb.best_model_score) if cb else None,
        )


class StepCadence:
    """When a fit reports its progress: after its first optimizer step (training really runs: the
    time a user waits for), then every log_every_n_steps steps, as Lightning logs. The ``progress``
    events and the progress log lines both report on it. DDP steps are synchronous, so rank 0's
    step is every rank's."""

    def __init__(self) -> None:
        self._seen_step: int | None = None  # global_step at the last train batch (or the start) of this fit
        self._first_reported = False

    def start(self, trainer: pl.Trainer) -> None:
        """At on_train_start, after the restore: a resumed fit counts its steps from the checkpoint's."""
        self._seen_step, self._first_reported = int(trainer.global_step), False

    def due(self, trainer: pl.Trainer) -> bool:
        """At on_train_batch_end: whether this batch ended on a step to report."""
        step = int(trainer.global_step)
        stepped, self._seen_step = self._seen_step is not None and step != self._seen_step, step
        if not stepped or (self._first_reported and step % trainer.log_every_n_steps):
            return False
        self._first_reported = True
        return True


class EventCallback(Callback):
    def __init__(self, recorder: EventRecorder):
        self.recorder = recorder
        self.cadence = StepCadence()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.recorder.trainer = trainer

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ckpt_path = trainer.ckpt_path
        self.recorder.emit(
            events.STARTED,
            **{
                **self.recorder.started_fields,
                "world_size": int(trainer.world_size),
                "num_nodes": int(trainer.num_nodes),
                "devices": int(trainer.num_devices),
                "resumed_from": os.fspath(ckpt_path) if ckpt_path else None,
            },
        )
        if not ckpt_path:
            # In place of Lightning's warning, whose hint (save_last) does not apply: see ltj_trainer.noise.
            log.info("training from the first epoch (no checkpoint resumed)")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.recorder.seed_top_k(_ckpt_callback(trainer))
        self.cadence.start(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.cadence.due(trainer) or not self.recorder.active:
            return
        batches = trainer.num_training_batches
        self.recorder.emit(
            events.PROGRESS,
            epoch=int(trainer.current_epoch),
            step=int(trainer.global_step),
            batch=batch_idx + 1,
            batches=int(batches) if math.isfinite(batches) else None,
            steps_per_epoch=math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) else None,
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self.recorder.active or trainer.state.fn != "fit":
            return
        self.recorder.emit(
            events.VALIDATION,
            epoch=int(trainer.current_epoch),
            step=int(trainer.global_step),
            metrics=scalar_metrics(trainer.callback_metrics),
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # EarlyStopping has decided by now (it runs after us within each epoch-end hook).
        out = fit_outcome(trainer)
        if out.stopped_early:
            self.recorder.emit(
                events.EARLY_STOPPED,
                epoch=out.stopped_epoch,
                reason=out.reason,
                message=out.message,
                best_score=out.es_best_score,
                monitor=self.recorder.monitor,
            )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        out = fit_outcome(trainer)
        self.recorder.emit(
            events.FIT_END,
            epoch=out.last_epoch,
            step=out.step,
            best_path=out.best_path,
            best_score=out.best_score,
            stopped_early=out.stopped_early,
        )


class LineProgressBar(ProgressBar):
    """Lightning's progress bar for a log that is not a terminal (``kubectl logs``, a file), where
    every carriage return of a bar would be a line of its own: global rank 0 logs one line at each
    step the ``progress`` events report and one at the end of each epoch, with Lightning's progress
    bar metrics (those logged with ``prog_bar=True``)::

        epoch 2/10 step 340/1700 train_loss=0.4105 steps/s=12.3
        epoch 2/10 step 400/1700 done: train_loss=0.3821 val_loss=0.4012 val_acc=0.9132
    """

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self.cadence = StepCadence()
        self._total_steps: int | None = None
        self._last: tuple[float, int] = (0.0, 0)  # (monotonic time, global_step) of the last line or the start

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def _where(self, trainer: pl.Trainer) -> str:
        epoch = f"epoch {trainer.current_epoch + 1}"
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            epoch += f"/{trainer.max_epochs}"
        step = f"step {trainer.global_step}"
        if self._total_steps is not None:
            step += f"/{self._total_steps}"
        return f"{epoch} {step}"

    def _metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[str]:
        shown = []
        for name, value in self.get_metrics(trainer, pl_module).items():
            value = number(value)
            if name != "v_num" and value is not None:  # v_num: the logger's version, not a measure
                shown.append(f"{name}={value:.4g}")
        return shown

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.cadence.start(trainer)
        total = trainer.estimated_stepping_batches
        self._total_steps = int(total) if math.isfinite(total) else None
        self._last = (time.monotonic(), int(trainer.global_step))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.cadence.due(trainer) or not self.enabled:
            return
        now, step = time.monotonic(), int(trainer.global_step)
        then, before = self._last
        self._last = (now, step)
        rate = [f"steps/s={(step - before) / (now - then):.3g}"] if now > then else []
        log.info("%s", " ".join([self._where(trainer), *self._metrics(trainer, pl_module), *rate]))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.enabled:
            log.info("%s", " ".join([f"{self._where(trainer)} done:", *self._metrics(trainer, pl_module)]))


class GracefulSigterm(Callback):
    """Stops every rank at the same batch after a SIGTERM on any of them.

    Lightning registers its own SIGTERM handler when fit/test starts; this puts the flag-only
    handler back (see :mod:`ltj_trainer.signals`) and, after each batch, reduces the flag across
    ranks ("any") - the same collective on every rank at the same point - then raises
    Lightning's SIGTERMException everywhere, so the on-exception checkpoint is saved by all
    ranks together. A single process needs no collective.
    """

    def __init__(self, flag: SigtermFlag):
        self.flag = flag

    def _install(self, *args: Any, **kwargs: Any) -> None:
        self.flag.install()

    on_sanity_check_start = _install
    on_train_start = _install
    on_validation_start = _install
    on_test_start = _install

    def _check(self, trainer: pl.Trainer) -> None:
        stop = self.flag.is_set()
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            raise SIGTERMException()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._check(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._check(trainer)

    def on_test_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._check(trainer)


class CheckpointEventLogger(Logger):
    """Not a metrics logger: only its after_save_checkpoint hook matters (rank 0, file written)."""

    def __init__(self, recorder: EventRecorder):
        super().__init__()
        self.recorder = recorder

    @property
    def name(self) -> str:
        return "ltj-events"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        self.recorder.checkpoint_saved(checkpoint_callback)


class SigtermCheckpoint(OnExceptionCheckpoint):
    """Saves a resumable checkpoint when Lightning stops on SIGTERM; other exceptions save nothing
    (a crashed rank would wait in the save's barrier for peers that never come)."""

    def __init__(self, dirpath: str, recorder: EventRecorder):
        super().__init__(dirpath=dirpath, filename=SIGTERM_CHECKPOINT_NAME)
        self.recorder = recorder
        self.saved_path: str | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Only while fitting: during test the module holds the best checkpoint's weights, and a
        # checkpoint of those would be a wrong resume point.
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        if trainer.global_step == 0:
            log.info("SIGTERM before the first optimizer step: nothing to save")
            return
        trainer.save_checkpoint(self.ckpt_path)
        self.saved_path = self.ckpt_path
        log.info("SIGTERM: saved resumable checkpoint %s at epoch %d, step %d", self.ckpt_path, trainer.current_epoch, trainer.global_step)
        self.recorder.sigterm_saved(self.ckpt_path, _ckpt_callback(trainer))
