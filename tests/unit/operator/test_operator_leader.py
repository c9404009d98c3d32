"""Leader election over a Lease: two candidates against one in-memory API server, on a clock the test moves."""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterator

import pytest

from ltj_operator.kube import ApiError, ObjectCache
from ltj_operator.leader import LEASE_API_VERSION, LEASE_NAME, LeaderElector, Timing
from unit.operator.fake_api import FakeApi
from unit.operator.operator_helpers import Clock

NS = "ltj-system"
TIMING = Timing(duration=15, renew_deadline=10, retry_period=2)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(clock: Clock) -> Iterator[FakeApi]:
    api = FakeApi(ObjectCache(max_age=50, clock=clock))
    yield api
    api.close()


def candidate(api: FakeApi, clock: Clock, name: str) -> LeaderElector:
    return LeaderElector(api, NS, name, TIMING, clock=clock,
                         wall=lambda: dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=clock.now))


def lease(api: FakeApi) -> dict[str, Any]:
    found = api.get_object(LEASE_API_VERSION, "Lease", NS, LEASE_NAME)
    assert found is not None
    return found["spec"]


def test_the_first_candidate_takes_the_lease_and_the_second_stands_by(api: FakeApi, clock: Clock) -> None:
    a, b = candidate(api, clock, "a"), candidate(api, clock, "b")
    assert a.step() and a.leading()
    assert not b.step() and not b.leading()
    spec = lease(api)
    assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 15 and spec["leaseTransitions"] == 0
    assert spec["renewTime"] == spec["acquireTime"] == "2025-03-01T00:16:40.000000Z"


def test_a_renewing_leader_keeps_the_lease_for_good(api: FakeApi, clock: Clock) -> None:
    a, b = candidate(api, clock, "a"), candidate(api, clock, "b")
    a.step()
    acquired = lease(api)["acquireTime"]
    for _ in range(30):  # far longer than the lease's duration, renewed every retry period
        clock.now += TIMING.retry_period
        assert a.step() and a.leading()
        assert not b.step()
    assert lease(api)["holderIdentity"] == "a" and lease(api)["acquireTime"] == acquired


def test_a_leader_that_cannot_renew_stops_acting_before_a_standby_may_take_over(api: FakeApi, clock: Clock) -> None:
    a, b = candidate(api, clock, "a"), candidate(api, clock, "b")
    a.step()
    b.step()  # b sees a's record now and measures the lease from here, on its own clock
    clock.now += TIMING.renew_deadline - 0.1
    assert a.leading()
    clock.now += 0.1
    assert not a.leading()  # a (partitioned, say) no longer acts ...
    clock.now += TIMING.duration - TIMING.renew_deadline - 0.1
    assert not b.step()  # ... while the lease is still a's for b
    clock.now += 0.1
    assert b.step() and b.leading()
    spec = lease(api)
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    assert not a.step() and not a.leading()  # a's partition heals: b holds the lease, a stands by


def test_a_standby_measures_the_lease_from_when_it_saw_it_change(api: FakeApi, clock: Clock) -> None:
    """The holder's renewTime comes from another machine's clock: a standby started later than the last
    renewal still waits a whole lease duration from its own first sight of the record."""
    a = candidate(api, clock, "a")
    a.step()
    clock.now += 60  # a died long ago (its renewTime is old) ...
    b = candidate(api, clock, "b")
    assert not b.step()  # ... but b has only just seen the record
    clock.now += TIMING.duration
    assert b.step()


def test_of_two_candidates_racing_for_a_free_lease_one_wins(api: FakeApi, clock: Clock) -> None:
    a, b = candidate(api, clock, "a"), candidate(api, clock, "b")
    a.step()
    a.release()
    read = api.get

    def a_writes_first(*args: Any) -> Any:
        found = read(*args)
        api.get = read  # type: ignore[method-assign]
        assert a.step()  # a takes the free lease between b's read and b's write
        return found

    api.get = a_writes_first  # type: ignore[method-assign]
    assert not b.step() and not b.leading()  # b's write was conditional on what it read: 409
    assert lease(api)["holderIdentity"] == "a" and a.leading()


def test_a_released_lease_is_taken_at_the_next_try(api: FakeApi, clock: Clock) -> None:
    a, b = candidate(api, clock, "a"), candidate(api, clock, "b")
    a.step()
    assert not b.step()
    a.release()
    assert not a.leading() and not lease(api).get("holderIdentity")
    assert b.step() and lease(api)["holderIdentity"] == "b" and lease(api)["leaseTransitions"] == 1
    assert not a.step()


def test_failed_renewals_depose_the_leader_only_at_the_deadline(api: FakeApi, clock: Clock,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    a = candidate(api, clock, "a")
    a.step()

    def unavailable(manifest: Any) -> Any:
        raise ApiError(503, "ServiceUnavailable", "the API server is restarting")

    monkeypatch.setattr(api, "replace", unavailable)
    clock.now += TIMING.retry_period
    assert a.step()  # one failed renewal: still within the deadline of the last good one
    clock.now += TIMING.renew_deadline - TIMING.retry_period
    assert not a.step() and not a.leading()


def test_lease_timing_must_leave_a_leader_time_to_stop() -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < duration"):
        Timing(duration=10, renew_deadline=10, retry_period=2)
    with pytest.raises(ValueError):
        Timing(duration=15, renew_deadline=10, retry_period=10)
