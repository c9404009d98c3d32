"""The e2e tier's cluster: one real cluster per session (the local real node; kind in the GitHub
workflow) with the chart installed as users install it, and a restricted namespace per test."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from realcluster import RealCluster, start_kind, start_real_node

# Uninstalls the chart and stops the cluster: its tests run after every other e2e test.
LAST_MODULE = "test_uninstall.py"


@pytest.hookimpl(trylast=True)  # after pytest has grouped the tests by the session fixture's param
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def cluster_of(item: pytest.Item) -> str | None:
        callspec = getattr(item, "callspec", None)
        return callspec.params.get("real_cluster") if callspec else None

    groups = list(dict.fromkeys(map(cluster_of, items)))
    items.sort(key=lambda item: (groups.index(cluster_of(item)), item.path.name == LAST_MODULE))


@pytest.fixture(scope="session", params=["realnode", pytest.param("kind", marks=pytest.mark.kind)])
def real_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    if request.param == "realnode":
        cluster = start_real_node(tmp_path_factory.mktemp("realnode"))
    else:
        cluster = start_kind(Path(os.environ.get("LTJ_KIND_ARTIFACTS") or tmp_path_factory.mktemp("kind")))
    if isinstance(cluster, str):
        pytest.skip(cluster)
    try:
        cluster.install_operator()
        yield cluster
    finally:
        for stop in cluster.teardown:
            stop()


@pytest.fixture
def ns(real_cluster: RealCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace where the restricted Pod Security profile is enforced."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.originalname.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    real_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest"}}}))
    yield name
    real_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
