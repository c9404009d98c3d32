"""Builds the Lightning Trainer from the config and the distributed environment.

The decisions (:func:`plan`, :func:`checkpoint_filename`) are pure functions, tested without
torch work; :func:`build_trainer` only assembles Lightning objects from them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping

from ltj_trainer.config import ConfigError, TrainerConfig

log = logging.getLogger(__name__)

# Lightning 2.x precision strings; "fp16"/"fp32" themselves are invalid there.
GPU_PRECISION = {"fp16": "16-mixed", "bf16": "bf16-mixed", "fp32": "32-true"}
CPU_PRECISION = "32-true"


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits. Under torchrun (TorchElasticEnvironment) the launcher's env is
    the truth; Lightning's validate_settings insists devices * num_nodes == WORLD_SIZE."""

    torchelastic: bool
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int

    @property
    def num_nodes(self) -> int:
        return self.world_size // self.local_world_size

    @classmethod
    def from_env(cls, env: Mapping[str, str], cfg: TrainerConfig) -> "DistEnv":
        def num(name: str, default: int) -> int:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                return int(raw)
            except ValueError:
                raise ConfigError(name, f"environment variable must be an integer, got {raw!r}") from None

        if env.get("TORCHELASTIC_RUN_ID"):
            world, local_world = num("WORLD_SIZE", 1), num("LOCAL_WORLD_SIZE", 1)
            if local_world < 1 or world < local_world or world % local_world:
                raise ConfigError("WORLD_SIZE", f"{world} is not a multiple of LOCAL_WORLD_SIZE {local_world}")
            return cls(True, num("RANK", 0), num("LOCAL_RANK", 0), world, local_world)
        # Plain `python -m ltj_trainer.main`: Lightning's own launcher spawns cfg.devices processes
        # per node and numbers them node_rank * devices + local_rank.
        local = num("LOCAL_RANK", 0)
        node = num("NODE_RANK", num("GROUP_RANK", 0))
        return cls(False, node * cfg.devices + local, local, cfg.devices * cfg.num_nodes, cfg.devices)


@dataclass(frozen=True)
class TrainerPlan:
    accelerator: str  # "cpu" | "gpu"
    precision: str  # Lightning's string
    strategy: str  # "ddp" | "single_device"
    sync_batchnorm: bool
    sync_batchnorm_note: str | None
    num_nodes: int
    devices: int
    notes: tuple[str, ...]

    def started_fields(self, cfg: TrainerConfig, attempt: int) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "accelerator": self.accelerator,
            "strategy": self.strategy,
            "sync_batchnorm": self.sync_batchnorm,
            "sync_batchnorm_note": self.sync_batchnorm_note,
            "attempt": attempt,
            "max_epochs": cfg.max_epochs,
            "monitor": cfg.monitor,
            "mode": cfg.mode,
            "model_class": cfg.model_class,
            "data_class": cfg.data_class,
        }


def plan(cfg: TrainerConfig, dist: DistEnv, cuda_available: bool) -> TrainerPlan:
    notes: list[str] = []
    if cfg.accelerator == "gpu" and not cuda_available:
        raise ConfigError("accelerator", "gpu requested but no CUDA device is visible in this container")
    accelerator = "gpu" if cfg.accelerator == "gpu" or (cfg.accelerator == "auto" and cuda_available) else "cpu"

    if accelerator == "gpu":
        precision = GPU_PRECISION[cfg.precision]
    else:
        precision = CPU_PRECISION
        if cfg.precision != "fp32":
            notes.append(f"precision {cfg.precision} is not used on CPU: training in {CPU_PRECISION}")

    if dist.torchelastic:
        num_nodes, devices = dist.num_nodes, dist.local_world_size
        if (num_nodes, devices) != (cfg.num_nodes, cfg.devices):
            notes.append(
                f"config says num_nodes={cfg.num_nodes}, devices={cfg.devices}; the launcher started "
                f"{num_nodes} x {devices} processes, which is what Lightning must be told"
            )
    else:
        num_nodes, devices = cfg.num_nodes, cfg.devices

    world = num_nodes * devices
    strategy = "ddp" if world > 1 else "single_device"
    if accelerator != "gpu":
        # torch's SyncBatchNorm raises for CPU tensors as soon as a process group exists.
        sync_bn, sync_note = False, "sync_batchnorm is off: torch supports SyncBatchNorm only on GPU (training on CPU)"
    elif world == 1:
        sync_bn, sync_note = False, "sync_batchnorm is off: a single process has nothing to synchronise"
    else:
        sync_bn, sync_note = True, None
    return TrainerPlan(accelerator, precision, strategy, sync_bn, sync_note, num_nodes, devices, tuple(notes))


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_label(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_") or "x"


def checkpoint_filename(model_class: str, metric: str) -> str:
    """``<model>_epoch{epoch:02d}-<metric safe>{<metric>:.2f}``: the metric may contain '/', which
    must stay inside the format field (Lightning formats ``{0[val/loss]}``) and out of the name."""
    return f"{safe_label(model_class)}_epoch{{epoch:02d}}-{safe_label(metric)}{{{metric}:.2f}}"


def logger_version(root: str, attempt: int) -> str:
    """One log directory per attempt (CSVLogger deletes an existing metrics.csv in its directory);
    a rerun outside the operator (same attempt number) gets a suffix instead of overwriting."""
    base = f"attempt_{attempt}"
    version, n = base, 1
    while os.path.isdir(os.path.join(root, "csv", version)) and os.listdir(os.path.join(root, "csv", version)):
        version, n = f"{base}-{n}", n + 1
    return version


def build_trainer(
    cfg: TrainerConfig,
    trainer_plan: TrainerPlan,
    recorder: Any,
    *,
    attempt: int,
    sigterm_flag: Any,
) -> Any:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from lightning.pytorch.strategies import DDPStrategy

    from ltj_trainer.callbacks import (CheckpointEventLogger, EventCallback, GracefulSigterm, LineProgressBar,
                                       SigtermCheckpoint)

    version = logger_version(cfg.default_root_dir, attempt)
    # CSVLogger first: loggers[0] decides trainer.log_dir.
    loggers: list[Any] = [CSVLogger(save_dir=cfg.default_root_dir, name="csv", version=version)]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        loggers.append(TensorBoardLogger(save_dir=cfg.default_root_dir, name="tensorboard", version=version))
    loggers.append(CheckpointEventLogger(recorder))

    checkpoint = ModelCheckpoint(
        dirpath=cfg.checkpoint_dir,  # fixed across restarts, so "last" finds it and top-k state restores
        filename=checkpoint_filename(cfg.model_class, cfg.monitor),
        monitor=cfg.monitor,
        mode=cfg.mode,
        save_top_k=cfg.save_top_k,
        save_last=True,
        auto_insert_metric_name=False,
    )
    callbacks: list[Any] = [
        EventCallback(recorder),
        GracefulSigterm(sigterm_flag),
        checkpoint,
        # Lightning's bars write to stdout: a terminal gets them, anything else (kubectl logs) lines.
        TQDMProgressBar(refresh_rate=cfg.log_every_n_steps) if sys.stdout.isatty() else LineProgressBar(),
        LearningRateMonitor(logging_interval="step"),
    ]
    if cfg.early_stopping:
        callbacks.append(
            EarlyStopping(
                monitor=cfg.monitor,
                mode=cfg.mode,
                patience=cfg.early_stop_patience,
                min_delta=cfg.early_stop_min_delta,
                strict=True,  # a misspelt metric fails loudly instead of never stopping
            )
        )
    if cfg.resume != "none":
        # With resume "none" there is no resume to feed (and Lightning would turn fit(ckpt_path=None)
        # into "last" whenever an on-exception checkpoint callback is present).
        callbacks.append(SigtermCheckpoint(cfg.checkpoint_dir, recorder))

    strategy: Any = "auto"
    if trainer_plan.strategy == "ddp":
        strategy = DDPStrategy(timeout=timedelta(seconds=cfg.ddp_timeout_seconds))

    return pl.Trainer(
        accelerator=trainer_plan.accelerator,
        devices=trainer_plan.devices,
        num_nodes=trainer_plan.num_nodes,
        strategy=strategy,
        precision=trainer_plan.precision,
        sync_batchnorm=trainer_plan.sync_batchnorm,
        max_epochs=cfg.max_epochs,
        val_check_interval=cfg.val_check_interval,
        log_every_n_steps=cfg.log_every_n_steps,
        default_root_dir=cfg.default_root_dir,
        logger=loggers,
        callbacks=callbacks,
        enable_progress_bar=True,
    )
