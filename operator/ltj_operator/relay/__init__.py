"""ltj-relay: the rank-0 pod's native sidecar that turns the trainer's event log into status.training.

It holds the job's only Kubernetes credential (a per-job ServiceAccount token allowed to get and
patch the status of this one job), tails ``events.jsonl`` on the output volume (mounted
read-only), folds it with :mod:`ltj_operator.training`, and patches ``status.training``.
Standard library only (plus :mod:`ltj_api.events`): no kubernetes client, no torch.
"""

from .config import ConfigError, RelayConfig, parse
from .core import Relay, backoff_delay, next_write_at
from .kube import ApiError, Endpoint, JobStatusClient, Unavailable

__all__ = ["ApiError", "ConfigError", "Endpoint", "JobStatusClient", "Relay", "RelayConfig", "Unavailable",
           "backoff_delay", "next_write_at", "parse"]
