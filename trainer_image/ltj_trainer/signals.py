"""SIGTERM as a flag: the handler only records the signal; training code decides when to stop.

Lightning 2.6's own SIGTERM handler runs a collective (``dist.broadcast``) inside the signal
handler. When the ranks of a gang are signalled at different moments - pods on different nodes
always are - that broadcast pairs with an unrelated collective on the other rank and the job
hangs until the process-group timeout. So the trainer keeps this handler installed and stops
every rank at the same batch (:class:`ltj_trainer.callbacks.GracefulSigterm`). Standard library only.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class SigtermFlag:
    def __init__(self) -> None:
        self._event = threading.Event()

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def install(self) -> None:
        """(Re)install the handler; a no-op outside the main thread, where Python forbids it."""
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) != self.handler:
            signal.signal(signal.SIGTERM, self.handler)
