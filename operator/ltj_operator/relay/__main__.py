"""Entry point of the ``ltj-relay`` console script."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Sequence

from .config import ConfigError, parse
from .core import Relay
from .kube import Endpoint, JobStatusClient


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = parse(argv)
    except ConfigError as e:
        print(f"ltj-relay: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, cfg.log_level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        client = JobStatusClient(Endpoint(cfg.server, cfg.token_file, cfg.ca_file, cfg.request_timeout),
                                 cfg.namespace, cfg.job)
    except ValueError as e:
        print(f"ltj-relay: {e}", file=sys.stderr)
        return 2
    relay = Relay(cfg, client)

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("ltj.relay").info("received %s: draining", signal.Signals(signum).name)
        relay.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return relay.run()


if __name__ == "__main__":
    sys.exit(main())
