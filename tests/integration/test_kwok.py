"""kwok's simulated nodes against the real control plane: GPU capacity, scheduling, and pods driven
through Running to Succeeded/Failed by kwok Stages (ltj_localcluster/kwok-stages.yaml); and the
operator's scheduling-only behaviour on them (no trainer runs)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from kubetest import Kube, absent, apply, condition, job, wait_for, wait_status
from ltj_operator import constants as C
from ltj_localcluster.controlplane import read_pids
from ltj_localcluster.kwok import EXIT_CODE, RUN_SECONDS, KwokNodes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

GPUS = 4


@pytest.fixture(scope="session")
def kwok_cluster(local_cluster) -> KwokNodes:
    """conftest's cluster: a control plane with two kwok nodes of GPUS GPUs each."""
    assert local_cluster.kwok is not None and local_cluster.pool.gpus == GPUS
    return local_cluster.kwok


def create_pod(kube: Kube, ns: str, name: str, annotations: dict[str, str] | None = None,
               gpus: int = 0) -> None:
    container: dict[str, Any] = {"name": "main", "image": "registry.invalid/never-pulled:1"}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "annotations": annotations or {}},
           "spec": {"restartPolicy": "Never", "containers": [container]}}
    kube.kubectl("create", "-n", ns, "-f", "-", input=yaml.safe_dump(pod))


def get_pod(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return kube.get("pod", name, "-n", ns)


def watch_phases(kube: Kube, ns: str, name: str, last: tuple[str, ...], timeout: float = 60) -> list[dict[str, Any]]:
    """The pod as polled, once per phase change, until it reaches a phase in ``last``."""
    seen: list[dict[str, Any]] = []

    def reached() -> bool:
        pod = get_pod(kube, ns, name)
        phase = pod["status"].get("phase")
        if not seen or seen[-1]["status"].get("phase") != phase:
            seen.append(pod)
        return phase in last

    wait_for(reached, timeout, f"pod {name} in {last}", interval=0.2,
             diagnose=lambda: json.dumps(seen[-1:], indent=1))
    return seen


def kwok_processes(kube: Kube) -> list[psutil.Process]:
    """kwok processes serving this cluster (others may run beside it)."""
    return [p for p in psutil.process_iter(["cmdline", "status"]) if Path((p.info["cmdline"] or [""])[0]).name == "kwok"
            and f"--kubeconfig={kube.kubeconfig}" in p.info["cmdline"] and p.info["status"] != psutil.STATUS_ZOMBIE]


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_nodes_are_ready_untainted_with_their_gpus(kube: Kube, kwok_cluster: KwokNodes):
    nodes = kube.get("nodes")["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == kwok_cluster.names
    for node in nodes:
        assert not node["spec"].get("taints"), node["spec"]
        assert node["status"]["capacity"]["nvidia.com/gpu"] == str(GPUS)
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(GPUS)
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", ready


def test_pod_runs_with_a_pod_ip_and_keeps_running(kube: Kube, namespace: str):
    create_pod(kube, namespace, "forever", gpus=1)
    create_pod(kube, namespace, "brief", {RUN_SECONDS: "1"})
    running = watch_phases(kube, namespace, "forever", ("Running",))[-1]
    assert running["status"]["podIP"].startswith("10.245."), running["status"]
    assert all(s["ready"] and "running" in s["state"] for s in running["status"]["containerStatuses"])
    # An unannotated pod outlives one that was told to end.
    watch_phases(kube, namespace, "brief", ("Succeeded",))
    assert get_pod(kube, namespace, "forever")["status"]["phase"] == "Running"


@pytest.mark.parametrize("code,phase,reason", [(0, "Succeeded", "Completed"), (3, "Failed", "Error")])
def test_annotated_pod_ends_with_its_exit_code_after_its_run_time(kube: Kube, namespace: str, code: int,
                                                                  phase: str, reason: str):
    create_pod(kube, namespace, "job", {RUN_SECONDS: "2", EXIT_CODE: str(code)})
    seen = watch_phases(kube, namespace, "job", ("Succeeded", "Failed"))
    assert [p["status"]["phase"] for p in seen][-2:] == ["Running", phase]
    assert seen[-2]["status"]["podIP"]
    status = seen[-1]["status"]
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (code, reason)
    # kwok ends the pod at its start time plus the run time (both in whole seconds in the API).
    assert (ts(terminated["finishedAt"]) - ts(status["startTime"])).total_seconds() >= 2, terminated


def test_pod_wanting_more_gpus_than_any_node_stays_pending(kube: Kube, namespace: str):
    create_pod(kube, namespace, "greedy", gpus=GPUS + 1)

    def unschedulable() -> dict[str, Any] | None:
        conds = get_pod(kube, namespace, "greedy")["status"].get("conditions") or []
        return next((c for c in conds if c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"), None)

    cond = wait_for(unschedulable, 60, interval=0.5, what="the scheduler to give up on greedy")
    assert "Insufficient nvidia.com/gpu" in cond["message"], cond
    assert get_pod(kube, namespace, "greedy")["status"]["phase"] == "Pending"


def test_deleted_pod_is_gone(kube: Kube, namespace: str):
    create_pod(kube, namespace, "doomed")
    watch_phases(kube, namespace, "doomed", ("Running",))
    kube.kubectl("delete", "pod", "doomed", "-n", namespace, "--wait=false")
    wait_for(lambda: absent(kube, "pod", "doomed", "-n", namespace), 30, what="doomed to be removed")


def test_stop_leaves_no_kwok_process_and_start_resumes(kube: Kube, namespace: str, kwok_cluster: KwokNodes):
    create_pod(kube, namespace, "before")
    watch_phases(kube, namespace, "before", ("Running",))
    assert len(kwok_processes(kube)) == 1
    kwok_cluster.stop()
    assert kwok_processes(kube) == []
    assert "kwok" not in read_pids(kwok_cluster.run_dir)
    # Started again on the same cluster, kwok picks its nodes and pods back up.
    kwok_cluster.start()
    create_pod(kube, namespace, "after", {EXIT_CODE: "0"})
    watch_phases(kube, namespace, "after", ("Succeeded",))
    assert get_pod(kube, namespace, "before")["status"]["phase"] == "Running"


def test_unschedulable_job_says_why(kube, namespace, operator):
    # A class no provisioner serves keeps the claim unbound, so the scheduler's first reason is the
    # claim; once a volume is bound by hand its reason becomes the GPUs, and the condition follows it.
    name = apply(kube, namespace, job("toobig", nodes=1, gpusPerNode=8, output={"volumeClaimTemplate": {
        "storageClassName": "ltj-test-manual", "accessModes": ["ReadWriteMany"], "storage": "1Gi"}}))

    def unschedulable_because(text: str):
        return lambda st: (text in ((condition(st, "Unschedulable") or {}).get("message") or "")
                           and condition(st, "Unschedulable")["status"] == "True")

    # At first the claim may be binding (a provisioner takes seconds, at every start): a wait, not a warning.
    st = wait_status(kube, namespace, name, lambda st: "unbound immediate PersistentVolumeClaims" in (
        (condition(st, "Running") or {}).get("message") or ""), 60, "Pending on the unbound claim")
    assert condition(st, "Unschedulable") is None, st
    st = wait_status(kube, namespace, name, unschedulable_because("PersistentVolumeClaim"), 120,
                     "Unschedulable condition naming the claim still unbound")
    assert condition(st, "Unschedulable")["reason"] == "PodsUnschedulable"

    claim = kube.get("pvc", f"{name}-output", "-n", namespace)
    volume = f"manual-{claim['metadata']['uid']}"
    # Nothing mounts it on kwok's nodes: a volume only has to exist for the scheduler.
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "ltj-test-manual",
                 "hostPath": {"path": f"/nonexistent/{volume}"},
                 "claimRef": {"namespace": namespace, "name": claim["metadata"]["name"],
                              "uid": claim["metadata"]["uid"]}}}))
    st = wait_status(kube, namespace, name, unschedulable_because("nvidia.com/gpu"), 120,
                     "Unschedulable condition naming the GPUs once the claim is bound")
    assert condition(st, "Unschedulable")["reason"] == "PodsUnschedulable"


# A required term against the filler's node: the scheduler's own scores (the emptier node, the default spread
# of a Service's pods) cannot outvote a filter, so the shared node is certain.
AVOID_FILLER = {"requiredDuringSchedulingIgnoredDuringExecution": [{
    "labelSelector": {"matchLabels": {"app": "filler"}}, "topologyKey": "kubernetes.io/hostname"}]}


@pytest.mark.parametrize("anti_affinity,spread", [(None, True), (AVOID_FILLER, False)])
def test_a_jobs_ranks_spread_over_the_nodes_unless_the_job_says_otherwise(
        kube: Kube, namespace: str, kwok_cluster: KwokNodes, operator: Any, static_claim: str,
        anti_affinity: dict[str, Any] | None, spread: bool):
    """One pod per node where there are nodes enough: the operator's preferred anti-affinity outweighs the
    scheduler's preference for the emptier node, which a filler on the second node makes of the first; a
    job's own podAntiAffinity (here one that avoids the filler) replaces it, and the ranks share the first node."""
    first, second = kwok_cluster.names
    filler = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "filler", "labels": {"app": "filler"}},
              "spec": {"nodeName": second, "restartPolicy": "Never", "containers": [{
                  "name": "main", "image": "registry.invalid/never-pulled:1",
                  "resources": {"requests": {"cpu": "6", "memory": "12Gi"}}}]}}
    kube.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(filler))
    try:
        watch_phases(kube, namespace, "filler", ("Running",))
        manifest = job("spread", nodes=2)
        manifest["spec"]["output"] = {"claimName": static_claim}
        if anti_affinity is not None:
            manifest["spec"]["podTemplate"] = {"affinity": {"podAntiAffinity": anti_affinity}}
        name = apply(kube, namespace, manifest)

        def placed() -> list[str] | None:
            items = kube.get("pods", "-n", namespace, "-l", f"{C.LABEL_JOB_NAME}={name}")["items"]
            nodes = [p["spec"].get("nodeName") for p in items]
            return nodes if len(nodes) == 2 and all(nodes) else None

        nodes = wait_for(placed, 60, interval=0.5, what="the scheduler to place both ranks")
        assert sorted(nodes) == ([first, second] if spread else [first, first])
        if anti_affinity is not None:
            for pod in kube.get("pods", "-n", namespace, "-l", f"{C.LABEL_JOB_NAME}={name}")["items"]:
                assert pod["spec"]["affinity"]["podAntiAffinity"] == anti_affinity
    finally:
        kube.kubectl("delete", "pod", "filler", "-n", namespace, "--wait=true", check=False)
