"""handlers.py: when a job is next reconciled (resync periods) and the filter on the pod watch."""

from __future__ import annotations

from types import SimpleNamespace

import kopf
import pytest
from kopf._cogs.structs import references

from ltj_operator import constants as C
from ltj_operator import handlers
from ltj_operator.config import OperatorConfig

pytestmark = pytest.mark.unit


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


def test_the_pod_watch_is_filtered_by_the_api_server() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure_settings(settings, OperatorConfig())
    pods = references.Resource("", "v1", "pods", kind="Pod", namespaced=True)
    jobs = references.Resource(C.GROUP, C.VERSION, C.PLURAL, kind=C.KIND, namespaced=True)
    assert list(settings.watching.label_selectors.collect(pods)) == [
        f"{C.LABEL_MANAGED_BY}={C.MANAGED_BY},{C.LABEL_JOB_NAME}"]
    assert list(settings.watching.label_selectors.collect(jobs)) == []
