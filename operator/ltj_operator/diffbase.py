"""A diff base for an operator that has only event handlers.

kopf builds the "essence" of every object on every watch event (a deep copy of the whole body) to
detect changes for on.create/on.update/on.resume handlers, whether or not any exist. This operator
registers none (kopf only delivers events; the work queue does the rest), so the essence is never
read, and copying every body on every event only takes the event loop's time from the jobs. This
storage makes it an empty, constant essence and keeps nothing on the objects.
"""

from __future__ import annotations

from typing import Any, Iterable

import kopf


class EventsOnlyDiffBaseStorage(kopf.DiffBaseStorage):
    def build(self, *, body: Any, extra_fields: Iterable[Any] | None = None) -> Any:
        return kopf.BodyEssence()

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None
