"""Pure parts of the operator benchmark (benchmarks/operator_scale.py and its opbench package): statistics,
ratios, tables, audit counting, manifests, the command line."""

from __future__ import annotations

import argparse
import json
import math

import pytest

import benchscript

pytestmark = pytest.mark.unit

bench = benchscript.load("operator_scale")

from opbench import cluster, measure, report, systems  # noqa: E402


def test_percentile_interpolates_and_ignores_nan() -> None:
    assert measure.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert measure.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert measure.percentile([1.0, 2.0, 3.0, 4.0], 99) == pytest.approx(3.97)
    assert measure.percentile([5.0], 99) == 5.0
    assert measure.percentile([1.0, float("nan"), 3.0], 50) == 2.0
    assert math.isnan(measure.percentile([], 50))


def test_ratio() -> None:
    assert report.ratio(3.0, 2.0) == 1.5
    assert math.isnan(report.ratio(1.0, 0.0))
    assert math.isnan(report.ratio(float("nan"), 1.0))


def test_parse_sizes() -> None:
    assert bench.parse_sizes("200, 1,50,50", "--sizes") == [1, 50, 200]
    assert bench.parse_sizes("", "--scale") == []
    with pytest.raises(argparse.ArgumentTypeError, match="--sizes: 'x' is not an integer"):
        bench.parse_sizes("1,x", "--sizes")
    with pytest.raises(argparse.ArgumentTypeError, match="--scale: sizes must be >= 1"):
        bench.parse_sizes("0", "--scale")


def test_table_is_markdown_with_dashes_for_missing() -> None:
    text = report.table(["system", "N", "s"], [["ltj", 50, 1.234], ["peer", 200, float("nan")]])
    lines = text.splitlines()
    assert lines[0] == "| system | N   | s    |"
    assert lines[1] == "|-------:|----:|-----:|"
    assert lines[2] == "|    ltj |  50 | 1.23 |"
    assert lines[3] == "|   peer | 200 |    - |"


def test_durations_show_milliseconds_below_a_second() -> None:
    assert [report.seconds(v) for v in (0.0834, 0.9996, 1.234, 88.49)] == ["0.083", "1.000", "1.23", "88.49"]
    assert report.seconds(float("nan")) == "-"


def _audit(ua: str, verb: str, stage: str, ts: str, resource: str = "pods", sub: str = "") -> str:
    ref = {"resource": resource, **({"subresource": sub} if sub else {})}
    return json.dumps({"userAgent": ua, "verb": verb, "stage": stage, "requestReceivedTimestamp": ts,
                       "objectRef": ref, "requestURI": f"/api/v1/{resource}"})


def test_audit_counts_by_agent_verb_and_window() -> None:
    t = cluster._rfc3339("2026-01-02T03:04:05.500000Z")
    assert t is not None and t % 1 == pytest.approx(0.5)
    lines = [
        _audit("kopf/1.0", "create", "ResponseComplete", "2026-01-02T03:04:05.500000Z", "events"),
        _audit("OpenAPI-Generator/37/python", "patch", "ResponseComplete", "2026-01-02T03:04:06.000000Z",
               "lightningtrainingjobs", "status"),
        # a watch counts once, when it starts
        _audit("kopf/1.0", "watch", "ResponseStarted", "2026-01-02T03:04:06.000000Z"),
        _audit("kopf/1.0", "watch", "ResponseComplete", "2026-01-02T03:04:06.000000Z"),
        # only the completed stage of other requests
        _audit("training-operator/v0.0.0", "create", "ResponseStarted", "2026-01-02T03:04:06.000000Z"),
        _audit("training-operator/v0.0.0", "create", "ResponseComplete", "2026-01-02T03:04:06.000000Z"),
        # outside the window, someone else's, garbage
        _audit("kopf/1.0", "get", "ResponseComplete", "2026-01-02T03:04:09.000000Z"),
        _audit("kube-scheduler/v1.34", "create", "ResponseComplete", "2026-01-02T03:04:06.000000Z", "bindings"),
        '{"torn',
    ]
    counts = cluster.audit_counts(lines, {"ltj": ("kopf/", "OpenAPI-Generator/"), "peer": ("training-operator",)},
                                t, t + 1.0)
    assert counts == {"ltj": {"create events": 1, "patch lightningtrainingjobs/status": 1, "watch pods": 1},
                      "peer": {"create pods": 1}}
    # The catch-all after a system counts everyone else's requests, the system's once.
    rest = cluster.audit_counts(lines, {"ltj": ("kopf/", "OpenAPI-Generator/"), "": ("",)}, t, t + 1.0)
    assert rest[""] == {"create pods": 1, "create bindings": 1}


def test_workload_summary_and_ratios() -> None:
    w = measure.Workload("ltj", 2, t0=100.0, submit={"a": 100.0, "b": 100.5}, created={"a": 101.0, "b": 102.5},
                       running={"a": 102.0}, requests={"create pods": 4, "get pods": 6},
                       cluster_cpu_s={"kube-apiserver": 1.5, "etcd": 0.25, "ltj": 0.5}, cluster_writes=9)
    s = w.summary()
    assert s["cluster_writes_per_job"] == 4.5
    assert s["cluster_cpu_s"] == pytest.approx(2.25)
    assert s["created_p50_s"] == pytest.approx(1.5) and s["created_total_s"] == pytest.approx(2.5)
    assert s["running_p50_s"] == pytest.approx(2.0)
    assert math.isnan(s["running_total_s"])  # not every job ran: no total
    assert s["requests_per_job"] == 5.0 and s["writes_per_job"] == 2.0
    floor = measure.Workload("floor", 2, t0=0.0, submit={"a": 0.0, "b": 0.0}, created={"a": 1.0, "b": 1.25},
                           running={"a": 1.0, "b": 2.0})
    assert math.isnan(floor.summary()["cluster_cpu_s"])  # not measured
    assert math.isnan(floor.summary()["cluster_writes_per_job"])
    rows = report.workload_rows([w, floor])
    assert rows[0]["created_vs_floor"] == pytest.approx(2.0)
    assert math.isnan(rows[0]["running_vs_floor"])
    assert "created_vs_peer" not in rows[0]
    assert rows[0]["cpu_s:kube-apiserver"] == 1.5 and "cpu_s:etcd" not in rows[1]
    text = report.print_report(rows, [])
    assert "| system | N | kube-apiserver | ltj | etcd |" in text and "|  floor | 2 |              - |" in text


def test_job_manifests() -> None:
    ltj = systems.ltj_job("ns", "j1", finish=True)
    assert ltj["spec"]["nodes"] == 2 and ltj["spec"]["output"] == {"claimName": cluster.OUTPUT_CLAIM}
    assert ltj["spec"]["podTemplate"]["metadata"]["annotations"] == {systems.SIM_EXIT: "0"}
    assert "podTemplate" not in systems.ltj_job("ns", "j1", finish=False)["spec"]
    pt = systems.pytorch_job("ns", "j1", finish=False)
    specs = pt["spec"]["pytorchReplicaSpecs"]
    assert sorted(specs) == ["Master", "Worker"] and all(r["replicas"] == 1 for r in specs.values())
    assert pt["spec"]["runPolicy"]["cleanPodPolicy"] == ltj["spec"]["runPolicy"]["cleanPodPolicy"] == "None"
    assert systems.condition_true({"status": {"conditions": [{"type": "Running", "status": "True"}]}}, "Running")
    assert not systems.condition_true({"status": {"conditions": [{"type": "Running", "status": "False"}]}}, "Running")


def test_floor_objects_are_the_operators_pods_without_owner() -> None:
    objs = systems.floor_objects("ns", "j1", everything=False)
    # What the pods need to be admitted (the accounts they run as) and the Service, then the pods.
    assert [o["kind"] for o in objs] == ["ServiceAccount", "ServiceAccount", "Service", "Pod", "Pod"]
    pods = [o for o in objs if o["kind"] == "Pod"]
    assert {o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount"} == {
        p["spec"]["serviceAccountName"] for p in pods}
    assert all("ownerReferences" not in o["metadata"] for o in objs)
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "Pod"] == ["j1-node-0", "j1-node-1"]
    everything = systems.floor_objects("ns", "j1", everything=True)
    assert sorted(o["kind"] for o in everything) == ["NetworkPolicy", "Pod", "Pod", "Role", "RoleBinding", "Service",
                                                     "ServiceAccount", "ServiceAccount"]


def test_the_median_run_of_repeated_small_workloads_is_reported() -> None:
    def run(total: float | None) -> measure.Workload:
        running = {"a": total} if total is not None else {}
        return measure.Workload("ltj", 1, t0=0.0, submit={"a": 0.0}, created={"a": 0.01}, running=running)

    runs = [run(0.3), run(None), run(0.1), run(0.2), run(0.5)]
    assert measure.median_run(runs) is runs[0]  # 0.1, 0.2, [0.3], 0.5, never Running
    assert measure.median_run(runs[2:4]) is runs[2]


def test_repeats_must_be_at_least_one(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--repeats", "--repeats-large"):
        with pytest.raises(SystemExit):
            bench.main([flag, "0"])
        assert f"{flag}: must be >= 1" in capsys.readouterr().err


def test_the_scale_phase_names_only_systems_with_an_operator(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--scale-systems", "ltj,floor-job"])
    assert "--scale-systems: 'floor-job' runs no operator process to measure" in capsys.readouterr().err


def test_only_systems_with_job_objects_watch_them() -> None:
    assert systems.Ltj().has_jobs and systems.Peer().has_jobs
    assert systems.Floor(False, 1, with_job=True).has_jobs
    assert not systems.Floor(True, 1).has_jobs


def test_ltj_kueue_queues_the_same_jobs_and_reports_what_kueue_adds() -> None:
    queued = systems.LtjKueue()
    job = queued.manifest("ns", "j1", finish=False)
    assert job["metadata"]["labels"] == {"kueue.x-k8s.io/queue-name": queued.QUEUE}
    assert job["spec"] == systems.Ltj().manifest("ns", "j1", finish=False)["spec"]
    [local] = queued.namespace_objects("ns")
    assert (local["kind"], local["metadata"], local["spec"]) == (
        "LocalQueue", {"name": queued.QUEUE, "namespace": "ns"}, {"clusterQueue": queued.QUEUE})
    assert queued.kueue and not systems.Ltj().kueue and systems.Ltj().namespace_objects("ns") == []

    def run(system: str, created: float, running: float) -> measure.Workload:
        return measure.Workload(system, 1, t0=0.0, submit={"a": 0.0}, created={"a": created}, running={"a": running})

    rows = report.workload_rows([run("ltj", 0.05, 0.1), run("ltj-kueue", 0.25, 0.4)])
    assert rows[1]["kueue_adds_created_p50_s"] == pytest.approx(0.2)
    assert rows[1]["kueue_adds_running_total_s"] == pytest.approx(0.3)
    assert "kueue_adds_running_total_s" not in rows[0]
    assert "| 1 |                  0.200 |         0.300 |           0.300 |" in report.print_report(rows, [])


def test_ltj_kueue_runs_only_when_named() -> None:
    assert "ltj-kueue" in bench.SYSTEMS and "ltj-kueue" not in bench.DEFAULT_SYSTEMS
