"""Kueue's real controller beside the local control plane (conftest's `kueue_cluster`): it runs the
pinned build, its webhooks answer the API server, and its quota path admits Workloads one GPU budget
at a time; and the operator (in-process) runs queued jobs through it: one Workload per job, no pod
before Kueue admits it, the admitted flavor's placement on every pod, the quota released when the job
ends. Pods run on kwok's nodes (nothing trains)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from kubetest import Kube, absent, apply, condition, job, wait_for, wait_status
from ltj_localcluster.cluster import pinned_versions
from ltj_localcluster.__main__ import next_steps
from ltj_localcluster.controlplane import http_ok, read_pids
from ltj_localcluster.kueue import LTJ_FRAMEWORK, PODS_READY_TIMEOUT
from ltj_localcluster.kwok import EXIT_CODE
from ltj_operator import constants as C

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

API = "kueue.x-k8s.io/v1beta2"
GPU = "nvidia.com/gpu"


@pytest.fixture(scope="session")
def kube(kueue_kube: Kube) -> Kube:
    """Every test here runs on the cluster with Kueue (conftest's `namespace` uses it too)."""
    return kueue_kube


def create(kube: Kube, *manifests: dict[str, Any], check: bool = True) -> Any:
    return kube.kubectl("create", "-f", "-", input=yaml.safe_dump_all(manifests), check=check)


def queues(namespace: str, gpus: int, flavor: dict[str, Any] | None = None,
           preemption: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A ResourceFlavor (of spec ``flavor``), a ClusterQueue with quota for ``gpus`` GPUs of it (and CPU and
    memory to spare: Kueue admits only what a ClusterQueue covers) and the ``preemption`` policy, and a
    LocalQueue of that ClusterQueue in ``namespace``; the cluster-scoped ones are named after the namespace."""
    plenty = [{"name": "cpu", "nominalQuota": 100}, {"name": "memory", "nominalQuota": "1000Gi"}]
    return [
        {"apiVersion": API, "kind": "ResourceFlavor", "metadata": {"name": namespace}, "spec": flavor or {}},
        {"apiVersion": API, "kind": "ClusterQueue", "metadata": {"name": namespace},
         "spec": {"namespaceSelector": {}, **({"preemption": preemption} if preemption else {}),
                  "resourceGroups": [{"coveredResources": ["cpu", "memory", GPU], "flavors": [
                      {"name": namespace, "resources": [*plenty, {"name": GPU, "nominalQuota": gpus}]}]}]}},
        {"apiVersion": API, "kind": "LocalQueue", "metadata": {"name": "gpus", "namespace": namespace},
         "spec": {"clusterQueue": namespace}},
    ]


def workload(namespace: str, name: str, gpus: int, resource: str = GPU) -> dict[str, Any]:
    """What the operator will ask for a one-node job: one pod set of one pod with ``gpus`` GPUs."""
    container = {"name": "trainer", "image": "registry.invalid/never-pulled:1",
                 "resources": {"requests": {resource: str(gpus)}, "limits": {resource: str(gpus)}}}
    return {"apiVersion": API, "kind": "Workload", "metadata": {"name": name, "namespace": namespace},
            "spec": {"queueName": "gpus", "podSets": [
                {"name": "worker", "count": 1,
                 "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}]}}


def conditions(kube: Kube, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    wl = kube.get("workload", name, "-n", namespace)
    return {c["type"]: c for c in (wl.get("status") or {}).get("conditions") or []}


def admitted(kube: Kube, namespace: str, name: str) -> bool:
    conds = conditions(kube, namespace, name)
    return all(conds.get(t, {}).get("status") == "True" for t in ("QuotaReserved", "Admitted"))


def diagnose(kube: Kube, namespace: str) -> str:
    return (kube.kubectl("get", "workloads", "-n", namespace, "-o", "yaml", check=False).stdout[-6000:]
            + kube.kubectl("get", "clusterqueue", namespace, "-o", "yaml", check=False).stdout[-3000:])


def test_the_controller_runs_the_pinned_build_with_ltj_as_an_external_framework(kueue_cluster: Any) -> None:
    controller = kueue_cluster.kueue
    assert read_pids(controller.run_dir).get("kueue") is not None
    config = yaml.safe_load((controller.dir / "config.yaml").read_text())
    assert config["integrations"]["externalFrameworks"] == [LTJ_FRAMEWORK] == ["LightningTrainingJob.v1alpha1.ltj.dev"]
    assert config["manageJobsWithoutQueueName"] is False
    assert config["waitForPodsReady"] == {"timeout": PODS_READY_TIMEOUT, "blockAdmission": False}
    initializing = next(json.loads(line) for line in controller.log_file.read_text().splitlines()
                        if line.startswith("{") and '"Initializing"' in line)
    assert initializing["gitVersion"] == f"v{pinned_versions()['KUEUE_VERSION']}"
    # What `python -m ltj_localcluster up --kueue` prints leads to it.
    assert http_ok(controller.ready_url) and controller.ready_url in next_steps(kueue_cluster, "run")


def test_the_webhooks_answer(kube: Kube, namespace: str) -> None:
    # Mutating: Kueue's ResourceFlavor webhook adds its finalizer, which no CRD default does.
    create(kube, {"apiVersion": API, "kind": "ResourceFlavor", "metadata": {"name": namespace}})
    try:
        flavor = kube.get("resourceflavor", namespace)
        assert "kueue.x-k8s.io/resource-in-use" in flavor["metadata"].get("finalizers", [])
        # Validating: only Kueue's Workload webhook reserves the resource name `pods`.
        refused = create(kube, workload(namespace, "asks-for-pods", 1, resource="pods"), check=False)
        assert refused.returncode != 0
        assert "the key is reserved for internal kueue use" in refused.stderr, refused.stderr
        # The pod integration's webhook is not registered: pods are created without Kueue's gate.
        hooks = kube.get("mutatingwebhookconfiguration", "kueue-mutating-webhook-configuration")["webhooks"]
        assert {g for h in hooks for r in h["rules"] for g in r["apiGroups"]} == {"kueue.x-k8s.io"}
    finally:
        kube.kubectl("delete", "resourceflavor", namespace, "--wait=false", check=False)


def test_a_two_gpu_quota_admits_one_two_gpu_workload_at_a_time(kube: Kube, namespace: str) -> None:
    create(kube, *queues(namespace, gpus=2))
    try:
        create(kube, workload(namespace, "first", gpus=2))
        wait_for(lambda: admitted(kube, namespace, "first"), 60, what="the first Workload admitted",
                 diagnose=lambda: diagnose(kube, namespace))
        admission = kube.get("workload", "first", "-n", namespace)["status"]["admission"]
        assert admission["clusterQueue"] == namespace
        assert admission["podSetAssignments"][0]["flavors"] == {GPU: namespace}

        create(kube, workload(namespace, "second", gpus=2))

        def pending() -> dict[str, Any] | None:
            reserved = conditions(kube, namespace, "second").get("QuotaReserved")
            return reserved if reserved and reserved["status"] == "False" else None

        reserved = wait_for(pending, 60, what="the second Workload pending",
                            diagnose=lambda: diagnose(kube, namespace))
        assert reserved["reason"] == "Pending"
        assert f"insufficient unused quota for {GPU} in flavor {namespace}" in reserved["message"], reserved

        kube.kubectl("delete", "workload", "first", "-n", namespace)
        wait_for(lambda: admitted(kube, namespace, "second"), 60, what="the second Workload admitted",
                 diagnose=lambda: diagnose(kube, namespace))
    finally:
        kube.kubectl("delete", "workloads", "--all", "-n", namespace, check=False)
        kube.kubectl("delete", "clusterqueue", namespace, "--wait=false", check=False)
        kube.kubectl("delete", "resourceflavor", namespace, "--wait=false", check=False)


# --- the operator's Workload protocol ------------------------------------------------------------


@pytest.fixture
def gpu_queue(kube: Kube, namespace: str, request: pytest.FixtureRequest) -> Any:
    """queues() for the test's namespace, made by the test (``make(gpus, flavor, preemption)``), removed after it."""
    def make(gpus: int, flavor: dict[str, Any] | None = None, preemption: dict[str, Any] | None = None) -> None:
        create(kube, *queues(namespace, gpus, flavor, preemption))

    yield make
    # The namespace goes with its jobs (and their Workloads); the cluster-scoped queue and flavor after them.
    kube.kubectl("delete", "ltj", "--all", "-n", namespace, "--wait=true", check=False)
    kube.kubectl("delete", "clusterqueue", namespace, "--wait=false", check=False)
    kube.kubectl("delete", "resourceflavor", namespace, "--wait=false", check=False)


def queued_job(name: str, claim: str, nodes: int = 1, gpus: int = 2, priority: str | None = None) -> dict[str, Any]:
    """The CPU sample with GPUs, labelled for the LocalQueue of queues() (and with the WorkloadPriorityClass
    ``priority``), on the test's static claim."""
    manifest = job(name, nodes=nodes, gpusPerNode=gpus)
    manifest["spec"]["output"] = {"claimName": claim}
    manifest["metadata"]["labels"] = {C.LABEL_KUEUE_QUEUE: "gpus",
                                      **({C.LABEL_KUEUE_PRIORITY_CLASS: priority} if priority else {})}
    return manifest


def job_pods(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return kube.get("pods", "-n", namespace, "-l", f"{C.LABEL_JOB_NAME}={name}")["items"]


def workloads_of(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    """The Workloads the job controls."""
    uid = kube.get("ltj", name, "-n", namespace)["metadata"]["uid"]
    return [w for w in kube.get("workloads", "-n", namespace)["items"]
            if any(r.get("controller") and r["uid"] == uid for r in w["metadata"].get("ownerReferences") or [])]


def job_events(kube: Kube, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in kube.get("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
            if e["reason"] == reason]


def waiting_for_quota(st: dict[str, Any]) -> bool:
    """The job's status shows Kueue's verdict that quota is short (not only that its Workload exists)."""
    reserved = condition(st, C.COND_QUOTA_RESERVED) or {}
    return reserved.get("status") == "False" and reserved.get("reason") == "Pending"


def test_two_jobs_share_a_two_gpu_quota_one_after_the_other(kube: Kube, namespace: str, operator: Any,
                                                             gpu_queue: Any, static_claim: str) -> None:
    gpu_queue(gpus=2)
    first = apply(kube, namespace, queued_job("first", static_claim))
    wait_for(lambda: len(job_pods(kube, namespace, first)) == 1, 90, what="the first job's pod",
             diagnose=lambda: diagnose(kube, namespace))
    st = wait_status(kube, namespace, first, lambda st: (st.get("queue") or {}).get("admitted") is True, 30,
                     "admitted")
    (wl,) = workloads_of(kube, namespace, first)
    assert st["queue"]["workload"] == wl["metadata"]["name"] and st["queue"]["clusterQueue"] == namespace
    assert wl["spec"]["queueName"] == "gpus" and [(p["name"], p["count"]) for p in wl["spec"]["podSets"]] == [
        ("master", 1)]
    assert condition(st, C.COND_QUOTA_RESERVED)["status"] == "True"

    second = apply(kube, namespace, queued_job("second", static_claim))
    st = wait_status(kube, namespace, second, waiting_for_quota, 60, "Kueue's pending reason")
    assert f"insufficient unused quota for {GPU} in flavor {namespace}" in st["queue"]["message"], st["queue"]
    assert st["queue"]["name"] == "gpus" and st["queue"]["admitted"] is False
    assert condition(st, C.COND_QUOTA_RESERVED)["message"] == st["queue"]["message"]
    assert job_pods(kube, namespace, second) == []
    # `kubectl get ltj -o wide` shows the queue and that the job is not admitted.
    header, row = kube.kubectl("get", "ltj", second, "-n", namespace, "-o", "wide").stdout.splitlines()
    assert header.split()[-2:] == ["QUEUE", "ADMITTED"] and row.split()[-2:] == ["gpus", "false"], (header, row)

    # The first job's rank succeeds: its Workload is marked Finished, and Kueue admits the second.
    wait_status(kube, namespace, first, lambda st: st.get("phase") == C.PHASE_RUNNING, 60, "running")
    (pod,) = job_pods(kube, namespace, first)
    kube.kubectl("annotate", "pod", pod["metadata"]["name"], "-n", namespace, f"{EXIT_CODE}=0")
    wait_status(kube, namespace, first, lambda st: (st.get("queue") or {}).get("finished") is True, 90,
                "its Workload finished")
    assert conditions(kube, namespace, wl["metadata"]["name"])["Finished"]["reason"] == "Succeeded"
    wait_for(lambda: len(job_pods(kube, namespace, second)) == 1, 90, what="the second job's pod",
             diagnose=lambda: diagnose(kube, namespace))
    # One event per cause, not per pass.
    for name in (first, second):
        assert len(job_events(kube, namespace, name, C.Reason.CREATED_WORKLOAD)) == 1
    assert len(job_events(kube, namespace, first, C.Reason.ADMITTED)) == 1
    wait_for(lambda: len(job_events(kube, namespace, second, C.Reason.ADMITTED)) == 1, 30,
             what="the second job's Admitted event")
    assert len(job_events(kube, namespace, second, "Pending")) == 1


def test_a_gang_bigger_than_the_quota_never_gets_a_pod(kube: Kube, namespace: str, operator: Any, gpu_queue: Any,
                                                       static_claim: str) -> None:
    gpu_queue(gpus=2)
    name = apply(kube, namespace, queued_job("big", static_claim, nodes=3, gpus=1))
    # Kueue has decided (and the operator has seen it) once the job's status carries Kueue's reason.
    wait_status(kube, namespace, name, waiting_for_quota, 60, "Kueue's pending reason")
    (wl,) = workloads_of(kube, namespace, name)
    assert [(p["name"], p["count"]) for p in wl["spec"]["podSets"]] == [("master", 1), ("worker", 2)]
    assert conditions(kube, namespace, wl["metadata"]["name"])["QuotaReserved"]["reason"] == "Pending"
    assert job_pods(kube, namespace, name) == []


def test_deleting_a_queued_job_leaves_no_workload(kube: Kube, namespace: str, operator: Any, gpu_queue: Any,
                                                  static_claim: str) -> None:
    gpu_queue(gpus=0)
    name = apply(kube, namespace, queued_job("doomed", static_claim))
    wait_status(kube, namespace, name, waiting_for_quota, 60, "Kueue's pending reason")
    (wl,) = workloads_of(kube, namespace, name)
    kube.kubectl("delete", "ltj", name, "-n", namespace)
    wait_for(lambda: absent(kube, "workload", wl["metadata"]["name"], "-n", namespace), 60,
             what="the garbage collector to delete the Workload")


def test_an_operator_restarted_mid_admission_makes_one_workload_and_one_gang(
        kube: Kube, namespace: str, operator: Any, gpu_queue: Any, static_claim: str) -> None:
    gpu_queue(gpus=0)
    name = apply(kube, namespace, queued_job("restarted", static_claim, nodes=2, gpus=1))
    wait_status(kube, namespace, name, waiting_for_quota, 60, "Kueue's pending reason")
    operator.stop()
    # The quota comes, and Kueue admits the Workload, while no operator runs.
    (wl,) = workloads_of(kube, namespace, name)
    kube.kubectl("patch", "clusterqueue", namespace, "--type=json", "-p", json.dumps([
        {"op": "replace", "path": "/spec/resourceGroups/0/flavors/0/resources/2/nominalQuota", "value": 2}]))
    wait_for(lambda: admitted(kube, namespace, wl["metadata"]["name"]), 60, what="Kueue's admission",
             diagnose=lambda: diagnose(kube, namespace))
    assert job_pods(kube, namespace, name) == []
    operator()
    wait_for(lambda: len(job_pods(kube, namespace, name)) == 2, 90, what="the gang",
             diagnose=lambda: diagnose(kube, namespace))
    uids = sorted(p["metadata"]["uid"] for p in job_pods(kube, namespace, name))
    # And once more with the gang up: nothing is made twice.
    operator()
    wait_status(kube, namespace, name, lambda st: st.get("readyNodes") == 2, 60, "both ranks running")
    assert [w["metadata"]["name"] for w in workloads_of(kube, namespace, name)] == [wl["metadata"]["name"]]
    assert sorted(p["metadata"]["uid"] for p in job_pods(kube, namespace, name)) == uids


def test_the_admitted_flavors_node_labels_and_tolerations_are_on_every_pod(
        kube: Kube, namespace: str, operator: Any, gpu_queue: Any, static_claim: str) -> None:
    toleration = {"key": "ltj.dev/test-pool", "operator": "Equal", "value": namespace, "effect": "NoSchedule"}
    gpu_queue(gpus=4, flavor={"nodeLabels": {"ltj.dev/test-pool": namespace}, "tolerations": [toleration]})
    name = apply(kube, namespace, queued_job("placed", static_claim, nodes=2, gpus=1))
    wait_for(lambda: len(job_pods(kube, namespace, name)) == 2, 90, what="the gang",
             diagnose=lambda: diagnose(kube, namespace))
    for pod in job_pods(kube, namespace, name):
        assert pod["spec"]["nodeSelector"] == {"ltj.dev/test-pool": namespace}
        assert toleration in pod["spec"]["tolerations"]
        rank = pod["metadata"]["labels"][C.LABEL_NODE_RANK]
        assert pod["metadata"]["labels"][C.LABEL_KUEUE_PODSET] == ("master" if rank == "0" else "worker")
        assert pod["metadata"]["labels"][C.LABEL_KUEUE_CLUSTER_QUEUE] == namespace
    st = kube.get("ltj", name, "-n", namespace)["status"]
    assert [p["nodeSelector"] for p in st["queue"]["podSets"]] == [{"ltj.dev/test-pool": namespace}] * 2


def test_a_high_priority_job_preempts_a_low_one_which_is_queued_again_and_resumes_from_its_checkpoint(
        kube: Kube, namespace: str, operator: Any, gpu_queue: Any, static_claim: str) -> None:
    gpu_queue(gpus=2, preemption={"withinClusterQueue": "LowerPriority"})
    classes = {"low": 10, "high": 1000}
    create(kube, *({"apiVersion": API, "kind": "WorkloadPriorityClass", "metadata": {"name": f"{namespace}-{name}"},
                    "value": value} for name, value in classes.items()))
    try:
        low = apply(kube, namespace, queued_job("low", static_claim, priority=f"{namespace}-low"))
        wait_status(kube, namespace, low, lambda st: st.get("phase") == C.PHASE_RUNNING, 90, "running")
        (first,) = job_pods(kube, namespace, low)
        (wl,) = workloads_of(kube, namespace, low)
        # On kwok nothing trains: the checkpoint the relay would report is put on record by hand.
        checkpoint = "/output/low/checkpoints/epoch=03-step=120.ckpt"
        kube.kubectl("patch", "ltj", low, "-n", namespace, "--subresource=status", "--type=merge",
                     "-p", json.dumps({"status": {"training": {"lastCheckpoint": checkpoint}}}))
        wait_status(kube, namespace, low, lambda st: st.get("resumeFrom") == checkpoint, 30, "the checkpoint on record")

        high = apply(kube, namespace, queued_job("high", static_claim, priority=f"{namespace}-high"))
        # Kueue preempts the low job: its pod is deleted, then its admission cleared and the Workload requeued.
        st = wait_status(kube, namespace, low, lambda st: st.get("evictions") == 1, 60, "the eviction on record")
        assert st["phase"] == C.PHASE_SUSPENDED and st["restarts"] == 0 and st.get("failure") is None
        assert st["lastEviction"]["reason"] == "Preempted" and st["lastEviction"]["attempt"] == 0
        assert "Preempted to accommodate a workload" in st["lastEviction"]["message"], st["lastEviction"]
        suspended = condition(st, C.COND_SUSPENDED)
        assert (suspended["status"], suspended["reason"]) == ("True", C.Reason.WORKLOAD_EVICTED)
        assert st["lastEviction"]["message"] in suspended["message"]

        def requeued() -> dict[str, Any] | None:
            conds = conditions(kube, namespace, wl["metadata"]["name"])
            return conds if conds["QuotaReserved"]["status"] == "False" and "Requeued" in conds else None

        conds = wait_for(requeued, 60, what="the low job's admission cleared",
                         diagnose=lambda: diagnose(kube, namespace))
        assert job_pods(kube, namespace, low) == []
        assert (conds["Requeued"]["status"], conds["Requeued"]["reason"]) == ("True", "Preempted")
        assert conds["Admitted"]["status"] == "False" and conds["Evicted"]["status"] == "True"
        # The quota went to the high job, and the low one waits with Kueue's reason, still Suspended.
        wait_for(lambda: len(job_pods(kube, namespace, high)) == 1, 90, what="the high job's pod",
                 diagnose=lambda: diagnose(kube, namespace))
        st = wait_status(kube, namespace, low, waiting_for_quota, 60, "Kueue's pending reason")
        assert st["phase"] == C.PHASE_SUSPENDED and st["queue"]["admitted"] is False

        # The high job succeeds: Kueue admits the low one again, whose new gang resumes from its checkpoint.
        wait_status(kube, namespace, high, lambda st: st.get("phase") == C.PHASE_RUNNING, 60, "running")
        (pod,) = job_pods(kube, namespace, high)
        kube.kubectl("annotate", "pod", pod["metadata"]["name"], "-n", namespace, f"{EXIT_CODE}=0")
        st = wait_status(kube, namespace, low, lambda st: st.get("phase") == C.PHASE_RUNNING, 120, "running again")
        (second,) = job_pods(kube, namespace, low)
        assert second["metadata"]["uid"] != first["metadata"]["uid"]
        assert second["metadata"]["labels"][C.LABEL_ATTEMPT] == "1"
        (trainer,) = [c for c in second["spec"]["containers"] if c["name"] == C.TRAINER_CONTAINER]
        env = {e["name"]: e.get("value") for e in trainer["env"]}
        assert env[C.ENV_RESUME] == checkpoint and env[C.ENV_ATTEMPT] == "1"
        assert (st["attempt"], st["restarts"], st["evictions"]) == (1, 0, 1)
        resumed = condition(st, C.COND_SUSPENDED)
        assert (resumed["status"], resumed["reason"]) == ("False", C.Reason.RESUMED)
        assert "after eviction 1 by Kueue (Preempted)" in resumed["message"] and checkpoint in resumed["message"]
        assert admitted(kube, namespace, wl["metadata"]["name"])
        for reason in (C.Reason.WORKLOAD_EVICTED, C.Reason.RESUMED):
            assert len(job_events(kube, namespace, low, reason)) == 1, reason
    finally:
        kube.kubectl("delete", "workloadpriorityclass", *(f"{namespace}-{name}" for name in classes), check=False)


def test_a_gang_that_runs_is_pods_ready_and_one_that_never_does_is_evicted_at_the_timeout_without_a_failure(
        kube: Kube, namespace: str, operator: Any, gpu_queue: Any, static_claim: str) -> None:
    """Kueue's waitForPodsReady (the local cluster configures it): the operator sets PodsReady=True once the
    gang runs, so a running job is never timed out; a gang whose pods never get a node is evicted at the
    timeout (PodsReadyTimeout), through the same graceful stop as any eviction."""
    gpu_queue(gpus=4)
    ready = apply(kube, namespace, queued_job("ready", static_claim))
    stuck_manifest = queued_job("stuck", static_claim)
    stuck_manifest["spec"]["podTemplate"] = {"nodeSelector": {"ltj.dev/no-such-pool": namespace}}
    stuck = apply(kube, namespace, stuck_manifest)

    wait_status(kube, namespace, ready, lambda st: st.get("phase") == C.PHASE_RUNNING, 90, "running")
    (ready_wl,) = workloads_of(kube, namespace, ready)
    pods_ready = wait_for(lambda: conditions(kube, namespace, ready_wl["metadata"]["name"]).get("PodsReady"), 30,
                          what="PodsReady on the running job's Workload", diagnose=lambda: diagnose(kube, namespace))
    assert (pods_ready["status"], pods_ready["reason"]) == ("True", "Started"), pods_ready
    (stuck_wl,) = workloads_of(kube, namespace, stuck)
    name = stuck_wl["metadata"]["name"]
    wait_for(lambda: admitted(kube, namespace, name) and len(job_pods(kube, namespace, stuck)) == 1, 60,
             what="the stuck job admitted, its pod made", diagnose=lambda: diagnose(kube, namespace))
    waiting = conditions(kube, namespace, name)["PodsReady"]
    assert (waiting["status"], waiting["reason"]) == ("False", "WaitForStart"), waiting

    # The timeout passes: Kueue evicts the stuck job, whose pod goes and whose admission is cleared.
    st = wait_status(kube, namespace, stuck, lambda st: st.get("evictions") == 1, 150, "the PodsReady timeout's eviction")
    assert st["lastEviction"]["reason"] == "PodsReadyTimeout", st["lastEviction"]
    assert "Exceeded the PodsReady timeout" in st["lastEviction"]["message"], st["lastEviction"]
    assert st["phase"] == C.PHASE_SUSPENDED and st["restarts"] == 0 and st.get("failure") is None

    def cleared() -> dict[str, Any] | None:
        conds = conditions(kube, namespace, name)
        return conds if conds["QuotaReserved"]["status"] == "False" and "Requeued" in conds else None

    conds = wait_for(cleared, 60, what="the stuck job's admission cleared", diagnose=lambda: diagnose(kube, namespace))
    assert job_pods(kube, namespace, stuck) == []
    # Not requeued at once: Kueue's backoff after a PodsReady timeout decides when it queues again.
    assert (conds["Requeued"]["status"], conds["Requeued"]["reason"]) == ("False", "PodsReadyTimeout")
    assert "admission" not in kube.get("workload", name, "-n", namespace)["status"]

    # The running job was admitted as long ago, and runs on: PodsReady kept it from the timeout.
    st = kube.get("ltj", ready, "-n", namespace)["status"]
    assert st["phase"] == C.PHASE_RUNNING and st.get("evictions") is None
    assert "Evicted" not in conditions(kube, namespace, ready_wl["metadata"]["name"])
