"""Operator configuration: read from the environment once at startup, validated, immutable.

Every error names the variable, so a bad Deployment fails at start with a message that says what to
fix instead of misbehaving later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from . import __version__
from .spec import _DNS1123_SUBDOMAIN

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Loose image reference check: no whitespace, no scheme; registries validate the rest.
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@]*$")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


class ConfigError(ValueError):
    """An invalid operator setting; the message starts with the environment variable's name."""


@dataclass(frozen=True)
class OperatorConfig:
    default_trainer_image: str = f"ltj-trainer:{__version__}"
    operator_image: str = f"ltj-operator:{__version__}"
    # Pull policy of the relay sidecar (the operator's own image).
    relay_image_pull_policy: str = "IfNotPresent"
    watch_namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    # Pull secrets every training pod gets besides its job's own (private registries without a
    # per-job secret); each must exist in the job's namespace.
    default_image_pull_secrets: tuple[str, ...] = ()
    log_level: str = "INFO"
    # Stalled when no training event arrived for stall_factor x the recent event interval ...
    stall_factor: float = 5.0
    # ... and at least this long (the first epoch of a big model may take long before any event).
    stall_min_seconds: float = 600.0
    resync_seconds: float = 60.0
    workers: int = 4
    health_port: int = 8080
    # Prometheus metrics (prometheus_client's HTTP server); 0: not served.
    metrics_port: int = 8081
    # Leader election: the namespace of the Lease the replicas compete for (the chart's release
    # namespace); empty: no election, this process always acts (one replica, tests).
    lease_namespace: str = ""
    # How long a lease nobody renews stays taken; the leader stops acting renew_deadline after its
    # last renewal and retries every retry_period (lease > renew deadline > retry: see leader.py).
    lease_duration_seconds: float = 15.0
    lease_renew_deadline_seconds: float = 10.0
    lease_retry_period_seconds: float = 2.0
    relay_token_expiration_seconds: int = 3600
    # A NetworkPolicy per job: ingress to its pods only from its own pods (the rendezvous and the
    # collectives' ports take no credentials). On unless the platform opts out.
    network_policy: bool = True

    @property
    def clusterwide(self) -> bool:
        return not self.watch_namespaces

    def watches(self, namespace: str | None) -> bool:
        return self.clusterwide or namespace in self.watch_namespaces

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "OperatorConfig":
        d = cls()
        config = cls(
            default_trainer_image=_image(env, "LTJ_DEFAULT_TRAINER_IMAGE", d.default_trainer_image),
            operator_image=_image(env, "LTJ_OPERATOR_IMAGE", d.operator_image),
            relay_image_pull_policy=_choice(env, "LTJ_RELAY_IMAGE_PULL_POLICY", PULL_POLICIES,
                                            d.relay_image_pull_policy),
            watch_namespaces=_names(env, "LTJ_WATCH_NAMESPACES", _DNS_LABEL, 63, "namespace"),
            default_image_pull_secrets=_names(env, "LTJ_DEFAULT_IMAGE_PULL_SECRETS", _DNS1123_SUBDOMAIN, 253,
                                              "Secret"),
            log_level=_choice(env, "LTJ_LOG_LEVEL", LOG_LEVELS, d.log_level, upper=True),
            stall_factor=_number(env, "LTJ_STALL_FACTOR", d.stall_factor, minimum=1.0, exclusive=True),
            stall_min_seconds=_number(env, "LTJ_STALL_MIN_SECONDS", d.stall_min_seconds, minimum=0.0),
            resync_seconds=_number(env, "LTJ_RESYNC_SECONDS", d.resync_seconds, minimum=1.0),
            workers=int(_number(env, "LTJ_WORKERS", d.workers, minimum=1, integer=True)),
            health_port=int(_number(env, "LTJ_HEALTH_PORT", d.health_port, minimum=1, maximum=65535,
                                    integer=True)),
            metrics_port=int(_number(env, "LTJ_METRICS_PORT", d.metrics_port, minimum=0, maximum=65535,
                                     integer=True)),
            lease_namespace=_lease_namespace(env, "LTJ_LEASE_NAMESPACE"),
            lease_duration_seconds=_number(env, "LTJ_LEASE_DURATION_SECONDS", d.lease_duration_seconds, minimum=1.0),
            lease_renew_deadline_seconds=_number(env, "LTJ_LEASE_RENEW_DEADLINE_SECONDS",
                                                 d.lease_renew_deadline_seconds, minimum=0.5),
            lease_retry_period_seconds=_number(env, "LTJ_LEASE_RETRY_PERIOD_SECONDS", d.lease_retry_period_seconds,
                                               minimum=0.1),
            # The API server refuses token requests shorter than 10 minutes.
            relay_token_expiration_seconds=int(_number(env, "LTJ_RELAY_TOKEN_EXPIRATION_SECONDS",
                                                       d.relay_token_expiration_seconds, minimum=600,
                                                       maximum=86400, integer=True)),
            network_policy=_flag(env, "LTJ_NETWORK_POLICY", d.network_policy),
        )
        if config.metrics_port and config.metrics_port == config.health_port:
            raise ConfigError(f"LTJ_METRICS_PORT: must differ from LTJ_HEALTH_PORT, both are {config.metrics_port}")
        # A leader must stop acting before a standby may take the lease, and retry within its deadline.
        if config.lease_renew_deadline_seconds >= config.lease_duration_seconds:
            raise ConfigError(f"LTJ_LEASE_RENEW_DEADLINE_SECONDS: must be < LTJ_LEASE_DURATION_SECONDS "
                              f"({config.lease_duration_seconds:g}), got {config.lease_renew_deadline_seconds:g}")
        if config.lease_retry_period_seconds >= config.lease_renew_deadline_seconds:
            raise ConfigError(f"LTJ_LEASE_RETRY_PERIOD_SECONDS: must be < LTJ_LEASE_RENEW_DEADLINE_SECONDS "
                              f"({config.lease_renew_deadline_seconds:g}), got {config.lease_retry_period_seconds:g}")
        return config


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _image(env: Mapping[str, str], name: str, default: str) -> str:
    value = _raw(env, name)
    if value is None:
        return default
    if not _IMAGE.match(value) or "://" in value:
        raise ConfigError(f"{name}: not a container image reference: {value!r}")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str,
            upper: bool = False) -> str:
    value = _raw(env, name)
    if value is None:
        return default
    if upper:
        value = value.upper()
    if value not in choices:
        raise ConfigError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _raw(env, name)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise ConfigError(f"{name}: must be true or false, got {value!r}")
    return value.lower() == "true"


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float | None = None,
            maximum: float | None = None, exclusive: bool = False, integer: bool = False) -> float:
    value = _raw(env, name)
    if value is None:
        return default
    try:
        number = float(int(value)) if integer else float(value)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name}: must be {kind}, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(f"{name}: must be finite, got {value!r}")
    if minimum is not None and (number <= minimum if exclusive else number < minimum):
        raise ConfigError(f"{name}: must be {'>' if exclusive else '>='} {minimum:g}, got {value!r}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{name}: must be <= {maximum:g}, got {value!r}")
    return number


def _names(env: Mapping[str, str], name: str, pattern: re.Pattern[str], max_len: int,
           what: str) -> tuple[str, ...]:
    """A comma-separated list of object names."""
    value = _raw(env, name)
    if value is None:
        return ()
    names = [part.strip() for part in value.split(",") if part.strip()]
    for item in names:
        if len(item) > max_len or not pattern.match(item):
            raise ConfigError(f"{name}: {item!r} is not a valid {what} name")
    # Keep the order the admin wrote, drop repeats.
    return tuple(dict.fromkeys(names))


def _lease_namespace(env: Mapping[str, str], name: str) -> str:
    value = _raw(env, name)
    if value is None:
        return ""
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ConfigError(f"{name}: {value!r} is not a valid namespace name")
    return value
