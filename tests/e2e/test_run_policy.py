"""Run policy end to end: suspend/resume, deadline, TTL, cleanPodPolicy."""

from __future__ import annotations

import pytest

from kubetest import (apply, condition, dump, events, get_job, job, pods, status, wait_for, wait_status,
                      wait_terminal)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _patch(kube, namespace, name, patch: str) -> None:
    kube.kubectl("patch", "ltj", name, "-n", namespace, "--type=merge", "-p", patch)


def test_suspend_keeps_status_and_checkpoints_and_resume_continues(kube, namespace, operator):
    name = apply(kube, namespace, job("suspend", nodes=1, training={"maxEpochs": 30, "earlyStopping": {"enabled": False}}))
    wait_status(kube, namespace, name, lambda st: (st.get("training") or {}).get("lastCheckpoint"), 420,
                "a first checkpoint")
    _patch(kube, namespace, name, '{"spec":{"runPolicy":{"suspend":true}}}')
    st = wait_status(kube, namespace, name, lambda st: st.get("phase") == "Suspended", 120, "Suspended")
    wait_for(lambda: not pods(kube, namespace, name), 120, what="pods deleted on suspend")
    assert condition(st, "Suspended")["status"] == "True"
    kept = status(kube, namespace, name)["training"]
    assert kept["lastCheckpoint"]
    assert not kept.get("finished"), "the job finished before the suspension took effect: make it longer"

    _patch(kube, namespace, name, '{"spec":{"runPolicy":{"suspend":false}}}')
    st = wait_terminal(kube, namespace, name)
    assert st["phase"] == "Succeeded", dump(kube, namespace)
    assert condition(st, "Suspended")["status"] == "False"
    starts = [e for e in events(kube, namespace, name) if e["type"] == "started"]
    assert len(starts) == 2 and starts[1]["resumed_from"]


def test_active_deadline_fails_job_and_cleans_running_pods(kube, namespace, operator):
    name = apply(kube, namespace, job("deadline", nodes=1, training={"maxEpochs": 1000000, "earlyStopping": {"enabled": False}},
                                      runPolicy={"activeDeadlineSeconds": 20, "cleanPodPolicy": "Running"}))
    st = wait_terminal(kube, namespace, name, timeout=180)
    assert st["phase"] == "Failed", dump(kube, namespace)
    assert condition(st, "Failed")["reason"] == "DeadlineExceeded"
    wait_for(lambda: not pods(kube, namespace, name), 120, what="running pods cleaned after the deadline")


def test_ttl_deletes_finished_job(kube, namespace, operator):
    name = apply(kube, namespace, job("ttl", nodes=1, training={"maxEpochs": 1},
                                      runPolicy={"ttlSecondsAfterFinished": 5}))
    wait_for(lambda: kube.kubectl("get", "ltj", name, "-n", namespace, check=False).returncode != 0, 420,
             what="job deleted by its TTL")


@pytest.mark.parametrize("policy,kept", [("None", 1), ("All", 0)])
def test_clean_pod_policy_on_success(kube, namespace, operator, policy, kept):
    name = apply(kube, namespace, job(f"clean-{policy.lower()}", nodes=1, training={"maxEpochs": 1},
                                      runPolicy={"cleanPodPolicy": policy}))
    st = wait_terminal(kube, namespace, name, timeout=420)
    assert st["phase"] == "Succeeded", dump(kube, namespace)
    wait_for(lambda: len(pods(kube, namespace, name)) == kept, 60, what=f"{kept} pod(s) left with cleanPodPolicy={policy}")
    assert get_job(kube, namespace, name)["status"]["phase"] == "Succeeded"
