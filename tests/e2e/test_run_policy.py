"""Run policy end to end on a real cluster: suspend/resume, deadline, TTL, cleanPodPolicy."""

from __future__ import annotations

import pytest

from kubetest import apply, condition, dump, get_job, job, pods, status, wait_for, wait_status, wait_terminal
from realcluster import RealCluster, first_checkpoint, job_events

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _patch(cluster: RealCluster, ns: str, name: str, patch: str) -> None:
    cluster.kubectl("patch", "ltj", name, "-n", ns, "--type=merge", "-p", patch)


def test_suspend_keeps_status_and_checkpoints_and_resume_continues(real_cluster: RealCluster, ns: str):
    kube = real_cluster.kube
    name = apply(kube, ns, job("suspend", nodes=1, training={"maxEpochs": 30, "earlyStopping": {"enabled": False}}))
    first_checkpoint(real_cluster, ns, name)
    _patch(real_cluster, ns, name, '{"spec":{"runPolicy":{"suspend":true}}}')
    st = wait_status(kube, ns, name, lambda st: st.get("phase") == "Suspended", 120, "Suspended")
    wait_for(lambda: not pods(kube, ns, name), 120, what="pods deleted on suspend")
    assert condition(st, "Suspended")["status"] == "True"
    kept = status(kube, ns, name)["training"]
    assert kept["lastCheckpoint"]
    assert not kept.get("finished"), "the job finished before the suspension took effect: make it longer"

    _patch(real_cluster, ns, name, '{"spec":{"runPolicy":{"suspend":false}}}')
    st = wait_terminal(kube, ns, name)
    assert st["phase"] == "Succeeded", dump(kube, ns)
    assert condition(st, "Suspended")["status"] == "False"
    starts = [e for e in job_events(real_cluster, ns, name) if e["type"] == "started"]
    assert len(starts) == 2 and starts[1]["resumed_from"]


def test_active_deadline_fails_job_and_cleans_running_pods(real_cluster: RealCluster, ns: str):
    kube = real_cluster.kube
    name = apply(kube, ns, job("deadline", nodes=1, training={"maxEpochs": 1000000, "earlyStopping": {"enabled": False}},
                               runPolicy={"activeDeadlineSeconds": 20, "cleanPodPolicy": "Running"}))
    st = wait_terminal(kube, ns, name, timeout=180)
    assert st["phase"] == "Failed", dump(kube, ns)
    assert condition(st, "Failed")["reason"] == "DeadlineExceeded"
    wait_for(lambda: not pods(kube, ns, name), 120, what="running pods cleaned after the deadline")


def test_ttl_deletes_the_finished_job_and_clean_pod_policy_keeps_what_it_says(real_cluster: RealCluster, ns: str):
    kube = real_cluster.kube
    one_epoch = {"nodes": 1, "training": {"maxEpochs": 1}}
    ttl = apply(kube, ns, job("ttl", **one_epoch, runPolicy={"ttlSecondsAfterFinished": 5}))
    kept = {policy: apply(kube, ns, job(f"clean-{policy.lower()}", **one_epoch, runPolicy={"cleanPodPolicy": policy}))
            for policy in ("None", "All")}
    for policy, name in kept.items():
        st = wait_terminal(kube, ns, name, timeout=420)
        assert st["phase"] == "Succeeded", dump(kube, ns)
        left = 1 if policy == "None" else 0
        wait_for(lambda n=name, k=left: len(pods(kube, ns, n)) == k, 60,
                 what=f"{left} pod(s) left with cleanPodPolicy={policy}")
        assert get_job(kube, ns, name)["status"]["phase"] == "Succeeded"
    wait_for(lambda: "(NotFound)" in kube.kubectl("get", "ltj", ttl, "-n", ns, check=False).stderr, 420,
             what="job deleted by its TTL")
