"""Per-key serialized work: one worker task per job, wake-ups coalesce, requeue-after and resync.

Why not kopf daemons/timers: they put a finalizer on every job, so deleting a job would hang while
the operator is down or uninstalled. Here kopf only delivers watch events (no finalizers, no
annotations on the job); each event pokes the job's key. A worker reconciles its key, then sleeps
until the next poke or until the requested requeue time (or the resync period), and exits when the
job is gone. Pokes that arrive during a reconcile cause exactly one more pass, never a parallel one.

At most `slots` passes run at once (the reconcile threads). A pass waiting for a slot gets it by its
priority (lower first), then in arrival order: under a burst of new jobs, the passes that create
pods go before the bookkeeping of jobs whose pods exist, so every gang gets its pods sooner.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, Hashable, TypeVar

log = logging.getLogger(__name__)

# Consecutive failures of a key logged as one-line warnings before the traceback of an error: passes
# that fail while the API server or the CRD is still coming up retry quietly.
QUIET_FAILURES = 3

K = TypeVar("K", bound=Hashable)

# work(key) -> seconds until the next pass (None: the key is gone, forget it).
Work = Callable[[K], Awaitable[float | None]]
# priority(key) -> rank of its waiting pass (lower goes first), asked when the pass waits for a slot.
Priority = Callable[[K], int]


@dataclass
class _Worker:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class WorkQueue(Generic[K]):
    def __init__(self, work: Work[K], *, resync_seconds: float, min_backoff: float = 1.0,
                 max_backoff: float = 60.0, slots: int = 4, priority: Priority[K] | None = None):
        self._work = work
        self._free = slots
        self._priority = priority
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        self._resync = resync_seconds
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._workers: dict[K, _Worker] = {}

    def __len__(self) -> int:
        return len(self._workers)

    def __contains__(self, key: object) -> bool:
        return key in self._workers

    def poke(self, key: K) -> None:
        """Reconcile `key` soon (call from the event loop's thread)."""
        worker = self._workers.get(key)
        if worker is None or worker.task is None or worker.task.done():
            worker = _Worker()
            self._workers[key] = worker
            worker.task = asyncio.get_running_loop().create_task(self._run(key, worker), name=f"reconcile {key}")
        worker.wake.set()

    async def _run(self, key: K, worker: _Worker) -> None:
        failures = 0
        try:
            while True:
                await worker.wake.wait()
                try:
                    await self._acquire(key)
                    worker.wake.clear()  # pokes while waiting for a slot are served by this pass
                    try:
                        delay = await self._work(key)
                    finally:
                        self._release()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a failed pass is retried with backoff, never fatal
                    failures += 1
                    backoff = min(self._max_backoff, self._min_backoff * 2 ** (failures - 1))
                    if failures < QUIET_FAILURES:  # e.g. the API server or the CRD still starting
                        log.warning("reconcile of %s failed (attempt %d): %s; retrying in %.0fs", key, failures,
                                    exc, backoff)
                    else:
                        log.exception("reconcile of %s failed (attempt %d); retrying in %.0fs", key, failures,
                                      backoff)
                    # Pokes do not cut the backoff short: the failed pass may itself have caused them
                    # (a status write), and a hot loop against a refusing API server helps nobody.
                    await asyncio.sleep(backoff)
                    worker.wake.set()
                    continue
                if delay is None:
                    if worker.wake.is_set():
                        continue  # poked again while finishing: look once more before forgetting
                    return
                try:
                    await asyncio.wait_for(worker.wake.wait(), timeout=min(delay, self._resync))
                except asyncio.TimeoutError:
                    worker.wake.set()
        finally:
            if self._workers.get(key) is worker:
                del self._workers[key]

    async def _acquire(self, key: K) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        rank = self._priority(key) if self._priority is not None else 0
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (rank, next(self._arrivals), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # granted as it was cancelled: pass the slot on
            raise

    def _release(self) -> None:
        while self._waiting:
            _, _, granted = heapq.heappop(self._waiting)
            if not granted.done():
                granted.set_result(None)  # the slot moves to the waiter without becoming free
                return
        self._free += 1

    async def stop(self) -> None:
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
