"""The relay's memory is bounded by design: replaying a log ten times longer does not need more room.

Peaks are Python allocations seen by tracemalloc while ``Relay.read()`` replays a synthetic log of
valid events (benchmarks/relay_memory.py writes it, and measures the long logs the issue names)."""

from __future__ import annotations

from pathlib import Path

import pytest

import benchscript

pytestmark = pytest.mark.unit

bench = benchscript.load("relay_memory")


def test_replay_peak_does_not_grow_with_the_log(tmp_path: Path) -> None:
    short, long = 2_500, 25_000
    peaks = {}
    for n in (short, long):
        path = tmp_path / f"events-{n}.jsonl"
        bench.write_log(path, n)
        peak, applied, relay = bench.replay_peak(path)
        assert applied == n and relay.state.seq == n  # every event folded: the bound is not bought by dropping
        peaks[n] = peak
    assert peaks[long] < 2 * peaks[short], peaks
    assert peaks[long] < bench.relay_memory_limit() / 8, peaks
