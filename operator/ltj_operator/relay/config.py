"""The relay's settings: environment (as the operator renders the sidecar) and command-line flags."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ltj_api.trainer import EVENTS_PATH as DEFAULT_EVENTS_FILE

DEFAULT_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ConfigError(ValueError):
    """A missing or invalid setting; the message names it."""


@dataclass(frozen=True)
class RelayConfig:
    job: str
    namespace: str
    events_file: Path
    server: str
    token_file: Path
    ca_file: Path | None
    min_interval: float = 1.0  # seconds between status writes (final events skip the wait)
    poll_interval: float = 0.15  # seconds between reads of the events file
    drain_seconds: float = 5.0  # SIGTERM: the longest we spend on the final write
    request_timeout: float = 5.0
    max_backoff: float = 10.0
    log_level: str = "INFO"


def _positive(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: must be a number of seconds, got {raw!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError(f"{name}: must be a positive number of seconds, got {raw!r}")
    return value


def _server_from_env(env: Mapping[str, str]) -> str | None:
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"https://{host}:{port}"


def parse(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> RelayConfig:
    env = os.environ if env is None else env
    p = argparse.ArgumentParser(
        prog="ltj-relay",
        description="Follows a training job's events file and writes status.training of its LightningTrainingJob.")
    p.add_argument("--job", default=env.get("LTJ_JOB_NAME"), help="job name [LTJ_JOB_NAME]")
    p.add_argument("--namespace", default=env.get("LTJ_NAMESPACE"), help="namespace [LTJ_NAMESPACE, else the SA's]")
    p.add_argument("--events-file", default=env.get("LTJ_EVENTS_FILE", DEFAULT_EVENTS_FILE),
                   help=f"events file [LTJ_EVENTS_FILE, {DEFAULT_EVENTS_FILE}]")
    p.add_argument("--server", default=None,
                   help="API server URL [https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT]")
    p.add_argument("--sa-dir", default=env.get("LTJ_SA_DIR", DEFAULT_SA_DIR),
                   help="service-account directory with token, ca.crt, namespace [LTJ_SA_DIR]")
    p.add_argument("--token-file", default=None, help="bearer token file [<sa-dir>/token]")
    p.add_argument("--ca-file", default=None, help="CA bundle [<sa-dir>/ca.crt]")
    p.add_argument("--min-interval", default=env.get("LTJ_RELAY_MIN_INTERVAL", "1.0"),
                   help="seconds between status writes [LTJ_RELAY_MIN_INTERVAL, 1.0]")
    p.add_argument("--poll-interval", default=env.get("LTJ_RELAY_POLL_INTERVAL", "0.15"))
    p.add_argument("--drain-seconds", default=env.get("LTJ_RELAY_DRAIN_SECONDS", "5"))
    p.add_argument("--max-backoff", default=env.get("LTJ_RELAY_MAX_BACKOFF", "10"))
    p.add_argument("--request-timeout", default=env.get("LTJ_RELAY_REQUEST_TIMEOUT", "5"))
    p.add_argument("--log-level", default=env.get("LTJ_LOG_LEVEL", "INFO"))
    a = p.parse_args(argv)

    sa_dir = Path(a.sa_dir)
    namespace = a.namespace
    if not namespace:
        try:
            namespace = (sa_dir / "namespace").read_text().strip()
        except OSError:
            namespace = None
    if not a.job:
        raise ConfigError("LTJ_JOB_NAME (--job): required")
    if not namespace:
        raise ConfigError(f"LTJ_NAMESPACE (--namespace): required (no {sa_dir / 'namespace'} either)")
    server = a.server or _server_from_env(env)
    if not server:
        raise ConfigError("--server: required outside a pod (KUBERNETES_SERVICE_HOST is not set)")
    if not server.startswith("https://"):
        raise ConfigError(f"--server: must be an https:// URL, got {server!r}")
    ca = Path(a.ca_file) if a.ca_file else sa_dir / "ca.crt"
    return RelayConfig(
        job=a.job,
        namespace=namespace,
        events_file=Path(a.events_file),
        server=server,
        token_file=Path(a.token_file) if a.token_file else sa_dir / "token",
        ca_file=ca if (a.ca_file or ca.exists()) else None,
        min_interval=_positive("LTJ_RELAY_MIN_INTERVAL (--min-interval)", str(a.min_interval)),
        poll_interval=_positive("LTJ_RELAY_POLL_INTERVAL (--poll-interval)", str(a.poll_interval)),
        drain_seconds=_positive("LTJ_RELAY_DRAIN_SECONDS (--drain-seconds)", str(a.drain_seconds)),
        max_backoff=_positive("LTJ_RELAY_MAX_BACKOFF (--max-backoff)", str(a.max_backoff)),
        request_timeout=_positive("LTJ_RELAY_REQUEST_TIMEOUT (--request-timeout)", str(a.request_timeout)),
        log_level=str(a.log_level).upper(),
    )
