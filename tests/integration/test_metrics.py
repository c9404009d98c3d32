"""The operator's Prometheus endpoint, in-process (KopfRunner) against the real API server: scraped over HTTP
while a job goes through its phases, a relay's status write and a gang restart, and after its deletion.

As in test_operator.py, no training runs: the test plays the kubelet (pod status) and the relay
(status.training) itself.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from integration.test_operator import exit_with, gang, pinned, run, wait_phase
from kubetest import Kube, apply, dump, wait_for
from ltj_operator import constants as C

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_the_endpoint_shows_passes_phases_restarts_and_relay_counts(kube: Kube, namespace: str, operator: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ltj_localcluster.controlplane import free_port

    port = free_port()
    monkeypatch.setenv("LTJ_METRICS_PORT", str(port))
    operator()  # again, serving its metrics

    def when(predicate: Any, what: str) -> Samples:
        return wait_for(lambda: (lambda s: s if predicate(s) else None)(scrape(port)), 60, what, interval=0.25,
                        diagnose=lambda: dump(kube, namespace))

    def jobs(samples: Samples, phase: str) -> float | None:
        return value(samples, "ltj_jobs", namespace=namespace, phase=phase)

    name = apply(kube, namespace, pinned("metered"))
    gang(kube, namespace, name, attempt=0)
    run(kube, namespace, "metered-node-0", "metered-node-1")
    wait_phase(kube, namespace, name, C.PHASE_RUNNING)
    samples = when(lambda s: jobs(s, C.PHASE_RUNNING) == 1, "ltj_jobs: the job Running")
    assert jobs(samples, C.PHASE_PENDING) == 0
    assert value(samples, "ltj_reconcile_total", result="success") >= 1
    assert value(samples, "ltj_reconcile_duration_seconds_count") >= value(samples, "ltj_reconcile_total",
                                                                            result="success")

    # The relay's write: four events applied, one line skipped.
    last_event = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    training = {"seq": 4, "skippedLines": 1, "lastEventTime": last_event, "updateTime": last_event}
    kube.kubectl("patch", C.PLURAL, name, "-n", namespace, "--subresource=status", "--type=merge",
                 "-p", json.dumps({"status": {"training": training}}))
    samples = when(lambda s: value(s, "ltj_relay_events_applied_total") == 4, "4 events applied")
    assert value(samples, "ltj_relay_dropped_lines_total") == 1
    assert value(samples, "ltj_relay_lag_seconds_count") == 1

    exit_with(kube, namespace, "metered-node-1", 137)  # retryable: the gang restarts
    when(lambda s: value(s, "ltj_gang_restarts_total") == 1, "one gang restart")

    kube.kubectl("delete", C.PLURAL, name, "-n", namespace, "--wait=false")
    samples = when(lambda s: not [k for k in s if k[0] == "ltj_jobs" and ("namespace", namespace) in k[1]],
                   "the deleted job gone from ltj_jobs")
    assert value(samples, "ltj_gang_restarts_total") == 1  # counters keep what they counted
