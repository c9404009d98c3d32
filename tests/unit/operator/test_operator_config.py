"""config.py: the operator's environment, validated at startup with errors that name the variable."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from ltj_operator.__main__ import kopf_options
from ltj_operator.config import ConfigError, OperatorConfig

pytestmark = pytest.mark.unit


def test_defaults_without_environment() -> None:
    config = OperatorConfig.from_env({})
    assert config == OperatorConfig()
    assert config.clusterwide and config.watches("anything")
    assert config.default_trainer_image.startswith("ltj-trainer:")
    assert config.operator_image.startswith("ltj-operator:")
    assert config.log_level == "INFO" and config.health_port == 8080
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.log_level = "DEBUG"  # type: ignore[misc]


def test_every_setting_from_the_environment() -> None:
    config = OperatorConfig.from_env({
        "LTJ_DEFAULT_TRAINER_IMAGE": "ghcr.io/x/ltj-trainer:1.2@sha256:" + "a" * 64,
        "LTJ_OPERATOR_IMAGE": "ghcr.io/x/ltj-operator:1.2",
        "LTJ_RELAY_IMAGE_PULL_POLICY": "Always",
        "LTJ_WATCH_NAMESPACES": " team-a, team-b ,team-a,",
        "LTJ_DEFAULT_IMAGE_PULL_SECRETS": "regcred, mirror.example.com,regcred",
        "LTJ_LOG_LEVEL": "debug",
        "LTJ_STALL_FACTOR": "3.5",
        "LTJ_STALL_MIN_SECONDS": "120",
        "LTJ_RESYNC_SECONDS": "15",
        "LTJ_WORKERS": "8",
        "LTJ_HEALTH_PORT": "9090",
        "LTJ_LEASE_NAMESPACE": "ltj-system",
        "LTJ_LEASE_DURATION_SECONDS": "20",
        "LTJ_LEASE_RENEW_DEADLINE_SECONDS": "12.5",
        "LTJ_LEASE_RETRY_PERIOD_SECONDS": "3",
        "LTJ_RELAY_TOKEN_EXPIRATION_SECONDS": "7200",
        "UNRELATED": "ignored",
    })
    assert config.watch_namespaces == ("team-a", "team-b")
    assert not config.clusterwide and config.watches("team-b") and not config.watches("team-c")
    assert config.log_level == "DEBUG" and config.stall_factor == 3.5 and config.stall_min_seconds == 120
    assert (config.resync_seconds, config.workers, config.health_port) == (15, 8, 9090)
    assert config.relay_token_expiration_seconds == 7200
    assert config.lease_namespace == "ltj-system"
    assert (config.lease_duration_seconds, config.lease_renew_deadline_seconds,
            config.lease_retry_period_seconds) == (20, 12.5, 3)
    assert config.relay_image_pull_policy == "Always"
    assert config.default_image_pull_secrets == ("regcred", "mirror.example.com")


@pytest.mark.parametrize(("name", "value", "words"), [
    ("LTJ_DEFAULT_TRAINER_IMAGE", "not an image", "image reference"),
    ("LTJ_OPERATOR_IMAGE", "https://registry/x", "image reference"),
    ("LTJ_RELAY_IMAGE_PULL_POLICY", "Sometimes", "Always, IfNotPresent, Never"),
    ("LTJ_WATCH_NAMESPACES", "team-a,Team_B", "'Team_B' is not a valid namespace"),
    ("LTJ_WATCH_NAMESPACES", "a.b", "'a.b' is not a valid namespace"),
    ("LTJ_DEFAULT_IMAGE_PULL_SECRETS", "regcred,Reg_Cred", "'Reg_Cred' is not a valid Secret name"),
    ("LTJ_DEFAULT_IMAGE_PULL_SECRETS", "x" * 254, "is not a valid Secret name"),
    ("LTJ_LOG_LEVEL", "chatty", "DEBUG, INFO, WARNING, ERROR"),
    ("LTJ_STALL_FACTOR", "abc", "must be a number"),
    ("LTJ_STALL_FACTOR", "1", "must be > 1"),
    ("LTJ_STALL_FACTOR", "nan", "finite"),
    ("LTJ_STALL_MIN_SECONDS", "-1", ">= 0"),
    ("LTJ_RESYNC_SECONDS", "0", ">= 1"),
    ("LTJ_WORKERS", "2.5", "integer"),
    ("LTJ_WORKERS", "0", ">= 1"),
    ("LTJ_HEALTH_PORT", "70000", "<= 65535"),
    ("LTJ_LEASE_NAMESPACE", "Not Valid", "'Not Valid' is not a valid namespace"),
    ("LTJ_LEASE_DURATION_SECONDS", "0", ">= 1"),
    ("LTJ_LEASE_RENEW_DEADLINE_SECONDS", "15", "must be < LTJ_LEASE_DURATION_SECONDS (15)"),
    ("LTJ_LEASE_RETRY_PERIOD_SECONDS", "10", "must be < LTJ_LEASE_RENEW_DEADLINE_SECONDS (10)"),
    ("LTJ_RELAY_TOKEN_EXPIRATION_SECONDS", "60", ">= 600"),
])
def test_invalid_setting_names_the_variable(name: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        OperatorConfig.from_env({name: value})
    assert str(err.value).startswith(f"{name}: ")
    assert words in str(err.value)


def test_blank_values_mean_the_default() -> None:
    assert OperatorConfig.from_env({"LTJ_LOG_LEVEL": "  ", "LTJ_WATCH_NAMESPACES": ""}) == OperatorConfig()


def test_kopf_options_follow_the_configuration() -> None:
    assert kopf_options(OperatorConfig()) == {"liveness_endpoint": "http://0.0.0.0:8080/healthz", "clusterwide": True,
                                              "namespaces": [], "standalone": True}
    # kopf's peering stays off also with leader election: the Lease does it (see leader.py).
    options = kopf_options(OperatorConfig(watch_namespaces=("a", "b"), health_port=9000, lease_namespace="ltj"))
    assert options == {"liveness_endpoint": "http://0.0.0.0:9000/healthz", "clusterwide": False,
                       "namespaces": ["a", "b"], "standalone": True}


def test_module_entrypoint_refuses_a_bad_configuration() -> None:
    env = {**os.environ, "LTJ_STALL_FACTOR": "zero"}
    proc = subprocess.run([sys.executable, "-m", "ltj_operator"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "LTJ_STALL_FACTOR: must be a number" in proc.stderr


@pytest.mark.parametrize(("value", "enabled"), [(None, True), ("true", True), ("False", False), (" false ", False)])
def test_network_policy_toggle(value: str | None, enabled: bool) -> None:
    assert OperatorConfig.from_env({} if value is None else {"LTJ_NETWORK_POLICY": value}).network_policy is enabled


def test_network_policy_toggle_refuses_other_words() -> None:
    with pytest.raises(ConfigError, match=r"^LTJ_NETWORK_POLICY: must be true or false, got 'yes'$"):
        OperatorConfig.from_env({"LTJ_NETWORK_POLICY": "yes"})


def test_default_images_carry_the_installed_distributions_version() -> None:
    from importlib import metadata

    version = metadata.version("ltj-operator")
    config = OperatorConfig()
    assert config.default_trainer_image == f"ltj-trainer:{version}"
    assert config.operator_image == f"ltj-operator:{version}"
