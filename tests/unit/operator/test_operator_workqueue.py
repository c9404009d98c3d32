"""workqueue.py: per-job serialized reconciles, on an event loop whose clock the test controls.

The loop is looptime's (kopf's own test clock): time advances only when every ready task has run,
straight to the next timer. So `await asyncio.sleep(s)` lets all due work finish, the times seen
by the work are exact, and an hour of requeues takes no wall-clock time.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable

import looptime
import pytest

from ltj_operator.workqueue import WorkQueue

pytestmark = pytest.mark.unit


def run(coro: Awaitable[None]) -> None:
    loop = looptime.new_event_loop(start=0.0, end=7200.0)  # end: a hung scenario fails, never hangs
    try:
        loop.run_until_complete(coro)
    finally:
        loop.close()


def test_pokes_during_a_pass_coalesce_into_one_more_pass_never_a_parallel_one() -> None:
    async def scenario() -> None:
        active = 0
        peak = 0
        passes = 0
        release = asyncio.Event()

        async def work(key: str) -> float | None:
            nonlocal active, peak, passes
            active += 1
            peak = max(peak, active)
            passes += 1
            if passes == 1:
                await release.wait()
            active -= 1
            return None if passes >= 2 else 3600.0

        queue: WorkQueue[str] = WorkQueue(work, resync_seconds=3600)
        queue.poke("a")
        await asyncio.sleep(1)
        for _ in range(5):
            queue.poke("a")  # while the first pass runs
        release.set()
        await asyncio.sleep(1)
        assert passes == 2 and peak == 1
        assert "a" not in queue and len(queue) == 0  # gone after work said so

    run(scenario())


def test_requeue_after_and_independent_keys() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        calls: dict[str, list[float]] = {"a": [], "b": []}

        async def work(key: str) -> float | None:
            calls[key].append(loop.time())
            if key == "a":
                return 5.0 if len(calls[key]) < 3 else None
            return None

        queue: WorkQueue[str] = WorkQueue(work, resync_seconds=3600)
        queue.poke("a")
        queue.poke("b")
        await asyncio.sleep(60)
        assert calls == {"a": [0.0, 5.0, 10.0], "b": [0.0]}
        assert len(queue) == 0

    run(scenario())


def test_resync_caps_the_wait() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def work(key: str) -> float | None:
            times.append(loop.time())
            return 3600.0 if len(times) < 3 else None

        queue: WorkQueue[str] = WorkQueue(work, resync_seconds=60)
        queue.poke("k")
        await asyncio.sleep(600)
        assert times == [0.0, 60.0, 120.0]

    run(scenario())


def test_failures_are_retried_with_capped_backoff_first_quietly_and_stop_cancels(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def work(key: str) -> float | None:
            times.append(loop.time())
            if len(times) <= 4:
                raise RuntimeError(f"API server unavailable ({len(times)})")
            return 3600.0

        queue: WorkQueue[str] = WorkQueue(work, resync_seconds=3600, min_backoff=1, max_backoff=3)
        queue.poke("k")
        await asyncio.sleep(60)
        assert times == [0.0, 1.0, 3.0, 6.0, 9.0]  # waits 1, 2, then capped at 3
        assert "k" in queue  # alive, waiting for its next resync
        await queue.stop()
        assert len(queue) == 0

    with caplog.at_level("WARNING", logger="ltj_operator.workqueue"):
        run(scenario())
    # The first failures in a row are one-line warnings (the API server may be starting), then errors.
    records = [(r.levelname, r.exc_info is not None) for r in caplog.records]
    assert records == [("WARNING", False), ("WARNING", False), ("ERROR", True), ("ERROR", True)]
    assert caplog.records[0].getMessage() == "reconcile of k failed (attempt 1): API server unavailable (1); retrying in 1s"


def test_pokes_do_not_cut_a_failure_backoff_short() -> None:
    async def scenario() -> None:
        times: list[float] = []
        loop = asyncio.get_running_loop()

        async def work(key: str) -> float | None:
            times.append(loop.time())
            if len(times) == 1:
                raise RuntimeError("refused")
            return None

        queue: WorkQueue[str] = WorkQueue(work, resync_seconds=3600, min_backoff=10)
        queue.poke("k")
        await asyncio.sleep(1)
        queue.poke("k")  # e.g. the watch event of the failed pass's own status write
        await asyncio.sleep(60)
        assert times == [0.0, 10.0]

    run(scenario())


def test_at_most_slots_passes_run_and_a_freed_slot_goes_to_the_best_ranked_waiter() -> None:
    async def scenario() -> None:
        order: list[str] = []
        active = 0
        peak = 0
        release = asyncio.Event()

        async def work(key: str) -> float | None:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            order.append(key)
            if key.startswith("busy"):
                await release.wait()
            active -= 1
            return None

        # "new-*" rank 0 (e.g. jobs waiting for their pods), the rest 1.
        queue: WorkQueue[str] = WorkQueue(work, resync_seconds=3600, slots=2,
                                          priority=lambda key: 0 if key.startswith("new") else 1)
        queue.poke("busy-1")
        queue.poke("busy-2")
        await asyncio.sleep(1)
        for key in ("old-1", "new-1", "old-2", "new-2"):
            queue.poke(key)  # all wait: both slots are taken
        await asyncio.sleep(1)
        assert order == ["busy-1", "busy-2"]
        release.set()
        await asyncio.sleep(1)
        assert order[2:] == ["new-1", "new-2", "old-1", "old-2"]  # by rank, then by arrival
        assert peak == 2 and len(queue) == 0

    run(scenario())


def test_pokes_while_waiting_for_a_slot_are_served_by_that_pass() -> None:
    async def scenario() -> None:
        calls = {"busy": 0, "k": 0}
        release = asyncio.Event()

        async def work(key: str) -> float | None:
            calls[key] += 1
            if key == "busy":
                await release.wait()
            return None

        queue: WorkQueue[str] = WorkQueue(work, resync_seconds=3600, slots=1)
        queue.poke("busy")
        await asyncio.sleep(1)
        for _ in range(3):
            queue.poke("k")  # e.g. several watch events of the same job while the threads are busy
            await asyncio.sleep(1)
        release.set()
        await asyncio.sleep(1)
        assert calls == {"busy": 1, "k": 1} and len(queue) == 0

    run(scenario())


def test_a_waiter_cancelled_by_stop_leaves_no_slot_taken() -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        done: list[str] = []

        async def work(key: str) -> float | None:
            await release.wait()
            done.append(key)
            return None

        queue: WorkQueue[str] = WorkQueue(work, resync_seconds=3600, slots=1)
        queue.poke("a")
        queue.poke("b")  # waits for the only slot
        await asyncio.sleep(1)
        await queue.stop()
        release.set()
        queue.poke("c")  # the slot "a" held is free again, and "b" holds none
        await asyncio.sleep(1)
        assert done == ["c"]

    run(scenario())
