"""Kueue's real controller beside the local control plane (conftest's `kueue_cluster`): it runs the
pinned build, its webhooks answer the API server, and its quota path admits Workloads one GPU budget
at a time, which is what the operator's Workload protocol relies on."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from kubetest import Kube, wait_for
from ltj_localcluster.cluster import pinned_versions
from ltj_localcluster.__main__ import next_steps
from ltj_localcluster.controlplane import http_ok, read_pids
from ltj_localcluster.kueue import LTJ_FRAMEWORK

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

API = "kueue.x-k8s.io/v1beta2"
GPU = "nvidia.com/gpu"


@pytest.fixture(scope="session")
def kube(kueue_kube: Kube) -> Kube:
    """Every test here runs on the cluster with Kueue (conftest's `namespace` uses it too)."""
    return kueue_kube


def create(kube: Kube, *manifests: dict[str, Any], check: bool = True) -> Any:
    return kube.kubectl("create", "-f", "-", input=yaml.safe_dump_all(manifests), check=check)


def queues(namespace: str, gpus: int) -> list[dict[str, Any]]:
    """A ResourceFlavor, a ClusterQueue with quota for ``gpus`` GPUs of it, and a LocalQueue of that
    ClusterQueue in ``namespace``; the cluster-scoped ones are named after the namespace."""
    return [
        {"apiVersion": API, "kind": "ResourceFlavor", "metadata": {"name": namespace}},
        {"apiVersion": API, "kind": "ClusterQueue", "metadata": {"name": namespace},
         "spec": {"namespaceSelector": {},
                  "resourceGroups": [{"coveredResources": [GPU], "flavors": [
                      {"name": namespace, "resources": [{"name": GPU, "nominalQuota": gpus}]}]}]}},
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
