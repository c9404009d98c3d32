"""The operator's ObjectCache (kube.py): what it serves, for how long, and what it refuses to revive."""

from __future__ import annotations

from typing import Any

import pytest

from ltj_operator import constants as C
from ltj_operator.kube import ObjectCache
from unit.operator.operator_helpers import Clock

pytestmark = pytest.mark.unit


def job(rv: int, phase: str | None = None, name: str = "j") -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv)}}
    if phase:
        body["status"] = {"phase": phase}
    return body


def pod(name: str, rv: int, uid: str | None = None, phase: str = "Pending", deleting: bool = False,
        job_name: str = "j") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": uid or f"uid-{name}", "resourceVersion": str(rv),
                            "labels": {C.LABEL_JOB_NAME: job_name, C.LABEL_NODE_RANK: name[-1], C.LABEL_ATTEMPT: "0"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase}}


def test_job_served_within_max_age_of_the_last_time_the_api_server_showed_it() -> None:
    clock = Clock()
    cache = ObjectCache(max_age=50, clock=clock)
    assert cache.job("ns", "j") is None
    cache.put_job(job(5))  # a read, a write's response or a watch event
    cache.put_job(job(7, "Running"))  # a newer version replaces it ...
    assert cache.job("ns", "j")["metadata"]["resourceVersion"] == "7"
    clock.now += 40
    cache.put_job(job(6))  # ... an older one does not, and does not count as news
    assert cache.job("ns", "j")["metadata"]["resourceVersion"] == "7"
    clock.now += 11
    assert cache.job("ns", "j") is None  # nothing heard for max_age: the next pass reads the API server
    cache.put_job(job(7, "Running"))  # the same version seen again is fresh news
    assert cache.job("ns", "j") is not None


def test_a_job_version_already_kept_is_no_news() -> None:
    clock = Clock()
    cache = ObjectCache(max_age=50, clock=clock)
    assert cache.put_job(job(5)) is True  # first seen
    assert cache.put_job(job(7)) is True  # e.g. our status write's response ...
    assert cache.put_job(job(7)) is False  # ... and then its watch event: nothing new for the job
    assert cache.put_job(job(6)) is True  # a stale event still differs from what is kept (a pass re-checks)
    clock.now += 60
    assert cache.put_job(job(7)) is False and cache.job("ns", "j") is not None  # but it refreshes the entry
    assert cache.put_job(job(8, "Succeeded")) is True  # finishing is news, and forgets the job
    assert cache.put_job(job(8, "Succeeded")) is True  # a finished job is not kept, so never an echo


def test_finished_deleted_and_forgotten_jobs_are_not_kept() -> None:
    cache = ObjectCache(max_age=50, clock=Clock())
    cache.put_job(job(5))
    cache.put_job(job(9, "Succeeded"))
    assert cache.job("ns", "j") is None
    cache.put_job(job(10))
    cache.put_job({**job(11), "metadata": {**job(11)["metadata"], "deletionTimestamp": "x"}})
    assert cache.job("ns", "j") is None
    cache.put_job(job(12))
    cache.forget_job("ns", "j")
    assert cache.job("ns", "j") is None


def test_pods_come_from_a_list_then_follow_events_and_writes() -> None:
    clock = Clock()
    cache = ObjectCache(max_age=50, clock=clock)
    cache.put_pod(pod("j-node-0", 3))
    assert cache.pods("ns", "j") is None  # never listed: not trusted
    cache.put_pods("ns", "j", [pod("j-node-0", 4)], list_rv=10)
    assert [(p.name, p.phase) for p in cache.pods("ns", "j")] == [("j-node-0", "Pending")]
    cache.put_pod(pod("j-node-1", 11))  # our create's response
    cache.put_pod(pod("j-node-0", 12, phase="Running"))  # an event
    cache.put_pod(pod("j-node-0", 8, phase="Pending"))  # a late, older version
    views = {p.name: p for p in cache.pods("ns", "j")}
    assert views["j-node-0"].phase == "Running" and views["j-node-0"].rank == 0 and "j-node-1" in views
    clock.now += 51
    assert cache.pods("ns", "j") is None


def test_a_list_keeps_newer_pods_and_drops_vanished_ones() -> None:
    cache = ObjectCache(max_age=50, clock=Clock())
    cache.put_pods("ns", "j", [pod("j-node-0", 4), pod("j-node-1", 5)], list_rv=6)
    cache.put_pod(pod("j-node-2", 9))  # created after the next list was taken
    cache.put_pods("ns", "j", [pod("j-node-0", 4)], list_rv=8)  # j-node-1 was deleted unseen
    assert sorted(p.name for p in cache.pods("ns", "j")) == ["j-node-0", "j-node-2"]


def test_deleted_pods_are_not_revived_by_late_responses() -> None:
    cache = ObjectCache(max_age=50, clock=Clock())
    cache.put_pods("ns", "j", [pod("j-node-0", 4, uid="a")], list_rv=5)
    cache.forget_pod(pod("j-node-0", 9, uid="a"))  # the DELETED event
    cache.put_pod(pod("j-node-0", 7, uid="a", deleting=True))  # our delete's response, processed late
    assert cache.pods("ns", "j") == ()
    cache.put_pods("ns", "j", [pod("j-node-0", 6, uid="a")], list_rv=6)  # a list taken before the delete
    assert cache.pods("ns", "j") == ()
    cache.put_pod(pod("j-node-0", 10, uid="b"))  # a new pod with the same name is a different pod
    assert [p.uid for p in cache.pods("ns", "j")] == ["b"]


def test_pods_of_other_jobs_and_unlabelled_pods() -> None:
    cache = ObjectCache(max_age=50, clock=Clock())
    cache.put_pods("ns", "j", [], list_rv=1)
    cache.put_pod(pod("k-node-0", 2, job_name="k"))
    unlabelled = pod("x", 3)
    del unlabelled["metadata"]["labels"]
    cache.put_pod(unlabelled)
    assert cache.pods("ns", "j") == ()
    assert cache.pods("ns", "k") is None


def test_a_finished_jobs_pods_are_dropped_and_not_collected_again() -> None:
    cache = ObjectCache(max_age=50, clock=Clock())
    cache.put_job(job(5, "Running"))
    cache.put_pod(pod("j-node-0", 6))  # the job is known: its pods are followed before the first list
    cache.put_pods("ns", "j", [pod("j-node-0", 6), pod("j-node-1", 7)], list_rv=7)
    assert len(cache) == 3
    cache.put_job(job(9, "Succeeded"))
    cache.put_pod(pod("j-node-0", 10, phase="Succeeded"))  # later events of its pods
    assert len(cache) == 0 and cache.pods("ns", "j") is None  # its next (rare) pass lists them


def test_claim_modes_expire() -> None:
    clock = Clock()
    cache = ObjectCache(max_age=50, clock=clock)
    assert cache.claim_modes("ns", "c") is None
    cache.put_claim_modes("ns", "c", ("ReadWriteMany",))
    assert cache.claim_modes("ns", "c") == ("ReadWriteMany",)
    clock.now += 51
    assert cache.claim_modes("ns", "c") is None


def test_kube_all_runs_calls_together_keeps_order_and_raises_after_all_finished() -> None:
    import threading

    from ltj_operator.kube import Kube

    kube = Kube(api_client=None, fanout=4)
    try:
        barrier = threading.Barrier(3, timeout=5)  # only passes if the three calls run at the same time
        assert kube.all([lambda i=i: (barrier.wait(), i)[1] for i in range(3)]) == [0, 1, 2]
        done: list[int] = []

        def fail() -> None:
            raise RuntimeError("refused")

        def slow() -> None:
            barrier2.wait()
            done.append(1)

        barrier2 = threading.Barrier(2, timeout=5)
        with pytest.raises(RuntimeError, match="refused"):
            kube.all([fail, slow, lambda: barrier2.wait()])
        assert done == [1]
        assert kube.all([lambda: 7]) == [7]
    finally:
        kube.close()


def test_active_jobs_without_a_pod_seen() -> None:
    cache = ObjectCache(max_age=50)
    assert not cache.without_pods("ns", "j")  # unknown
    cache.put_job(job(1))
    cache.put_job(job(2, name="k"))
    assert cache.without_pods("ns", "j") and cache.without_pods("ns", "k")
    cache.put_pod(pod("j-node-0", 3))
    assert not cache.without_pods("ns", "j") and cache.without_pods("ns", "k")
    cache.forget_pod(pod("j-node-0", 4))
    assert cache.without_pods("ns", "j") and cache.deleted("uid-j-node-0")  # a gang deleted for a restart
    cache.put_job(job(5, phase=C.PHASE_SUCCEEDED))
    assert not cache.without_pods("ns", "j") and cache.without_pods("ns", "k")  # finished
