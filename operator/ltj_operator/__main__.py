"""`python -m ltj_operator`: kopf run with the namespaces and liveness endpoint taken from the
operator's own configuration (the image's entrypoint). Equivalent by hand:
`kopf run -m ltj_operator.handlers --standalone --all-namespaces --liveness=http://0.0.0.0:8080/healthz`.
kopf's peering stays off: replicas elect their leader with a Lease of their own (leader.py).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

from .config import ConfigError, OperatorConfig


def kopf_options(config: OperatorConfig) -> dict[str, object]:
    """Arguments for kopf.run derived from the configuration."""
    return {
        "liveness_endpoint": f"http://0.0.0.0:{config.health_port}/healthz",
        "clusterwide": config.clusterwide,
        "namespaces": list(config.watch_namespaces),
        "standalone": True,
    }


def main(argv: Sequence[str] | None = None) -> int:
    del argv  # no flags: everything comes from the environment, like in the Deployment
    try:
        config = OperatorConfig.from_env(os.environ)
    except ConfigError as exc:
        print(f"ltj-operator: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import kopf

    from . import handlers  # noqa: F401  registers the handlers with kopf's default registry

    kopf.run(**kopf_options(config))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
