"""workqueue.py: per-job serialized reconciles on a real event loop."""

from __future__ import annotations

import asyncio

import pytest

from ltj_operator.workqueue import WorkQueue

pytestmark = pytest.mark.unit


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout=20))  # type: ignore[arg-type]


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
        await asyncio.sleep(0.05)
        for _ in range(5):
            queue.poke("a")  # while the first pass runs
        release.set()
        for _ in range(100):
            if "a" not in queue:
                break
            await asyncio.sleep(0.02)
        assert passes == 2 and peak == 1
        assert "a" not in queue and len(queue) == 0  # gone after work said so

    run(scenario())


def test_requeue_after_and_independent_keys() -> None:
    async def scenario() -> None:
        calls: dict[str, int] = {"a": 0, "b": 0}

        async def work(key: str) -> float | None:
            calls[key] += 1
            if key == "a":
                return 0.05 if calls[key] < 3 else None
            return None

        queue: WorkQueue[str] = WorkQueue(work, resync_seconds=3600, min_backoff=0.01)
        queue.poke("a")
        queue.poke("b")
        await asyncio.sleep(0.5)
        assert calls == {"a": 3, "b": 1}
        assert len(queue) == 0

    run(scenario())


def test_resync_caps_the_wait() -> None:
    async def scenario() -> None:
        calls = 0

        async def work(key: str) -> float | None:
            nonlocal calls
            calls += 1
            return 3600.0 if calls < 3 else None

        queue: WorkQueue[str] = WorkQueue(work, resync_seconds=0.05)
        queue.poke("k")
        await asyncio.sleep(0.5)
        assert calls == 3

    run(scenario())


def test_failures_are_retried_with_backoff_first_quietly_and_stop_cancels(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        calls = 0

        async def work(key: str) -> float | None:
            nonlocal calls
            calls += 1
            if calls <= 4:
                raise RuntimeError(f"API server unavailable ({calls})")
            return 3600.0

        queue: WorkQueue[str] = WorkQueue(work, resync_seconds=3600, min_backoff=0.02, max_backoff=0.05)
        queue.poke("k")
        while calls < 5:
            await asyncio.sleep(0.01)
        assert "k" in queue  # alive, waiting for its next resync
        await queue.stop()
        assert len(queue) == 0

    with caplog.at_level("WARNING", logger="ltj_operator.workqueue"):
        run(scenario())
    # The first failures in a row are one-line warnings (the API server may be starting), then errors.
    records = [(r.levelname, r.exc_info is not None) for r in caplog.records]
    assert records == [("WARNING", False), ("WARNING", False), ("ERROR", True), ("ERROR", True)]
    assert "API server unavailable (1)" in caplog.records[0].getMessage()


def test_pokes_do_not_cut_a_failure_backoff_short() -> None:
    async def scenario() -> None:
        times: list[float] = []
        loop = asyncio.get_running_loop()

        async def work(key: str) -> float | None:
            times.append(loop.time())
            if len(times) == 1:
                raise RuntimeError("refused")
            return None

        queue: WorkQueue[str] = WorkQueue(work, resync_seconds=3600, min_backoff=0.3)
        queue.poke("k")
        await asyncio.sleep(0.05)
        queue.poke("k")  # e.g. the watch event of the failed pass's own status write
        await asyncio.sleep(0.6)
        assert len(times) == 2 and times[1] - times[0] >= 0.29

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
        await asyncio.sleep(0.05)
        for key in ("old-1", "new-1", "old-2", "new-2"):
            queue.poke(key)  # all wait: both slots are taken
        await asyncio.sleep(0.05)
        assert order == ["busy-1", "busy-2"]
        release.set()
        for _ in range(100):
            if len(queue) == 0:
                break
            await asyncio.sleep(0.02)
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
        await asyncio.sleep(0.05)
        for _ in range(3):
            queue.poke("k")  # e.g. several watch events of the same job while the threads are busy
            await asyncio.sleep(0.02)
        release.set()
        for _ in range(100):
            if len(queue) == 0:
                break
            await asyncio.sleep(0.02)
        assert calls == {"busy": 1, "k": 1}

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
        await asyncio.sleep(0.05)
        await queue.stop()
        release.set()
        queue.poke("c")  # the slot "a" held is free again, and "b" holds none
        for _ in range(100):
            if done:
                break
            await asyncio.sleep(0.02)
        assert done == ["c"]

    run(scenario())
