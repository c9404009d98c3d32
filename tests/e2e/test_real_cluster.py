"""End to end on a real cluster, as users run ltj: the operator installed by Helm runs as a pod, the
sample trains in containers of the project's images, ranks find each other through cluster DNS,
the restricted Pod Security profile is enforced by the kubelet, and a rank killed or sent SIGTERM,
or the operator's own pod deleted, costs no work.

The ``real_cluster`` fixture (conftest.py) is the local real node, or kind in the GitHub workflow.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from kubetest import SAMPLE, apply, condition, dump, job, pods, sample, wait_for, wait_status, wait_terminal
from realcluster import (OPERATOR_NAMESPACE, RELEASE, RealCluster, assert_events_complete, first_checkpoint, job_events,
                         long_job, output_dir)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def exec_in(cluster: RealCluster, ns: str, pod: str, container: str, *cmd: str) -> str:
    return cluster.kubectl("exec", "-n", ns, pod, "-c", container, "--", *cmd, timeout=60).stdout


def proc_status(cluster: RealCluster, ns: str, pod: str, container: str) -> dict[str, str]:
    text = exec_in(cluster, ns, pod, container, "cat", "/proc/1/status")
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines())}


class PodWatch:
    """Polls the job's trainer pods in the background: every uid seen, and the most pods of the job
    alive (not being deleted) at once."""

    def __init__(self, cluster: RealCluster, ns: str, name: str) -> None:
        self.cluster, self.ns, self.name = cluster, ns, name
        self.uids: set[str] = set()
        self.most_alive = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            items = pods(self.cluster.kube, self.ns, self.name)
            self.uids |= {p["metadata"]["uid"] for p in items}
            self.most_alive = max(self.most_alive, sum(1 for p in items if not p["metadata"].get("deletionTimestamp")))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_operator_runs_as_a_pod_with_the_charts_service_account(real_cluster: RealCluster):
    [pod] = [p for p in real_cluster.operator_pods() if not p["metadata"].get("deletionTimestamp")]
    deploy = real_cluster.kube.get("deployment", "-n", OPERATOR_NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}")
    [d] = deploy["items"]
    account = d["spec"]["template"]["spec"]["serviceAccountName"]
    sa = real_cluster.kube.get("serviceaccount", account, "-n", OPERATOR_NAMESPACE)
    assert sa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert pod["spec"]["serviceAccountName"] == account
    assert pod["status"]["phase"] == "Running"
    assert condition(pod["status"], "Ready")["status"] == "True"
    # In-cluster configuration: no kubeconfig, the API server through the `kubernetes` Service.
    env = {e["name"] for c in pod["spec"]["containers"] for e in c.get("env") or []}
    assert "KUBECONFIG" not in env
    uid = proc_status(real_cluster, OPERATOR_NAMESPACE, pod["metadata"]["name"], pod["spec"]["containers"][0]["name"])
    assert uid["Uid"].split()[0] != "0"


def test_sample_trains_over_two_real_pods_to_succeeded(real_cluster: RealCluster, ns: str):
    name = sample()["metadata"]["name"]
    real_cluster.kubectl("apply", "-n", ns, "-f", str(SAMPLE))  # as users apply it, unchanged
    wait_status(real_cluster.kube, ns, name, lambda st: st.get("phase") == "Running", 300, "Running")
    rank0, rank1 = f"{name}-node-0", f"{name}-node-1"

    # Cluster DNS: the rendezvous name every rank is given resolves to rank 0's pod (once CoreDNS has
    # seen the Service's endpoints, which may follow the pods' Running by a moment).
    ip0 = real_cluster.kube.get("pod", rank0, "-n", ns)["status"]["podIP"]
    lookup = f"import socket; print(socket.gethostbyname('{rank0}.{name}'))"
    resolved = wait_for(lambda: real_cluster.kubectl("exec", "-n", ns, rank1, "-c", "trainer", "--", "python", "-c",
                                                     lookup, check=False).stdout.strip(), 60, what="the DNS name")
    assert resolved == ip0

    # The restricted profile, enforced: the namespace refuses a privileged pod, and the trainer and
    # the relay run as non-root with no_new_privs, seccomp and no effective capabilities.
    refused = real_cluster.kubectl("run", "privileged", "-n", ns, "--image=busybox", "--restart=Never",
                                   "--overrides", json.dumps({"spec": {"containers": [{
                                       "name": "privileged", "image": "busybox",
                                       "securityContext": {"privileged": True}}]}}), check=False)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr
    for pod, container in ((rank0, "trainer"), (rank1, "trainer"), (rank0, "relay")):
        st = proc_status(real_cluster, ns, pod, container)
        assert st["Uid"].split()[0] != "0", (pod, container, st["Uid"])
        assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", (pod, container, st)
        assert int(st["CapEff"], 16) == 0, (pod, container, st["CapEff"])

    # The relay is a native sidecar: an init container that keeps running, started before the trainer.
    p0 = real_cluster.kube.get("pod", rank0, "-n", ns)
    [relay] = [c for c in p0["spec"]["initContainers"] if c["name"] == "relay"]
    assert relay["restartPolicy"] == "Always"
    [relay_st] = [c for c in p0["status"]["initContainerStatuses"] if c["name"] == "relay"]
    [trainer_st] = [c for c in p0["status"]["containerStatuses"] if c["name"] == "trainer"]
    assert relay_st["state"]["running"]["startedAt"] <= trainer_st["state"]["running"]["startedAt"]

    # The relay's token may patch its own job's status and nothing else.
    other = apply(real_cluster.kube, ns, job("other", runPolicy={"suspend": True}))
    token = exec_in(real_cluster, ns, rank0, "relay", "cat", SA_TOKEN)
    assert patch_status_as(real_cluster, token, ns, name) == 200
    assert patch_status_as(real_cluster, token, ns, other) == 403

    # Every rank's logs, through the API server and the kubelet.
    for pod in (rank0, rank1):
        logs = wait_for(lambda p=pod: real_cluster.kubectl("logs", "-n", ns, p, "-c", "trainer").stdout.strip(),
                        120, what=f"{pod} logs")
        assert "torchrun" in logs or "rank" in logs.lower(), logs[-2000:]

    st = wait_terminal(real_cluster.kube, ns, name, timeout=900)
    assert st["phase"] == "Succeeded", dump(real_cluster.kube, ns)
    tr = st["training"]
    assert tr["finished"] is True and tr["testMetrics"]
    assert tr["bestCheckpoint"].startswith("/output/") and tr["bestCheckpoint"].endswith(".ckpt")
    assert isinstance(tr["bestScore"], float) and 1 <= len(tr["topK"]) <= 2
    assert tr["topK"][0]["path"] == tr["bestCheckpoint"] and tr["lastCheckpoint"].endswith("last.ckpt")
    assert condition(st, "Succeeded")["status"] == "True"
    assert condition(st, "CheckpointSaved")["status"] == "True"
    evs = job_events(real_cluster, ns, name)
    [started] = [e for e in evs if e["type"] == "started"]
    assert started["world_size"] == 2 and started["num_nodes"] == 2
    # The checkpoints the status names are on the claim's volume.
    names = {p.name for p in output_dir(real_cluster, ns, name).rglob("*.ckpt")}
    assert Path(tr["bestCheckpoint"]).name in names and "last.ckpt" in names, names


def patch_status_as(cluster: RealCluster, token: str, ns: str, name: str) -> int:
    """HTTP status of an empty merge patch of a job's status, authenticated by ``token`` alone."""
    kc = yaml.safe_load(Path(cluster.kube.kubeconfig).read_text())
    server = kc["clusters"][0]["cluster"]["server"]
    ctx = ssl.create_default_context(cafile=kc["clusters"][0]["cluster"]["certificate-authority"])
    req = urllib.request.Request(
        f"{server}/apis/ltj.dev/v1alpha1/namespaces/{ns}/lightningtrainingjobs/{name}/status", data=b"{}",
        method="PATCH", headers={"Authorization": f"Bearer {token}",
                                 "Content-Type": "application/merge-patch+json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_trainer_container_killed_mid_epoch_restarts_the_gang_from_the_last_checkpoint(real_cluster, ns):
    name = apply(real_cluster.kube, ns, long_job("kill"))
    watch = PodWatch(real_cluster, ns, name)
    try:
        first_checkpoint(real_cluster, ns, name)
        real_cluster.signal_container(ns, f"{name}-node-1", "trainer", "SIGKILL")
        st = wait_terminal(real_cluster.kube, ns, name, timeout=900)
    finally:
        watch.stop()
    assert st["phase"] == "Succeeded", dump(real_cluster.kube, ns)
    assert st["restarts"] == 1 and st["failure"]["pod"] == f"{name}-node-1", st
    assert st["failure"]["exitCode"] == 137, st["failure"]
    # One gang at a time, each pod made once per attempt.
    assert watch.most_alive == 2 and len(watch.uids) == 4, (watch.most_alive, watch.uids)
    assert_events_complete(job_events(real_cluster, ns, name), attempts=2)
    assert st["training"]["finished"] is True


def test_rank_sent_sigterm_is_not_recorded_succeeded_and_resumes(real_cluster, ns):
    name = apply(real_cluster.kube, ns, long_job("term"))
    first_checkpoint(real_cluster, ns, name)
    # What the kubelet sends a container on eviction or preemption.
    real_cluster.signal_container(ns, f"{name}-node-1", "trainer", "SIGTERM")
    st = wait_status(real_cluster.kube, ns, name, lambda s: s.get("restarts", 0) >= 1 or s.get("phase") in
                     ("Succeeded", "Failed"), 300, "the gang restarted")
    assert st["phase"] not in ("Succeeded", "Failed"), st
    st = wait_terminal(real_cluster.kube, ns, name, timeout=900)
    assert st["phase"] == "Succeeded" and st["restarts"] == 1, dump(real_cluster.kube, ns)
    evs = job_events(real_cluster, ns, name)
    assert_events_complete(evs, attempts=2)
    # The SIGTERM checkpoint is what the second attempt restored.
    saved = [e for e in evs if e["type"] == "checkpoint" and e.get("kind") == "sigterm"]
    assert saved, [e["type"] for e in evs]
    assert [e for e in evs if e["type"] == "started"][1]["resumed_from"] == saved[-1]["path"]


def test_operator_pod_deleted_mid_run_comes_back_and_the_job_completes(real_cluster, ns):
    name = apply(real_cluster.kube, ns, long_job("opdel"))
    first_checkpoint(real_cluster, ns, name)
    gang = {p["metadata"]["uid"] for p in pods(real_cluster.kube, ns, name)}
    [old] = real_cluster.operator_pods()
    real_cluster.kubectl("delete", "pod", "-n", OPERATOR_NAMESPACE, old["metadata"]["name"], "--wait=false")

    def replacement_ready() -> bool:
        fresh = [p for p in real_cluster.operator_pods() if p["metadata"]["uid"] != old["metadata"]["uid"]]
        return any((condition(p["status"], "Ready") or {}).get("status") == "True" for p in fresh)

    wait_for(replacement_ready, 300, what="a new operator pod Ready")
    st = wait_terminal(real_cluster.kube, ns, name, timeout=900)
    assert st["phase"] == "Succeeded" and st.get("restarts", 0) == 0, dump(real_cluster.kube, ns)
    # The gang was adopted, not recreated, and the status holds the whole run.
    assert {p["metadata"]["uid"] for p in pods(real_cluster.kube, ns, name)} <= gang
    evs = job_events(real_cluster, ns, name)
    assert_events_complete(evs, attempts=1)
    last_val = [e for e in evs if e["type"] == "validation"][-1]
    assert st["training"]["epoch"] == last_val["epoch"] and st["training"]["finished"] is True
