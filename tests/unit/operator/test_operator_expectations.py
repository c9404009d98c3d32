"""The controller's expectations (expectations.py): what it did that its cache does not show yet."""

from __future__ import annotations

import pytest

from ltj_operator import constants as C
from ltj_operator.expectations import Expectations
from ltj_operator.kube import ObjectCache
from ltj_operator.podview import observe_pod
from unit.operator.operator_helpers import Clock, job_body, pod, running

pytestmark = pytest.mark.unit

NS, J = "team-a", "mnist"


def setup() -> tuple[ObjectCache, Expectations, Clock]:
    clock = Clock()
    cache = ObjectCache(max_age=50, clock=clock)
    cache.put_job(job_body(name=J))
    cache.put_pods(NS, J, [], list_rv=1)
    return cache, Expectations(cache), clock


def names(views: tuple) -> list[tuple[str, bool]]:
    return sorted((v.name, v.deleting) for v in views)


def test_created_pods_are_seen_until_the_cache_shows_them() -> None:
    cache, expectations, _ = setup()
    expectations.created(NS, J, [observe_pod(pod(J, 0)), observe_pod(pod(J, 1))])
    assert names(expectations.pods(NS, J, cache.pods(NS, J))) == [("mnist-node-0", False), ("mnist-node-1", False)]
    cache.put_pod(running(J, 0))  # its watch event: the cache's (newer) view wins
    views = {v.name: v for v in expectations.pods(NS, J, cache.pods(NS, J))}
    assert views["mnist-node-0"].trainer_running and "mnist-node-1" in views
    cache.put_pod(pod(J, 1))
    expectations.pods(NS, J, cache.pods(NS, J))
    assert len(expectations) == 0  # both met: nothing left to remember


def test_a_created_pod_seen_deleted_or_never_shown_is_no_longer_expected() -> None:
    cache, expectations, clock = setup()
    expectations.created(NS, J, [observe_pod(pod(J, 0)), observe_pod(pod(J, 1))])
    cache.forget_pod(pod(J, 0))  # deleted before our pass saw its creation
    assert names(expectations.pods(NS, J, cache.pods(NS, J))) == [("mnist-node-1", False)]
    clock.now += 51  # a watch event lost: the expectation lasts as long as the cache trusts itself
    assert expectations.pods(NS, J, ()) == ()


def test_deleted_pods_are_seen_deleting_until_the_cache_shows_them_so_or_gone() -> None:
    cache, expectations, _ = setup()
    cache.put_pod(running(J, 0))
    cache.put_pod(running(J, 1))
    expectations.deleted(NS, J, [f"pod-{J}-0-0", f"pod-{J}-1-0"])
    assert names(expectations.pods(NS, J, cache.pods(NS, J))) == [("mnist-node-0", True), ("mnist-node-1", True)]
    cache.put_pod(pod(J, 0, deleting=True))
    cache.forget_pod(pod(J, 1))
    assert names(expectations.pods(NS, J, cache.pods(NS, J))) == [("mnist-node-0", True)]
    assert len(expectations) == 0


def test_a_job_awaits_its_pods_while_none_is_seen_or_expected() -> None:
    cache, expectations, _ = setup()
    cache.put_job(job_body(name="other"))
    assert expectations.awaits_pods(NS, J) and expectations.awaits_pods(NS, "other")
    expectations.created(NS, "other", [observe_pod(pod("other", 0))])
    assert not expectations.awaits_pods(NS, "other") and expectations.awaits_pods(NS, J)  # J still waits
    cache.put_pod(pod(J, 0))
    assert not expectations.awaits_pods(NS, J)
    cache.forget_pod(pod(J, 0))
    assert expectations.awaits_pods(NS, J)  # a gang deleted for a restart: the next one is due
    cache.put_job({**job_body(name=J), "status": {"phase": C.PHASE_SUCCEEDED}})
    assert not expectations.awaits_pods(NS, J)  # finished
    assert not expectations.awaits_pods(NS, "unknown")


def test_writes_are_remembered_per_job_until_it_finishes_or_goes() -> None:
    cache, expectations, clock = setup()
    assert expectations.since_write(NS, J) is None
    expectations.wrote(NS, J)
    clock.now += 0.25
    assert expectations.since_write(NS, J) == 0.25
    expectations.deleted(NS, J, ["u"])
    expectations.finished(NS, J)
    assert expectations.since_write(NS, J) is None
    assert len(expectations) == 1  # the deletion is still expected
    expectations.forget(NS, J)
    assert len(expectations) == 0
