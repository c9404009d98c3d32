"""Training as users watch it, on a real cluster (conftest.py's ``real_cluster``): the status follows
the epochs live, early stopping and failures that must not be retried are reported, and deleting a
job deletes everything it made."""

from __future__ import annotations

import pytest

from clitest import check_logs
from kubetest import apply, condition, dump, job, pods, status, wait_for, wait_status, wait_terminal
from realcluster import RealCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_status_follows_the_epochs_live_and_the_columns_show_the_result(real_cluster: RealCluster, ns: str):
    kube = real_cluster.kube
    # Two ranks (DDP over the network) make epochs long enough for the relay to report each one.
    name = apply(kube, ns, job("live", training={"maxEpochs": 8, "earlyStopping": {"enabled": False}}))

    # The training status arrives while the job runs, not only at the end: several epochs are
    # seen, in order, with their metrics, before the job finishes.
    seen: dict[int, dict] = {}

    def progressed() -> bool:
        st = status(kube, ns, name)
        tr = st.get("training") or {}
        if st.get("phase") == "Running" and isinstance(tr.get("epoch"), int):
            seen.setdefault(tr["epoch"], tr)
        return len(seen) >= 3 or st.get("phase") in ("Succeeded", "Failed")

    wait_for(progressed, 420, interval=0.3, what="live training progress")
    assert len(seen) >= 3, (seen, dump(kube, ns))
    epochs = sorted(seen)
    assert all(seen[e]["metrics"].get("val_loss") is not None for e in epochs)
    assert [seen[e]["progress"] for e in epochs] == sorted(seen[e]["progress"] for e in epochs)

    st = wait_terminal(kube, ns, name)
    assert st["phase"] == "Succeeded", dump(kube, ns)
    tr = st["training"]
    assert tr["epoch"] == 7 and not tr.get("earlyStopped")
    assert condition(st, "EarlyStopped")["status"] == "False"
    table = kube.kubectl("get", "ltj", name, "-n", ns).stdout
    header, row = table.splitlines()[:2]
    for column in ("PHASE", "NODES", "EPOCH", "BEST", "BEST CHECKPOINT", "RESTARTS"):
        assert column in header
    # Columns a person reads: the epoch counted from 1 of maxEpochs, the best value rounded, its checkpoint.
    shown = tr["display"]
    assert shown["epoch"] == f"8/{tr['maxEpochs']}" and shown["best"] == f"{tr['monitor']}={tr['bestScore']:.4g}"
    assert shown["bestCheckpoint"] == tr["bestCheckpoint"].rsplit("/", 1)[-1]
    assert "Succeeded" in row and all(shown[k] in row for k in ("epoch", "best", "bestCheckpoint")), table
    # `kubectl ltj logs -f` of the finished job: every rank's lines, prefixed; rank 0's progress comes as
    # single lines (no terminal in a pod, so no carriage-return bars), through to the last epoch.
    logs = check_logs(kube.kubeconfig, ns, name, nodes=2)
    assert "\r" not in logs
    assert any(line.startswith("[rank 0] ") and "epoch 8/8" in line for line in logs.splitlines()), logs[-3000:]


def test_early_stopping_is_reported(real_cluster: RealCluster, ns: str):
    # min_delta larger than any possible improvement: every epoch after the first counts as no
    # improvement, so patience 1 stops deterministically at epoch 1.
    name = apply(real_cluster.kube, ns, job("es", nodes=1, training={
        "maxEpochs": 6, "earlyStopping": {"enabled": True, "patience": 1, "minDelta": 100.0}}))
    st = wait_terminal(real_cluster.kube, ns, name)
    assert st["phase"] == "Succeeded", dump(real_cluster.kube, ns)
    assert st["training"]["earlyStopped"]["epoch"] == 1
    assert condition(st, "EarlyStopped")["status"] == "True"
    assert condition(st, "Succeeded")["reason"] == "EarlyStopped"


# case: (spec patch, exit code, reason, text the failure names)
NON_RETRYABLE = {
    # A metric no step logs: Lightning raises during the first validation -> exit 1.
    "runtime": ({"training": {"monitor": {"metric": "no_such_metric"}}}, 1, "NonRetryableExitCode", "no_such_metric"),
    # A data file that does not exist is a configuration error -> exit 2, never retried.
    "config": ({"data": {"name": "csv", "args": {"path": "/output/missing.csv"}}}, 2, "InvalidConfig", "missing.csv"),
}


def test_non_retryable_exits_fail_the_job_with_the_failure_recorded(real_cluster: RealCluster, ns: str):
    kube = real_cluster.kube
    names = {case: apply(kube, ns, job(f"bad-{case}", nodes=1, **spec)) for case, (spec, *_) in NON_RETRYABLE.items()}
    for case, (_, exit_code, reason, needle) in NON_RETRYABLE.items():
        name = names[case]
        st = wait_terminal(kube, ns, name, timeout=300)
        assert st["phase"] == "Failed", dump(kube, ns)
        failure = st["failure"]
        assert failure["pod"] == f"{name}-node-0" and failure["rank"] == 0
        assert (failure["exitCode"], failure["reason"]) == (exit_code, reason), (case, failure)
        assert st.get("restarts", 0) == 0
        failed = condition(st, "Failed")
        assert failed["reason"] == reason
        assert needle in failed["message"] + failure.get("message", ""), (failed, failure)


def test_deletion_cascades_to_every_child(real_cluster: RealCluster, ns: str):
    kube = real_cluster.kube
    name = apply(kube, ns, job("cascade", training={"maxEpochs": 50}))
    wait_for(lambda: len(pods(kube, ns, name)) == 2, 120, what="pods created")
    kinds = "pods,services,persistentvolumeclaims,serviceaccounts,roles,rolebindings,networkpolicies"
    owned = lambda: [i for i in kube.get(kinds, "-n", ns)["items"]  # noqa: E731
                     if any(r.get("name") == name for r in i["metadata"].get("ownerReferences") or [])]
    # The Service and RoleBinding come with the pods (in the round trip that creates them).
    wait_for(lambda: {i["kind"] for i in owned()} >= {"Pod", "Service", "PersistentVolumeClaim", "ServiceAccount",
                                                      "Role", "RoleBinding", "NetworkPolicy"}, 60,
             what="every child created")
    # The run has written to the claim's volume (the relay has reported it) before it goes.
    wait_status(kube, ns, name, lambda st: st.get("training"), 300, "the first training status")
    kube.kubectl("delete", "ltj", name, "-n", ns, "--wait=true", timeout=120)
    wait_for(lambda: not owned(), 180, what="every child garbage-collected",
             diagnose=lambda: "\n".join(f"left: {i['kind']} {i['metadata']['name']} deleting since "
                                        f"{i['metadata'].get('deletionTimestamp')} finalizers "
                                        f"{i['metadata'].get('finalizers')}" for i in owned()))
