"""Shared fixtures. The local cluster starts lazily, once per session, only for tests that ask."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from kubetest import Kube, install_crd, wait_for


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The local control plane with two kwok nodes of 4 GPUs each: pods are scheduled, nothing runs
    (training runs in the e2e tier, on the real node)."""
    from ltj_localcluster.cluster import LocalCluster, NodePool

    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), NodePool(nodes=2, cpu="8", memory="16Gi", gpus=4),
                           real_node=False)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def kueue_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A cluster of its own, shaped like `local_cluster`, with Kueue's controller beside it (built on
    first use): `local_cluster` stays a cluster without Kueue, and tests that do not ask for this one
    never start it."""
    from ltj_localcluster.cluster import LocalCluster, NodePool

    cluster = LocalCluster(tmp_path_factory.mktemp("kueue-cluster"),
                           NodePool(nodes=2, cpu="8", memory="16Gi", gpus=4), real_node=False, kueue=True)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


def _kube(cluster: Any) -> Kube:
    info = cluster.info
    kube = Kube(info.kubeconfig, Path(info.bin_dir), Path(info.run_dir))
    install_crd(kube)
    return kube


@pytest.fixture(scope="session")
def kube(local_cluster: Any) -> Kube:
    os.environ["KUBECONFIG"] = local_cluster.info.kubeconfig
    return _kube(local_cluster)


@pytest.fixture(scope="session")
def kueue_kube(kueue_cluster: Any) -> Kube:
    """`kueue_cluster` as tests use it. A test module whose tests all run there overrides `kube` with
    it, so `namespace` and `operator` use that cluster too."""
    return _kube(kueue_cluster)


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted (without waiting) afterwards."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


OPERATOR_ENV = {
    "LTJ_DEFAULT_TRAINER_IMAGE": "ltj-trainer:dev",
    "LTJ_OPERATOR_IMAGE": "ltj-operator:dev",
    "LTJ_LOG_LEVEL": "DEBUG",
    # Not served: in-process operators of tests running at once would compete for one port.
    "LTJ_METRICS_PORT": "0",
}


@pytest.fixture
def operator(kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], Any]]:
    """The operator in-process (kopf's KopfRunner), watching the test's namespace.

    Yields a function that starts a fresh operator (stopping the current one first), so a test can
    kill and restart it mid-job.
    """
    from kopf.testing import KopfRunner

    for k, v in OPERATOR_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)  # the cluster of `kube`, also where a module overrides it
    monkeypatch.setenv("LTJ_WATCH_NAMESPACES", namespace)
    runners: list[Any] = []

    def stop() -> None:
        while runners:
            runner = runners.pop()
            runner.__exit__(None, None, None)
            assert runner.exception is None, runner.output[-5000:]

    def start() -> Any:
        stop()
        runner = KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "ltj_operator.handlers"],
                            timeout=60)
        runner.__enter__()
        runners.append(runner)
        return runner

    start()
    start.stop = stop  # type: ignore[attr-defined]
    yield start
    stop()


@pytest.fixture
def static_claim(kube: Kube, namespace: str) -> Iterator[str]:
    """A ReadWriteMany claim bound to a hand-made volume by the controller manager (kwok clusters have
    no provisioner), so the scheduler's verdict on a pod mounting it is about the pod itself."""
    pv_name = f"static-{namespace}"[:63]
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                   "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": f"/tmp/{pv_name}"},
                   "claimRef": {"namespace": namespace, "name": "static"}}}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "static", "namespace": namespace},
           "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv_name,
                    "resources": {"requests": {"storage": "1Gi"}}}}
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([pv, pvc]))
    try:
        wait_for(lambda: kube.get("pvc", "static", "-n", namespace).get("status", {}).get("phase") == "Bound", 60,
                 what="the static claim to bind")
        yield "static"
    finally:
        kube.kubectl("delete", "pv", pv_name, "--wait=false", check=False)
