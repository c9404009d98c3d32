"""metrics.py: names and labels by Prometheus conventions, passes counted by result, jobs by phase from the
operator's view (a forgotten job leaves it), counters from status increases, the HTTP endpoint, and the
LTJ_METRICS_PORT setting."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ltj_operator import constants as C
from ltj_operator.config import ConfigError, OperatorConfig
from ltj_operator.kube import ApiError
from ltj_operator.metrics import RESULTS, MetricsServer, OperatorMetrics
from ltj_operator.reconcile import Outcome
from ltj_operator.status import Decision

pytestmark = pytest.mark.unit

EXPORTED = {"ltj_reconcile_total": "counter", "ltj_reconcile_duration_seconds": "histogram",
            "ltj_gang_restarts_total": "counter", "ltj_relay_events_applied_total": "counter",
            "ltj_relay_dropped_lines_total": "counter", "ltj_relay_lag_seconds": "histogram", "ltj_jobs": "gauge"}


def fresh(now: float = 1000.0) -> OperatorMetrics:
    return OperatorMetrics(CollectorRegistry(), clock=lambda: now)


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def scraped(metrics: OperatorMetrics) -> dict[str, Any]:
    """The exposition text parsed back: family name -> family."""
    return {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}


def training(seq: int, skipped: int = 0, last_event: str = "1970-01-01T00:16:30Z") -> dict[str, Any]:
    return {"seq": seq, "skippedLines": skipped, "lastEventTime": last_event}


def outcome(status: dict[str, Any] | None = None, *, uid: str = "u1", error: Exception | None = None,
            gone: bool = False) -> Outcome:
    body = {"metadata": {"uid": uid}, "status": {"training": training(3)}}
    return Outcome(gone=gone, body=None if gone else body, error=error,
                   decision=None if gone else Decision(status=status or {"phase": C.PHASE_RUNNING, "restarts": 0}))


async def done(value: Any) -> Any:
    return value


async def fails() -> Outcome:
    raise ApiError(500, "InternalError", "etcd is away")


def test_a_fresh_registry_exports_every_metric_by_the_conventions() -> None:
    families = scraped(fresh())
    # The exposition names counters without their _total; prometheus_client adds it to the samples (and
    # a <name>_created gauge per counter and histogram: when it started counting).
    kinds = {(f"{name}_total" if f.type == "counter" else name): f.type for name, f in families.items()
             if name.startswith("ltj_") and not name.endswith("_created")}
    assert kinds == EXPORTED
    for name, kind in EXPORTED.items():
        assert name.startswith("ltj_")
        assert (kind == "counter") == name.endswith("_total")
        assert kind != "histogram" or name.endswith("_seconds")
    # Every result counts from 0; no job yet, so no ltj_jobs series.
    assert {s.labels["result"] for s in families["ltj_reconcile"].samples if s.name == "ltj_reconcile_total"} \
        == set(RESULTS)
    assert families["ltj_jobs"].samples == []


def test_process_metrics_are_exported_like_the_default_registry() -> None:
    names = set(scraped(fresh()))
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "python_info"} <= names


def test_passes_are_counted_by_result_and_timed() -> None:
    m = fresh()

    async def passes() -> None:
        await m.reconcile_pass(("a", "j"), done(outcome()))
        await m.reconcile_pass(("a", "j"), done(outcome(error=ApiError(403, "Forbidden", "exceeded quota"))))
        await m.reconcile_pass(("a", "j"), done(outcome(error=ApiError(503, "ServiceUnavailable", "later"))))
        with pytest.raises(ApiError, match="etcd is away"):
            await m.reconcile_pass(("a", "j"), fails())

    asyncio.run(passes())
    assert [value(m, "ltj_reconcile_total", result=r) for r in RESULTS] == [1, 1, 2]
    assert value(m, "ltj_reconcile_duration_seconds_count") == 4


def test_jobs_by_phase_follow_the_latest_pass_and_a_forgotten_job_leaves() -> None:
    m = fresh()
    m.saw("a", "j1", "u1", {"phase": C.PHASE_RUNNING}, 0)
    m.saw("a", "j2", "u2", {"phase": C.PHASE_PENDING}, 0)
    m.saw("b", "j3", "u3", {"phase": C.PHASE_PENDING}, 0)
    m.saw("a", "j2", "u2", {"phase": C.PHASE_RUNNING}, 0)
    assert value(m, "ltj_jobs", namespace="a", phase=C.PHASE_RUNNING) == 2
    # Every phase of a namespace with jobs is a series, 0 where none is in it.
    assert value(m, "ltj_jobs", namespace="a", phase=C.PHASE_PENDING) == 0
    assert value(m, "ltj_jobs", namespace="b", phase=C.PHASE_PENDING) == 1
    assert {s.labels["phase"] for s in scraped(m)["ltj_jobs"].samples if s.labels["namespace"] == "b"} \
        == set(C.PHASES)

    asyncio.run(m.reconcile_pass(("b", "j3"), done(outcome(gone=True))))
    assert not [s for s in scraped(m)["ltj_jobs"].samples if s.labels["namespace"] == "b"]
    m.forget("a", "j1")
    assert value(m, "ltj_jobs", namespace="a", phase=C.PHASE_RUNNING) == 1


def test_a_standby_reports_no_jobs() -> None:
    leading = [False]
    m = OperatorMetrics(CollectorRegistry(), reporting=lambda: leading[0])
    m.saw("a", "j", "u1", {"phase": C.PHASE_RUNNING}, 0)
    assert scraped(m)["ltj_jobs"].samples == []
    leading[0] = True
    assert value(m, "ltj_jobs", namespace="a", phase=C.PHASE_RUNNING) == 1


def test_a_pass_records_the_phase_it_decided_and_the_relays_block_it_read() -> None:
    m = fresh(now=1000.0)
    key = ("a", "j")
    asyncio.run(m.reconcile_pass(key, done(outcome({"phase": C.PHASE_PENDING, "restarts": 0}))))
    later = Outcome(gone=False, body={"metadata": {"uid": "u1"},
                                      "status": {"phase": C.PHASE_PENDING, "training": training(8, 1)}},
                    decision=Decision(status={"phase": C.PHASE_RESTARTING, "restarts": 1}))
    asyncio.run(m.reconcile_pass(key, done(later)))
    assert value(m, "ltj_jobs", namespace="a", phase=C.PHASE_RESTARTING) == 1
    assert value(m, "ltj_gang_restarts_total") == 1
    assert value(m, "ltj_relay_events_applied_total") == 5
    assert value(m, "ltj_relay_dropped_lines_total") == 1


def test_counters_grow_by_the_increases_between_passes_of_one_job() -> None:
    m = fresh()
    # First sight (e.g. after an operator restart): the job's history is the baseline, not counted.
    m.saw("a", "j", "u1", {"phase": C.PHASE_RUNNING, "restarts": 2, "training": training(10, 1)}, 1000)
    assert value(m, "ltj_gang_restarts_total") == 0 and value(m, "ltj_relay_events_applied_total") == 0
    assert value(m, "ltj_relay_lag_seconds_count") == 0

    m.saw("a", "j", "u1", {"phase": C.PHASE_RUNNING, "restarts": 3,
                           "training": training(15, 3, "1970-01-01T00:16:37Z")}, 1000)
    assert value(m, "ltj_gang_restarts_total") == 1
    assert value(m, "ltj_relay_events_applied_total") == 5
    assert value(m, "ltj_relay_dropped_lines_total") == 2
    # The lag: from the last event (997 s) to the pass that saw it (1000 s).
    assert value(m, "ltj_relay_lag_seconds_count") == 1 and value(m, "ltj_relay_lag_seconds_sum") == 3

    # Nothing new: nothing counted, no lag observed; a garbage number does not lose the last valid one.
    m.saw("a", "j", "u1", {"phase": C.PHASE_RUNNING, "restarts": "x", "training": {"seq": -1}}, 1001)
    m.saw("a", "j", "u1", {"phase": C.PHASE_RUNNING, "restarts": 3,
                           "training": training(16, 3, "1970-01-01T00:16:50Z")}, 1002)
    assert value(m, "ltj_gang_restarts_total") == 1 and value(m, "ltj_relay_events_applied_total") == 6
    assert value(m, "ltj_relay_dropped_lines_total") == 2
    # An event stamped after the pass (the trainer's clock ahead of the operator's) is no negative lag.
    assert value(m, "ltj_relay_lag_seconds_count") == 2 and value(m, "ltj_relay_lag_seconds_sum") == 3

    # The same name, a new job object: its numbers are a new baseline.
    m.saw("a", "j", "u2", {"phase": C.PHASE_PENDING, "restarts": 0, "training": training(1)}, 1003)
    m.saw("a", "j", "u2", {"phase": C.PHASE_RUNNING, "restarts": 0}, 1004)
    assert value(m, "ltj_relay_events_applied_total") == 6 and value(m, "ltj_gang_restarts_total") == 1


def test_the_endpoint_serves_the_registry_over_http() -> None:
    m = fresh()
    m.saw("a", "j", "u1", {"phase": C.PHASE_SUCCEEDED}, 0)
    server = MetricsServer.start(m.registry, 0, addr="127.0.0.1")  # port 0: any free port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.stop()
    assert 'ltj_jobs{namespace="a",phase="Succeeded"} 1.0' in text
    assert 'ltj_reconcile_total{result="error"} 0.0' in text
    assert not server.thread.is_alive()


def test_metrics_port_setting() -> None:
    assert OperatorConfig.from_env({}).metrics_port == 8081
    assert OperatorConfig.from_env({"LTJ_METRICS_PORT": "9102"}).metrics_port == 9102
    assert OperatorConfig.from_env({"LTJ_METRICS_PORT": "0"}).metrics_port == 0  # not served
    # Off, it may equal anything.
    assert OperatorConfig.from_env({"LTJ_METRICS_PORT": "0", "LTJ_HEALTH_PORT": "1"}).metrics_port == 0


@pytest.mark.parametrize(("env", "words"), [
    ({"LTJ_METRICS_PORT": "http"}, "must be an integer"),
    ({"LTJ_METRICS_PORT": "-1"}, ">= 0"),
    ({"LTJ_METRICS_PORT": "65536"}, "<= 65535"),
    ({"LTJ_METRICS_PORT": "8080"}, "must differ from LTJ_HEALTH_PORT"),
    ({"LTJ_METRICS_PORT": "9000", "LTJ_HEALTH_PORT": "9000"}, "must differ from LTJ_HEALTH_PORT"),
])
def test_a_bad_metrics_port_names_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        OperatorConfig.from_env(env)
    assert str(err.value).startswith("LTJ_METRICS_PORT: ") and words in str(err.value)


def test_the_operator_stops_naming_the_variable_when_the_port_is_taken(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"  # a client is made at startup; nothing connects before the port is bound
    kubeconfig.write_text("""apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
""")
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "LTJ_METRICS_PORT": str(port), "KUBECONFIG": str(kubeconfig)}
        proc = subprocess.run([sys.executable, "-m", "kopf", "run", "-m", "ltj_operator.handlers", "--standalone",
                               "--all-namespaces"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"LTJ_METRICS_PORT: cannot serve metrics on port {port}" in proc.stderr, proc.stderr[-3000:]
