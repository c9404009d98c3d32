"""Shared fixtures. The local cluster starts lazily, once per session, only for tests that ask."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from kubetest import Kube, install_crd


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    from ltj_localcluster.cluster import LocalCluster, NodePool

    run_dir = tmp_path_factory.mktemp("cluster")
    cluster = LocalCluster(run_dir, NodePool(nodes=2, cpu="8", memory="16Gi", gpus=4))
    info = cluster.up()
    os.environ["KUBECONFIG"] = info.kubeconfig
    kube = Kube(info.kubeconfig, Path(info.bin_dir), run_dir, cluster.agent_state)
    try:
        install_crd(kube)
        yield kube
    finally:
        cluster.down()


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
