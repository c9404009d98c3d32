"""The worker's pieces that need no training: resume resolution, constructor injection, the check of
model_args / data_args against the constructors, run state."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest

from ltj_api import events
from ltj_trainer import config, registry, runstate
from ltj_trainer.config import ConfigError
from ltj_trainer.main import Run, accepted_params, check_args, instantiate, resolve_resume

pytestmark = pytest.mark.unit


def cfg(tmp_path: Path, **kw: object) -> config.TrainerConfig:
    return config.parse({"model_class": "digits_cnn", "default_root_dir": str(tmp_path), **kw}, {})


def test_resume_policies(tmp_path: Path) -> None:
    assert resolve_resume(cfg(tmp_path)) == "last"
    assert resolve_resume(cfg(tmp_path, resume="none")) is None
    with pytest.raises(ConfigError, match=r"^config: resume: checkpoint not found: .*/nope.ckpt$"):
        resolve_resume(cfg(tmp_path, resume=str(tmp_path / "nope.ckpt")))
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"")
    assert resolve_resume(cfg(tmp_path, resume=str(ckpt))) == str(ckpt)


def test_resume_is_confined_to_the_jobs_own_directory(tmp_path: Path) -> None:
    """A checkpoint is a pickle: another job's (jobs may share a volume) is refused, by path or by symlink."""
    own, other = tmp_path / "mnist-uid1", tmp_path / "mnist-uid2"
    (other / "checkpoints").mkdir(parents=True)
    foreign = other / "checkpoints" / "last.ckpt"
    foreign.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"^config: resume: .*mnist-uid2/checkpoints/last.ckpt is outside this "
                                          r"job's directory .*mnist-uid1/ \(a checkpoint is a pickle"):
        cfg(own, resume=str(foreign))
    with pytest.raises(ConfigError, match="outside this job's directory"):
        cfg(own, resume=f"{own}/../mnist-uid2/checkpoints/last.ckpt")
    (own / "checkpoints").mkdir(parents=True)
    planted = own / "checkpoints" / "planted.ckpt"
    planted.symlink_to(foreign)
    with pytest.raises(ConfigError, match=r"mnist-uid2/checkpoints/last.ckpt is outside this job's directory"):
        resolve_resume(cfg(own, resume=str(planted)))
    # resume=best trusts the event log no more than a path: a recorded best elsewhere is not loaded.
    c = cfg(own, resume="best")
    events.Writer(c.events_path).write(events.CHECKPOINT, path=str(foreign), kind="top_k", best_path=str(foreign),
                                       best_score=1.0)
    assert resolve_resume(c) == "last"


def test_resume_best_uses_the_latest_recorded_best_that_exists(tmp_path: Path) -> None:
    c = cfg(tmp_path, resume="best")
    assert resolve_resume(c) == "last"  # nothing recorded yet
    w = events.Writer(c.events_path)
    old, new = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    old.write_bytes(b"")
    w.write(events.CHECKPOINT, path=str(old), kind="top_k", best_path=str(old), best_score=1.0)
    assert resolve_resume(c) == str(old)
    w.write(events.CHECKPOINT, path=str(new), kind="top_k", best_path=str(new), best_score=0.5)
    assert resolve_resume(c) == "last"  # the recorded best is gone from disk
    new.write_bytes(b"")
    assert resolve_resume(c) == str(new)


class Base:
    def __init__(self, batch_size: int = 1, num_workers: int = 0) -> None:
        self.batch_size, self.num_workers = batch_size, num_workers


class WithKwargs(Base):
    def __init__(self, path: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.path = path


class Closed:
    def __init__(self, n: int = 1) -> None:
        self.n = n


def test_injection_follows_kwargs_to_the_base_and_never_overrides_the_user() -> None:
    assert accepted_params(WithKwargs) == ({"path", "batch_size", "num_workers"}, True)
    obj = instantiate(WithKwargs, {"path": "p", "num_workers": 3}, {"batch_size": 8, "num_workers": 1, "root_dir": "/o"},
                      "data_args")
    assert (obj.path, obj.batch_size, obj.num_workers) == ("p", 8, 3)
    assert instantiate(Closed, {}, {"batch_size": 8}, "data_args").n == 1  # not named: not passed
    with pytest.raises(ConfigError, match=r"^config: data_args: Closed: "):
        instantiate(Closed, {"m": 1}, {}, "data_args")


class Swallows(pl.LightningDataModule):
    def __init__(self, batch_size: int = 1, **options: object) -> None:
        super().__init__()  # keeps **options itself: any name is an argument
        self.options = options


def test_arguments_are_checked_against_constructors_before_anything_is_built(tmp_path: Path) -> None:
    assert accepted_params(Closed) == ({"n"}, True)
    assert accepted_params(Swallows) == ({"batch_size"}, False)
    resnet = check_args(cfg(tmp_path, model_class="resnet", model_args={"depth": 50}, data_class="parquet",
                            data_args={"path": "/nowhere.parquet", "image_size": 32}))
    assert resnet == (registry.data_class("parquet"), registry.model_class("resnet"))
    with pytest.raises(ConfigError, match=r"^config: model_args.layers: not an argument of 'resnet' "
                                          r"\(ResNet takes: blocks, channels_last, depth, input_shape, lr, "):
        check_args(cfg(tmp_path, model_class="resnet", model_args={"layers": 50, "zeta": 1}))
    # Through **kwargs to the base class, as the built-in table datamodules take val_fraction.
    with pytest.raises(ConfigError, match=r"^config: data_args.shuffle: not an argument of 'csv' \(CsvDataModule"):
        check_args(cfg(tmp_path, data_class="csv", data_args={"path": "t.csv", "val_fraction": 0.2, "shuffle": 1}))
    with pytest.raises(ConfigError, match=r"^config: model_class: model 'gpt5' is not registered"):
        check_args(cfg(tmp_path, model_class="gpt5"))


def test_run_state_round_trip_and_corruption(tmp_path: Path) -> None:
    assert runstate.read(str(tmp_path)) == runstate.RunState()
    s = runstate.RunState().with_fit(best_path="/b.ckpt", best_score=0.1, epochs=4, stopped_early=True)
    runstate.write(str(tmp_path), s.with_test({"test_acc": 0.9}))
    back = runstate.read(str(tmp_path))
    assert back.fit_done and back.test_done and back.test_metrics == {"test_acc": 0.9} and back.epochs == 4
    assert json.loads((tmp_path / runstate.FILENAME).read_text())["best_path"] == "/b.ckpt"
    (tmp_path / runstate.FILENAME).write_text("{torn")
    with pytest.raises(RuntimeError, match="delete it to train again"):
        runstate.read(str(tmp_path))


def test_a_finished_fit_trains_on_only_to_more_epochs_and_not_after_an_early_stop() -> None:
    ran = runstate.RunState().with_fit(best_path="/b.ckpt", best_score=0.1, epochs=4, stopped_early=False)
    assert ran.trains_on(5) and not ran.trains_on(4) and not ran.trains_on(3)
    assert not runstate.RunState().trains_on(5)  # nothing finished: an ordinary (resumed) fit
    stopped = ran.with_fit(stopped_early=True)
    assert not stopped.trains_on(100)
    on = ran.with_test({"test_acc": 0.9}).training_on()
    assert (on.fit_done, on.test_done, on.test_metrics, on.epochs, on.best_path) == (False, False, {}, 4, "/b.ckpt")


@pytest.mark.parametrize("stopped_early, max_epochs, says", [
    (False, 4, "it trained 4 epoch(s); to train on from its last checkpoint, raise max_epochs (a job's "
               "spec.training.maxEpochs) above 4"),
    (True, 10, "it stopped early after 4 epoch(s), so a higher max_epochs does not train it on; to train again, "
               "start a new run in another default_root_dir (in Kubernetes: a new job)"),
])
def test_a_finished_run_says_how_to_train_again(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                stopped_early: bool, max_epochs: int, says: str) -> None:
    state = runstate.RunState().with_fit(best_path=None, best_score=None, epochs=4, stopped_early=stopped_early)
    runstate.write(str(tmp_path), state.with_test({}))
    run = Run(cfg(tmp_path, max_epochs=max_epochs, termination_log=str(tmp_path / "term")), {})
    with caplog.at_level("INFO", logger="ltj_trainer"):
        assert run.execute() == 0
    assert f"this run already finished ({tmp_path / runstate.FILENAME}); nothing to do: {says}" in caplog.text
