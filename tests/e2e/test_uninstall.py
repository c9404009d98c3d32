"""The end of every e2e session (conftest.py runs this module last): Helm uninstalls the chart
cleanly, and stopping the local real node leaves this machine as it was."""

from __future__ import annotations

import pytest

from kubetest import wait_for
from realcluster import OPERATOR_NAMESPACE, RELEASE, RealCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_helm_uninstall_leaves_only_what_helm_keeps(real_cluster: RealCluster):
    real_cluster.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait")
    selector = f"app.kubernetes.io/instance={RELEASE}"
    kinds = ("deployments,replicasets,pods,services,serviceaccounts,configmaps,secrets,roles,rolebindings,"
             "networkpolicies")
    left = real_cluster.kube.get(kinds, "-A", "-l", selector)["items"]
    left += real_cluster.kube.get("clusterroles,clusterrolebindings", "-l", selector)["items"]
    wait_for(lambda: not real_cluster.kube.get("pods", "-n", OPERATOR_NAMESPACE, "-l", selector)["items"], 120,
             what="the operator pod gone")
    left = [i for i in left if i["kind"] != "Pod"]
    assert not left, [f"{i['kind']}/{i['metadata']['name']}" for i in left]
    # Helm keeps CRDs it installed from crds/ (and with them every job) and the release namespace.
    real_cluster.kube.get("crd", "lightningtrainingjobs.ltj.dev")
    real_cluster.kube.get("namespace", OPERATOR_NAMESPACE)
    assert not real_cluster.kube.get("secrets", "-n", OPERATOR_NAMESPACE, "-l", "owner=helm")["items"]


def test_down_leaves_the_machine_as_it_was(real_cluster: RealCluster):
    if real_cluster.host_state is None:
        pytest.skip(f"{real_cluster.name}: the cluster does not run on this machine's host")
    while real_cluster.teardown:
        real_cluster.teardown.pop(0)()
    assert real_cluster.host_state() == real_cluster.baseline
