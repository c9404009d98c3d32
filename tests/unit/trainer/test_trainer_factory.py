"""Trainer decisions: precision spelling, sync_batchnorm, node/process counts, checkpoint names,
and the Lightning objects build_trainer assembles (real Lightning, no training)."""

from __future__ import annotations

import os
import pty
import sys
from pathlib import Path

import pytest

from ltj_trainer import config
from ltj_trainer.config import ConfigError
from ltj_trainer.signals import SigtermFlag
from ltj_trainer.trainer_factory import DistEnv, build_trainer, checkpoint_filename, logger_version, plan

pytestmark = pytest.mark.unit

SINGLE = DistEnv(torchelastic=True, rank=0, local_rank=0, world_size=1, local_world_size=1)
TWO_NODES_FOUR_GPUS = DistEnv(torchelastic=True, rank=5, local_rank=1, world_size=8, local_world_size=4)


def cfg(**kw: object) -> config.TrainerConfig:
    return config.parse({"model_class": "digits_cnn", **kw}, {})


@pytest.mark.parametrize(("precision", "gpu", "cpu"), [("fp16", "16-mixed", "32-true"), ("bf16", "bf16-mixed", "32-true"),
                                                        ("fp32", "32-true", "32-true")])
def test_precision_mapping(precision: str, gpu: str, cpu: str) -> None:
    assert plan(cfg(precision=precision), SINGLE, cuda_available=True).precision == gpu
    on_cpu = plan(cfg(precision=precision), SINGLE, cuda_available=False)
    assert on_cpu.precision == cpu
    assert bool(on_cpu.notes) == (precision != "fp32")


def test_sync_batchnorm_only_on_gpu_with_several_processes() -> None:
    gpu = plan(cfg(), TWO_NODES_FOUR_GPUS, cuda_available=True)
    assert (gpu.accelerator, gpu.strategy, gpu.sync_batchnorm, gpu.sync_batchnorm_note) == ("gpu", "ddp", True, None)
    cpu = plan(cfg(), TWO_NODES_FOUR_GPUS, cuda_available=False)
    assert (cpu.accelerator, cpu.strategy, cpu.sync_batchnorm) == ("cpu", "ddp", False)
    assert "only on GPU" in (cpu.sync_batchnorm_note or "")
    one = plan(cfg(), SINGLE, cuda_available=True)
    assert (one.strategy, one.sync_batchnorm) == ("single_device", False)


def test_torchelastic_counts_win_over_the_config() -> None:
    p = plan(cfg(num_nodes=1, devices=1), TWO_NODES_FOUR_GPUS, cuda_available=True)
    assert (p.num_nodes, p.devices) == (2, 4)  # Lightning's validate_settings needs WORLD_SIZE = 2 * 4
    assert any("num_nodes=1" in n for n in p.notes)


def test_gpu_requested_without_cuda_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="^config: accelerator: gpu requested"):
        plan(cfg(accelerator="gpu"), SINGLE, cuda_available=False)


def test_dist_env_from_torchrun_variables() -> None:
    env = {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "RANK": "5", "LOCAL_RANK": "1"}
    assert DistEnv.from_env(env, cfg()) == TWO_NODES_FOUR_GPUS
    assert DistEnv.from_env(env, cfg()).num_nodes == 2
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        DistEnv.from_env({**env, "WORLD_SIZE": "6"}, cfg())
    # plain `python -m ltj_trainer.main`: Lightning's own numbering
    assert DistEnv.from_env({"NODE_RANK": "1", "LOCAL_RANK": "1"}, cfg(devices=2, num_nodes=2)).rank == 3


@pytest.mark.parametrize(
    ("metric", "metrics", "expected"),
    [
        ("val_loss", {"epoch": 3, "val_loss": 0.5234}, "digits_cnn_epoch03-val_loss0.52.ckpt"),
        ("val/acc", {"epoch": 12, "val/acc": 0.987}, "digits_cnn_epoch12-val_acc0.99.ckpt"),
    ],
)
def test_checkpoint_names_through_lightning(metric: str, metrics: dict[str, float], expected: str, tmp_path: Path) -> None:
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    cb = ModelCheckpoint(dirpath=str(tmp_path), filename=checkpoint_filename("digits_cnn", metric), monitor=metric,
                         auto_insert_metric_name=False)
    name = cb.format_checkpoint_name({k: torch.tensor(v) for k, v in metrics.items()})
    assert Path(name) == tmp_path / expected  # no subdirectory from the '/'


def test_logger_version_never_reuses_a_written_directory(tmp_path: Path) -> None:
    assert logger_version(str(tmp_path), 2) == "attempt_2"
    (tmp_path / "csv" / "attempt_2").mkdir(parents=True)
    assert logger_version(str(tmp_path), 2) == "attempt_2"  # empty: reuse
    (tmp_path / "csv" / "attempt_2" / "metrics.csv").write_text("x")
    assert logger_version(str(tmp_path), 2) == "attempt_2-1"


def test_build_trainer_wires_the_callbacks_and_loggers(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from ltj_trainer.callbacks import (
        CheckpointEventLogger, EventCallback, EventRecorder, GracefulSigterm, SigtermCheckpoint,
    )

    c = cfg(default_root_dir=str(tmp_path), early_stop_metric="val/acc", mode="max", early_stop_patience=5,
            early_stop_min_delta=0.01, save_top_k=2)
    p = plan(c, SINGLE, cuda_available=False)
    trainer = build_trainer(c, p, EventRecorder(None, c.monitor, {}), attempt=1, sigterm_flag=SigtermFlag())
    assert isinstance(trainer.loggers[0], CSVLogger)  # first: it decides log_dir
    assert any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers)
    assert any(isinstance(lg, CheckpointEventLogger) for lg in trainer.loggers)
    assert trainer.loggers[0].version == "attempt_1"
    mc = trainer.checkpoint_callback
    assert isinstance(mc, ModelCheckpoint)
    assert (mc.dirpath, mc.monitor, mc.mode, mc.save_top_k, mc.save_last) == (
        str(tmp_path / "checkpoints"), "val/acc", "max", 2, True)
    es = trainer.early_stopping_callback
    assert isinstance(es, EarlyStopping)
    assert (es.monitor, es.patience, es.mode, abs(es.min_delta)) == ("val/acc", 5, "max", 0.01)
    kinds = {type(cb) for cb in trainer.callbacks}
    assert {EventCallback, LearningRateMonitor, GracefulSigterm, SigtermCheckpoint} <= kinds
    lrm = next(cb for cb in trainer.callbacks if isinstance(cb, LearningRateMonitor))
    assert lrm.logging_interval == "step"
    assert trainer.precision == "32-true"


def test_no_early_stopping_and_no_sigterm_checkpoint_when_not_resuming(tmp_path: Path) -> None:
    from ltj_trainer.callbacks import EventRecorder, SigtermCheckpoint

    c = cfg(default_root_dir=str(tmp_path), early_stopping=False, resume="none")
    trainer = build_trainer(c, plan(c, SINGLE, False), EventRecorder(None, c.monitor, {}), attempt=0,
                            sigterm_flag=SigtermFlag())
    assert trainer.early_stopping_callback is None
    assert not any(isinstance(cb, SigtermCheckpoint) for cb in trainer.callbacks)


def test_the_progress_bar_is_tqdm_on_a_terminal_and_lines_elsewhere(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's bars write to stdout: a pseudo-terminal gets TQDMProgressBar at the configured
    cadence, a pipe (a container without a TTY, kubectl logs) the line-based bar."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    from ltj_trainer.callbacks import EventRecorder, LineProgressBar

    c = cfg(default_root_dir=str(tmp_path), log_every_n_steps=7)
    terminal, follower = pty.openpty()
    reader, writer = os.pipe()
    bars = {}
    for name, fd in (("tty", follower), ("pipe", writer)):
        with os.fdopen(os.dup(fd), "w") as stdout, monkeypatch.context() as patch:
            patch.setattr(sys, "stdout", stdout)
            trainer = build_trainer(c, plan(c, SINGLE, False), EventRecorder(None, c.monitor, {}), attempt=0,
                                    sigterm_flag=SigtermFlag())
            bars[name] = trainer.progress_bar_callback
    for fd in (terminal, follower, reader, writer):
        os.close(fd)
    assert isinstance(bars["tty"], TQDMProgressBar) and bars["tty"].refresh_rate == 7
    assert isinstance(bars["pipe"], LineProgressBar)
