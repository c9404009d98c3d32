"""What a rank's log leaves out of Lightning's and torch's output, and why: this table is the one place.

Each entry is a message's fixed opening, matched exactly, and whether it arrives as a log record or
as a Python warning. Only messages that are wrong or of no use for a job the operator runs belong
here: a user could act on none of them. Stdlib only: installed before Lightning is imported.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class Dropped:
    opening: str  # the message starts with this text
    warning: bool  # a Python warning (warnings.warn); else a log record
    why: str


DROPPED = (
    Dropped("💡 Tip: For seamless cloud logging and experiment tracking", False,
            "an advert for Lightning's hosted logger (litlogger), at every Trainer construction"),
    Dropped("💡 Tip: For seamless cloud uploads and versioning", False,
            "an advert for Lightning's model registry (litmodels)"),
    Dropped('.fit(ckpt_path="last") is set, but there is no last checkpoint available.', True,
            "said at every job's first start, with a hint to set ModelCheckpoint(save_last=True), which the "
            "trainer always does; the trainer logs 'training from the first epoch' instead"),
    Dropped("`isinstance(treespec, LeafSpec)` is deprecated", True,
            "torch deprecating an API that Lightning itself calls, at every fit: nothing a user can change"),
)


class _DropRecords(logging.Filter):
    def __init__(self, openings: tuple[str, ...]):
        super().__init__()
        self.openings = openings

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.openings)


def install(handler: logging.Handler) -> None:
    """Drops the table's log records at `handler` and its warnings process-wide."""
    handler.addFilter(_DropRecords(tuple(d.opening for d in DROPPED if not d.warning)))
    for d in DROPPED:
        if d.warning:
            warnings.filterwarnings("ignore", message=re.escape(d.opening))
