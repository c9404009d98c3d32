"""handlers.py: what kopf gets registered, the settings applied at startup, and `kopf run -m` loading it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from types import SimpleNamespace

import kopf
import pytest
from kopf._cogs.structs import references

from ltj_operator import constants as C
from ltj_operator import handlers
from ltj_operator.config import OperatorConfig
from ltj_operator.diffbase import EventsOnlyDiffBaseStorage
from ltj_operator.expectations import Expectations
from ltj_operator.kube import ObjectCache

pytestmark = pytest.mark.unit


def _resource_handlers() -> list[object]:
    return list(kopf.get_default_registry()._watching.get_all_handlers())


def test_watch_handlers_for_jobs_their_pods_and_workloads_only() -> None:
    found = {getattr(h, "fn", None): h for h in _resource_handlers()}
    job = found[handlers.job_event]
    pod = found[handlers.pod_event]
    assert (job.selector.group, job.selector.version, job.selector.any_name) == (C.GROUP, C.VERSION, C.PLURAL)
    assert (pod.selector.group, pod.selector.version, pod.selector.any_name) == ("", "v1", "pods")
    assert pod.labels == {C.LABEL_MANAGED_BY: C.MANAGED_BY, C.LABEL_JOB_NAME: kopf.PRESENT}
    # Kueue's Workloads, only those of our jobs (their watch is filtered like the pods').
    workload = found[handlers.workload_event]
    assert (workload.selector.group, workload.selector.version, workload.selector.any_name) == (
        "kueue.x-k8s.io", "v1beta2", "workloads")
    assert workload.labels == {C.LABEL_MANAGED_BY: C.MANAGED_BY, C.LABEL_JOB_NAME: kopf.PRESENT}
    # No daemons, timers or change handlers: kopf puts no finalizer on jobs, so deletion never hangs on us.
    registry = kopf.get_default_registry()
    assert not registry._spawning.get_all_handlers()
    assert not registry._changing.get_all_handlers()


def test_startup_and_cleanup_are_registered() -> None:
    registry = kopf.get_default_registry()
    fns = {h.fn for h in registry._activities.get_all_handlers()}
    assert {handlers.startup, handlers.cleanup, handlers.reconcilers} <= fns


def test_settings_for_a_single_replica() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure_settings(settings, OperatorConfig())
    assert settings.peering.standalone is True
    assert settings.persistence.finalizer == "ltj.dev/kopf-finalizer"
    assert settings.posting.reporting_component == "ltj-operator"
    assert settings.watching.server_timeout and settings.watching.client_timeout > settings.watching.server_timeout
    # No change handlers (checked above), so kopf's per-event essence is never read: not built either.
    assert isinstance(settings.persistence.diffbase_storage, EventsOnlyDiffBaseStorage)
    assert settings.persistence.diffbase_storage.build(body=kopf.Body({"spec": {"a": 1}})) == {}
    assert settings.persistence.diffbase_storage.fetch(body=kopf.Body({})) is None


def test_settings_with_leader_election() -> None:
    """Replicas elect their leader with our Lease; kopf's peering (which freezes equal priorities) stays off."""
    settings = kopf.OperatorSettings()
    handlers.configure_settings(settings, OperatorConfig(lease_namespace="ltj", watch_namespaces=("a",), workers=8))
    assert settings.peering.standalone is True
    assert settings.execution.max_workers == 8


def test_leader_election_follows_the_configuration() -> None:
    assert handlers.elector(OperatorConfig(), kube=None) is None  # type: ignore[arg-type]
    first = handlers.elector(OperatorConfig(lease_namespace="ltj-system", lease_duration_seconds=6,
                                            lease_renew_deadline_seconds=4, lease_retry_period_seconds=1),
                             kube=SimpleNamespace(api=None))  # type: ignore[arg-type]
    second = handlers.elector(OperatorConfig(lease_namespace="ltj-system"), kube=SimpleNamespace(api=None))  # type: ignore[arg-type]
    assert first is not None and second is not None
    try:
        assert first.namespace == "ltj-system" and first.identity != second.identity  # unique per process
        assert (first.timing.duration, first.timing.renew_deadline, first.timing.retry_period) == (6, 4, 1)
        assert first.kube.timeout == 4  # a hung renewal cannot outlast the renew deadline
        assert not first.leading()  # a candidate acts only once it holds the lease
    finally:
        first.kube.close()
        second.kube.close()


def test_namespace_filter() -> None:
    memo = SimpleNamespace(config=OperatorConfig(watch_namespaces=("team-a",)))
    assert handlers._watched(memo=memo, namespace="team-a")
    assert not handlers._watched(memo=memo, namespace="team-b")
    assert handlers._watched(memo=SimpleNamespace(config=OperatorConfig()), namespace="any")


def test_kopf_run_loads_the_module_and_stops_on_bad_configuration() -> None:
    env = {**os.environ, "LTJ_LOG_LEVEL": "chatty", "KUBECONFIG": os.devnull}
    proc = subprocess.run([sys.executable, "-m", "kopf", "run", "-m", "ltj_operator.handlers", "--standalone",
                           "--all-namespaces"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "invalid operator configuration: LTJ_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR" in proc.stderr


# -- when a job is next reconciled, and the filter on the pod watch --


def outcome(phase: str | None, requeue_after: float | None = None, gone: bool = False) -> SimpleNamespace:
    decision = None if phase is None else SimpleNamespace(status={"phase": phase})
    return SimpleNamespace(gone=gone, requeue_after=requeue_after, decision=decision)


def test_active_jobs_resync_every_period_and_requeues_are_capped_by_it() -> None:
    config = OperatorConfig(resync_seconds=60)
    assert handlers.next_pass_in(outcome("Running"), config) == 60
    assert handlers.next_pass_in(outcome("Pending", requeue_after=5), config) == 5
    assert handlers.next_pass_in(outcome("Running", requeue_after=500), config) == 60
    assert handlers.next_pass_in(outcome(None), config) == 60  # no decision (e.g. a failed pass)


def test_finished_jobs_resync_rarely_but_keep_their_requeue_times() -> None:
    config = OperatorConfig(resync_seconds=60)
    slow = 60 * handlers.FINISHED_RESYNC_FACTOR
    assert handlers.next_pass_in(outcome("Succeeded"), config) == slow
    assert handlers.next_pass_in(outcome("Failed", requeue_after=90), config) == 90  # ttlSecondsAfterFinished
    assert handlers.next_pass_in(outcome("Failed", requeue_after=10 * slow), config) == slow
    assert handlers.next_pass_in(outcome("Succeeded", gone=True), config) is None


def test_the_pod_and_workload_watches_are_filtered_by_the_api_server() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure_settings(settings, OperatorConfig())
    pods = references.Resource("", "v1", "pods", kind="Pod", namespaced=True)
    jobs = references.Resource(C.GROUP, C.VERSION, C.PLURAL, kind=C.KIND, namespaced=True)
    assert list(settings.watching.label_selectors.collect(pods)) == [
        f"{C.LABEL_MANAGED_BY}={C.MANAGED_BY},{C.LABEL_JOB_NAME}"]
    assert list(settings.watching.label_selectors.collect(jobs)) == []
    workloads = references.Resource("kueue.x-k8s.io", "v1beta2", "workloads", kind="Workload", namespaced=True)
    assert list(settings.watching.label_selectors.collect(workloads)) == [
        f"{C.LABEL_MANAGED_BY}={C.MANAGED_BY},{C.LABEL_JOB_NAME}"]


def test_passes_of_jobs_awaiting_their_pods_rank_before_the_others() -> None:
    cache = ObjectCache(max_age=50)
    cache.put_job({"metadata": {"name": "new", "namespace": "ns", "resourceVersion": "1"}})
    cache.put_job({"metadata": {"name": "started", "namespace": "ns", "resourceVersion": "2"}})
    cache.put_pod({"metadata": {"name": "started-node-0", "namespace": "ns", "uid": "u", "resourceVersion": "3",
                                "labels": {C.LABEL_JOB_NAME: "started", C.LABEL_NODE_RANK: "0",
                                           C.LABEL_ATTEMPT: "0"}}, "status": {"phase": "Pending"}})
    ranks = {key: handlers.pass_priority(Expectations(cache), ("ns", key)) for key in ("new", "started", "unknown")}
    assert ranks["new"] < ranks["started"] == ranks["unknown"]


class _Queue:
    def __init__(self) -> None:
        self.poked: list[tuple[str, str]] = []

    def poke(self, key: tuple[str, str]) -> None:
        self.poked.append(key)


def test_job_events_poke_the_job_unless_they_echo_the_version_already_cached() -> None:
    cache = ObjectCache(max_age=50)
    memo = SimpleNamespace(cache=cache, expectations=Expectations(cache), queue=_Queue(), jobs=set())
    body = {"metadata": {"name": "j", "namespace": "ns", "resourceVersion": "4"}}

    def deliver(type_: str, obj: dict) -> None:
        asyncio.run(handlers.job_event(namespace="ns", name="j", event={"type": type_, "object": obj}, memo=memo))

    deliver("ADDED", body)
    assert memo.jobs == {("ns", "j")}  # what a new leader reconciles first
    memo.cache.put_job({**body, "metadata": {**body["metadata"], "resourceVersion": "5"}})  # our status write
    memo.expectations.wrote("ns", "j")
    deliver("MODIFIED", {**body, "metadata": {**body["metadata"], "resourceVersion": "5"}})  # its echo
    deliver("MODIFIED", {**body, "metadata": {**body["metadata"], "resourceVersion": "6"}})  # someone else's
    deliver("DELETED", {**body, "metadata": {**body["metadata"], "resourceVersion": "7"}})
    assert memo.queue.poked == [("ns", "j")] * 3
    assert memo.cache.job("ns", "j") is None and memo.expectations.since_write("ns", "j") is None
    assert memo.jobs == set()
