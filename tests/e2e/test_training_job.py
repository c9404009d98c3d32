"""End to end on the local cluster: real DDP training in pod processes, driven by the operator."""

from __future__ import annotations

import signal

import pytest
import yaml

from kubetest import (SAMPLE, apply, condition, dump, events, job, kill_trainer, pods, status,
                      wait_for, wait_status, wait_terminal)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _name_of_sample() -> str:
    return yaml.safe_load(SAMPLE.read_text())["metadata"]["name"]


def test_sample_trains_over_two_pods_and_fills_status(kube, namespace, operator):
    kube.kubectl("apply", "-n", namespace, "-f", str(SAMPLE))
    name = _name_of_sample()

    # The training status arrives while the job runs, not only at the end: several epochs are
    # seen, in order, with their metrics, before the job finishes.
    seen: dict[int, dict] = {}

    def progressed() -> bool:
        st = status(kube, namespace, name)
        tr = st.get("training") or {}
        if st.get("phase") == "Running" and isinstance(tr.get("epoch"), int):
            seen.setdefault(tr["epoch"], tr)
        return len(seen) >= 3 or st.get("phase") in ("Succeeded", "Failed")

    wait_for(progressed, 420, interval=0.3, what="live training progress")
    assert len(seen) >= 3, (seen, dump(kube, namespace))
    epochs = sorted(seen)
    assert all(seen[e]["metrics"].get("val_loss") is not None for e in epochs)
    assert [seen[e]["progress"] for e in epochs] == sorted(seen[e]["progress"] for e in epochs)

    st = wait_terminal(kube, namespace, name)
    assert st["phase"] == "Succeeded", dump(kube, namespace)
    tr = st["training"]
    assert tr["finished"] is True
    assert tr["bestCheckpoint"].endswith(".ckpt") and tr["bestCheckpoint"].startswith("/output/")
    assert isinstance(tr["bestScore"], float)
    assert 1 <= len(tr["topK"]) <= 3
    assert tr["topK"][0]["path"] == tr["bestCheckpoint"]
    assert tr["lastCheckpoint"].endswith("last.ckpt")
    assert tr["epoch"] >= 0 and tr["testMetrics"]
    assert condition(st, "Succeeded")["status"] == "True"
    assert condition(st, "CheckpointSaved")["status"] == "True"
    # Early-stopping state is reported either way: stopped (with epoch and reason) or ran to max epochs.
    es = condition(st, "EarlyStopped")
    assert es is not None and es["status"] in ("True", "False")
    assert (es["status"] == "True") == bool(tr.get("earlyStopped"))

    # DDP over two pod processes: one event log, written by global rank 0 of a world of 2.
    started = [e for e in events(kube, namespace, name) if e["type"] == "started"]
    assert started and started[0]["world_size"] == 2 and started[0]["num_nodes"] == 2

    table = kube.kubectl("get", "ltj", name, "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    for column in ("PHASE", "NODES", "EPOCH", "BEST", "CHECKPOINT", "RESTARTS"):
        assert column in header
    assert "Succeeded" in row and "last.ckpt" in row and f"{tr['bestScore']:.4f}"[:4] in row


def test_early_stopping_is_reported(kube, namespace, operator):
    # min_delta larger than any possible improvement: every epoch after the first counts as no
    # improvement, so patience 1 stops deterministically at epoch 1.
    name = apply(kube, namespace, job("es", nodes=1, training={
        "maxEpochs": 6, "earlyStopping": {"enabled": True, "patience": 1, "minDelta": 100.0}}))
    st = wait_terminal(kube, namespace, name)
    assert st["phase"] == "Succeeded", dump(kube, namespace)
    assert st["training"]["earlyStopped"]["epoch"] == 1
    assert condition(st, "EarlyStopped")["status"] == "True"
    assert condition(st, "Succeeded")["reason"] == "EarlyStopped"


def test_sigkilled_trainer_restarts_gang_and_resumes_from_checkpoint(kube, namespace, operator):
    name = apply(kube, namespace, job("kill", training={"maxEpochs": 20, "earlyStopping": {"enabled": False}}))
    before = wait_status(kube, namespace, name, lambda st: (st.get("training") or {}).get("lastCheckpoint"),
                         420, "a first checkpoint")
    kill_trainer(kube, namespace, f"{name}-node-1", signal.SIGKILL)

    st = wait_terminal(kube, namespace, name, timeout=900)
    assert st["phase"] == "Succeeded", dump(kube, namespace)
    assert st["restarts"] == 1, dump(kube, namespace)
    evs = events(kube, namespace, name)
    starts = [e for e in evs if e["type"] == "started"]
    assert len(starts) == 2, starts
    assert starts[1]["resumed_from"], "the second attempt must resume from a checkpoint"
    # Epochs continue after the resume instead of starting over at 0.
    resumed_at = evs.index(starts[1])
    first_val_after = next(e for e in evs[resumed_at:] if e["type"] == "validation")
    assert first_val_after["epoch"] >= before["training"]["epoch"]
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


@pytest.mark.parametrize("case,spec,exit_code,reason,needle", [
    # A metric no step logs: Lightning raises during the first validation -> exit 1.
    ("runtime", {"training": {"monitor": {"metric": "no_such_metric"}}}, 1, "NonRetryableExitCode", "no_such_metric"),
    # A data file that does not exist is a configuration error -> exit 2, never retried.
    ("config", {"data": {"name": "csv", "args": {"path": "/output/missing.csv"}}}, 2, "InvalidConfig", "missing.csv"),
])
def test_non_retryable_exit_fails_job_with_failure_recorded(kube, namespace, operator, case, spec, exit_code,
                                                            reason, needle):
    name = apply(kube, namespace, job(f"bad-{case}", nodes=1, **spec))
    st = wait_terminal(kube, namespace, name, timeout=300)
    assert st["phase"] == "Failed", dump(kube, namespace)
    failure = st["failure"]
    assert failure["pod"] == f"{name}-node-0" and failure["rank"] == 0
    assert failure["exitCode"] == exit_code and failure["reason"] == reason
    assert st.get("restarts", 0) == 0
    failed = condition(st, "Failed")
    assert failed["reason"] == reason
    assert needle in failed["message"] + failure.get("message", ""), (failed, failure)


def test_operator_restart_mid_job_creates_no_duplicates(kube, namespace, operator):
    name = apply(kube, namespace, job("oprestart", training={"maxEpochs": 4, "earlyStopping": {"enabled": False}}))
    wait_status(kube, namespace, name, lambda st: st.get("phase") == "Running", 300, "Running")
    operator.stop()
    uids = {p["metadata"]["uid"] for p in pods(kube, namespace, name)}
    operator()
    st = wait_terminal(kube, namespace, name)
    assert st["phase"] == "Succeeded", dump(kube, namespace)
    assert st.get("restarts", 0) == 0
    # The restarted operator adopted the running gang: no pod was recreated (cleanPodPolicy
    # Running may have removed a rank that was still running when rank 0 finished).
    now = {p["metadata"]["uid"] for p in pods(kube, namespace, name)}
    assert len(uids) == 2 and now and now <= uids


def test_deletion_cascades_to_every_child(kube, namespace, operator):
    name = apply(kube, namespace, job("cascade", training={"maxEpochs": 50}))
    wait_for(lambda: len(pods(kube, namespace, name)) == 2, 120, what="pods created")
    kinds = "pods,services,persistentvolumeclaims,serviceaccounts,roles,rolebindings"
    owned = lambda: [i for i in kube.get(kinds, "-n", namespace)["items"]  # noqa: E731
                     if any(r.get("name") == name for r in i["metadata"].get("ownerReferences") or [])]
    # The Service and RoleBinding come with the pods (in the round trip that creates them).
    wait_for(lambda: {i["kind"] for i in owned()} >= {"Pod", "Service", "PersistentVolumeClaim", "ServiceAccount",
                                                      "Role", "RoleBinding"}, 60, what="every child created")
    kube.kubectl("delete", "ltj", name, "-n", namespace, "--wait=true", timeout=120)
    wait_for(lambda: not owned(), 180, what="every child garbage-collected",
             diagnose=lambda: "\n".join(f"left: {i['kind']} {i['metadata']['name']} deleting since "
                                        f"{i['metadata'].get('deletionTimestamp')} finalizers "
                                        f"{i['metadata'].get('finalizers')}" for i in owned()))
