"""Config parsing: defaults, every field's validation naming the field, LTJ_* overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltj_api.trainer import CONFIG_PATH
from ltj_trainer import config
from ltj_trainer.config import ConfigError, TrainerConfig

pytestmark = pytest.mark.unit


def test_minimal_config_gets_the_documented_defaults() -> None:
    cfg = config.parse({"model_class": "digits_cnn"}, {"LTJ_JOB_NAME": "digits"})  # in a pod the operator made
    assert cfg == TrainerConfig(model_class="digits_cnn")
    assert (cfg.data_class, cfg.batch_size, cfg.num_workers, cfg.max_epochs) == ("digits", 64, 0, 10)
    assert (cfg.early_stopping, cfg.early_stop_metric, cfg.early_stop_patience, cfg.early_stop_min_delta) == (
        True, "val_loss", 3, 0.0)
    assert (cfg.mode, cfg.val_check_interval, cfg.precision, cfg.accelerator) == ("min", 1.0, "fp32", "auto")
    assert (cfg.devices, cfg.num_nodes, cfg.default_root_dir, cfg.seed, cfg.save_top_k) == (1, 1, "/output", 42, 3)
    assert (cfg.test_after_fit, cfg.resume, cfg.termination_log) == (True, "last", "/dev/termination-log")
    assert (cfg.ddp_timeout_seconds, cfg.log_every_n_steps) == (1800, 10)
    assert cfg.events_path == "/output/events.jsonl"
    assert cfg.checkpoint_dir == "/output/checkpoints"


def test_outside_a_pod_the_output_defaults_to_the_working_directory(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = config.parse({"model_class": "digits_cnn"}, {})
    assert cfg.default_root_dir == str(tmp_path / "ltj-output")
    assert cfg.termination_log == str(tmp_path / "ltj-output" / "termination-log")
    assert config.parse({"model_class": "digits_cnn", "default_root_dir": "/data/run"}, {}).default_root_dir == "/data/run"
    assert config.parse({"model_class": "digits_cnn"}, {"LTJ_DEFAULT_ROOT_DIR": "/o"}).default_root_dir == "/o"


def test_a_job_manifest_is_not_the_trainer_config() -> None:
    job = {"apiVersion": "ltj.dev/v1alpha1", "kind": "LightningTrainingJob", "spec": {"model": {"name": "x"}}}
    with pytest.raises(ConfigError, match=r"^config: this is a Kubernetes manifest, not the trainer's settings"):
        config.parse(job, {})


def test_full_valid_config() -> None:
    raw = {
        "model_class": "resnet", "model_args": {"widths": [8, 16], "blocks": [1, 1]},
        "data_class": "synthetic_images", "data_args": {"num_samples": 100},
        "batch_size": 32, "num_workers": 2, "max_epochs": 3, "early_stopping": False,
        "early_stop_metric": "val/acc", "early_stop_patience": 0, "early_stop_min_delta": 0.01, "mode": "max",
        "val_check_interval": 0.25, "precision": "bf16", "accelerator": "gpu", "devices": 4, "num_nodes": 2,
        "default_root_dir": "/data/run/", "seed": 0, "save_top_k": -1, "test_after_fit": False,
        "resume": "/data/run/checkpoints/x.ckpt", "termination_log": "/tmp/t", "ddp_timeout_seconds": 60,
        "log_every_n_steps": 1,
    }
    cfg = config.parse(raw, {})
    assert cfg.model_args == {"widths": [8, 16], "blocks": [1, 1]}
    assert cfg.default_root_dir == "/data/run"
    assert cfg.monitor == "val/acc"
    assert cfg.to_dict()["precision"] == "bf16"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model_class", "", "must not be empty"),
        ("model_class", 3, "must be a string"),
        ("model_args", [1, 2], "must be a mapping"),
        ("data_class", None, "must be a string"),
        ("data_args", "x", "must be a mapping"),
        ("batch_size", 0, "must be >= 1"),
        ("batch_size", True, "must be an integer"),
        ("batch_size", 1.5, "must be an integer"),
        ("num_workers", -1, "must be >= 0"),
        ("max_epochs", 0, "must be >= 1"),
        ("early_stopping", "yes", "must be a boolean"),
        ("early_stop_metric", "val_{loss}", "must not contain braces"),
        ("early_stop_patience", -1, "must be >= 0"),
        ("early_stop_min_delta", -0.1, "must be >= 0.0"),
        ("early_stop_min_delta", "big", "must be a number"),
        ("mode", "minimize", "must be one of min, max, got 'minimize'"),
        ("val_check_interval", 0, "fraction of an epoch"),
        ("val_check_interval", 2.5, "whole number of batches"),
        ("precision", "fp8", "must be one of fp16, bf16, fp32, got 'fp8'"),
        ("precision", "16-mixed", "must be one of fp16, bf16, fp32"),
        ("accelerator", "tpu", "must be one of auto, cpu, gpu"),
        ("devices", 0, "must be >= 1"),
        ("num_nodes", 0, "must be >= 1"),
        ("default_root_dir", "relative/dir", "must be an absolute path"),
        ("seed", -1, "must be >= 0"),
        ("seed", 2**32, "must be <="),
        ("save_top_k", -2, "must be >= -1"),
        ("test_after_fit", 1, "must be a boolean"),
        ("resume", "latest", "must be one of last, best, none or an absolute checkpoint path"),
        ("resume", "ckpts/x.ckpt", "absolute checkpoint path"),
        ("termination_log", "termlog", "must be an absolute path"),
        ("ddp_timeout_seconds", 0, "must be >= 1"),
        ("log_every_n_steps", 0, "must be >= 1"),
    ],
)
def test_each_invalid_field_is_named(field: str, value: object, message: str) -> None:
    raw = {"model_class": "digits_cnn", field: value}
    with pytest.raises(ConfigError) as err:
        config.parse(raw, {})
    assert err.value.field == field
    assert str(err.value).startswith(f"config: {field}: ")
    assert message in str(err.value)


def test_the_contract_example_message() -> None:
    with pytest.raises(ConfigError, match=r"^config: precision: must be one of fp16, bf16, fp32, got 'fp8'$"):
        config.parse({"model_class": "m", "precision": "fp8"}, {})


def test_model_class_is_required_and_unknown_keys_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^config: model_class: required"):
        config.parse({}, {})
    with pytest.raises(ConfigError, match=r"^config: max_epoch: unknown setting"):
        config.parse({"model_class": "m", "max_epoch": 3}, {})
    with pytest.raises(ConfigError, match=r"must hold a mapping"):
        config.parse(["model_class"], {})


def test_argument_mappings_need_identifier_keys() -> None:
    with pytest.raises(ConfigError, match=r"^config: model_args\.hidden-size: "):
        config.parse({"model_class": "m", "model_args": {"hidden-size": 3}}, {})


def test_registered_names_are_checked_when_known() -> None:
    with pytest.raises(ConfigError, match=r"^config: model_class: 'nope' is not a registered model \(registered: a, b\)"):
        config.parse({"model_class": "nope"}, {}, known_models={"a", "b"}, known_data={"digits"})
    with pytest.raises(ConfigError, match=r"^config: data_class: 'mnist' is not a registered datamodule"):
        config.parse({"model_class": "a", "data_class": "mnist"}, {}, known_models={"a"}, known_data={"digits"})


def test_val_check_interval_numbers_survive_json() -> None:
    # 1 and 1.0 are the same JSON number: both mean once per epoch.
    assert config.parse({"model_class": "m", "val_check_interval": 1}, {}).val_check_interval == 1.0
    assert isinstance(config.parse({"model_class": "m", "val_check_interval": 1}, {}).val_check_interval, float)
    assert config.parse({"model_class": "m", "val_check_interval": 0.5}, {}).val_check_interval == 0.5
    parsed = config.parse({"model_class": "m", "val_check_interval": 50.0}, {}).val_check_interval
    assert parsed == 50 and isinstance(parsed, int)


def test_environment_overrides_win_and_are_typed() -> None:
    env = {
        "LTJ_MAX_EPOCHS": "3", "LTJ_EARLY_STOPPING": "false", "LTJ_EARLY_STOP_MIN_DELTA": "0.5",
        "LTJ_MODEL_ARGS": '{"hidden_sizes": [8]}', "LTJ_VAL_CHECK_INTERVAL": "0.5", "LTJ_PRECISION": "bf16",
        "LTJ_RESUME": "none", "LTJ_JOB_NAME": "j", "LTJ_ATTEMPT": "2", "LTJ_CONFIG": "/x",  # not settings
        "MAX_EPOCHS": "99",
    }
    cfg = config.parse({"model_class": "tabular_mlp", "max_epochs": 10}, env)
    assert cfg.max_epochs == 3
    assert cfg.early_stopping is False
    assert cfg.early_stop_min_delta == 0.5
    assert cfg.model_args == {"hidden_sizes": [8]}
    assert cfg.val_check_interval == 0.5
    assert (cfg.precision, cfg.resume) == ("bf16", "none")
    assert config.parse({}, {"LTJ_MODEL_CLASS": "digits_cnn"}).model_class == "digits_cnn"


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("LTJ_MAX_EPOCHS", "three", "must be an integer, got 'three'"),
        ("LTJ_EARLY_STOPPING", "maybe", "must be a boolean"),
        ("LTJ_MODEL_ARGS", "[1, 2]", "must be a mapping"),
        ("LTJ_MODEL_ARGS", "{a: [", "must be a YAML/JSON mapping"),
        ("LTJ_MODE", "up", "must be one of min, max"),
        ("LTJ_SEED", "1e3", "must be an integer"),
    ],
)
def test_bad_environment_override_names_the_variable(var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse({"model_class": "m"}, {var: value})
    assert str(err.value).startswith(f"config: {var}: ")
    assert message in str(err.value)


def test_resume_best_needs_top_k() -> None:
    with pytest.raises(ConfigError, match=r"^config: resume: 'best' needs save_top_k"):
        config.parse({"model_class": "m", "resume": "best", "save_top_k": 0}, {})


def test_load_reads_the_file_named_by_flag_or_env(tmp_path: Path) -> None:
    f = tmp_path / "trainer.yaml"
    f.write_text("model_class: digits_cnn\nmax_epochs: 4\n")
    assert config.load(str(f), {}).max_epochs == 4
    assert config.load(None, {"LTJ_CONFIG": str(f), "LTJ_MAX_EPOCHS": "2"}).max_epochs == 2


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: file not found: "):
        config.load(str(tmp_path / "missing.yaml"), {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_class: [unclosed\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML"):
        config.load(str(bad), {})
    # The default path may be absent: then everything comes from the environment.
    assert config.config_path(None, {}) == (CONFIG_PATH, False)
