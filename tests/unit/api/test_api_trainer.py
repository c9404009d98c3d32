"""ltj_api.trainer: the trainer config's keys are the trainer's settings and what the operator renders,
and every key has its LTJ_<KEY> override."""

from __future__ import annotations

import dataclasses

import pytest

from ltj_api import trainer as api
from ltj_operator.render import trainer_config
from unit.operator.operator_helpers import make_job

pytestmark = pytest.mark.unit


def test_the_trainer_accepts_exactly_the_contract_keys() -> None:
    config = pytest.importorskip("ltj_trainer.config")
    assert tuple(f.name for f in dataclasses.fields(config.TrainerConfig)) == api.CONFIG_KEYS


def test_the_operator_renders_contract_keys_in_their_order() -> None:
    rendered = tuple(trainer_config(make_job(nodes=2, gpusPerNode=1)))
    assert rendered == tuple(k for k in api.CONFIG_KEYS if k in rendered)
    assert {"model_class", "default_root_dir", "termination_log", "resume"} <= set(rendered)


def test_every_key_is_overridden_by_its_environment_variable() -> None:
    config = pytest.importorskip("ltj_trainer.config")
    assert api.env_key("max_epochs") == "LTJ_MAX_EPOCHS"
    cfg = config.parse({"model_class": "tabular_mlp"}, {api.ENV_RESUME: "none", api.ENV_TERMINATION_LOG: "/t/log"})
    assert (cfg.resume, cfg.termination_log) == ("none", "/t/log")


def test_each_job_has_its_own_directory_by_uid() -> None:
    a = api.job_dir("mnist", "0b6f7a4e-1111")
    assert a == "/output/mnist-0b6f7a4e-1111"
    assert api.events_path(a) == "/output/mnist-0b6f7a4e-1111/events.jsonl"
    assert api.checkpoints_dir(a) == "/output/mnist-0b6f7a4e-1111/checkpoints"
    assert api.job_dir("mnist", "2222") != a  # a job recreated under the same name starts afresh
    assert api.job_dir("m", "u", "/vol/team") == "/vol/team/m-u"
    for name, uid in (("mnist", ""), ("", "u"), ("a/b", "u"), ("m", "../u"), ("..", "u")):
        with pytest.raises(ValueError, match="job name and uid"):
            api.job_dir(name, uid)


@pytest.mark.parametrize(("path", "inside"), [
    ("/output/m-u/checkpoints/last.ckpt", True),
    ("/output/m-u/./checkpoints/../x.ckpt", True),
    ("/output/m-u", False),  # the directory itself is no checkpoint
    ("/output/m-u2/checkpoints/last.ckpt", False),  # a job whose name-uid starts alike
    ("/output/m-u/../other-v/last.ckpt", False),
    ("/output/other-v/checkpoints/last.ckpt", False),
    ("checkpoints/last.ckpt", False),
])
def test_within_a_directory_is_decided_on_normalized_paths(path: str, inside: bool) -> None:
    assert api.within(path, "/output/m-u") is inside
    assert api.within(path, "/output/m-u/") is inside
