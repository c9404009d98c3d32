"""Real clusters for the e2e tier: the same tests run on the local real node (kubelet + containerd on
this machine) and on kind (Docker; the GitHub workflow). Each is started once per session with the
project's images loaded and the chart installed as users install it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ltj_localcluster import imagebuild, install

from kubetest import REPO, Kube, job, job_output_dir, wait_for, wait_status

RELEASE = install.RELEASE
OPERATOR_NAMESPACE = install.NAMESPACE
KIND_SCRIPT = REPO / "hack" / "kind-e2e.sh"
CONTAINERD_PREFIX = "containerd://"


@dataclass
class RealCluster:
    """A running cluster with real kubelets, as the e2e tests use it."""

    name: str  # "realnode" or "kind"
    kube: Kube
    helm_bin: Path
    operator_image: str
    trainer_image: str
    # signal(node name, containerd container id, signal name): the node's own runtime delivers it.
    signal: Callable[[str, str, str], None]
    # host_path(path of a hostPath volume on the node) -> where this machine sees it.
    host_path: Callable[[str], Path]
    teardown: list[Callable[[], None]] = field(default_factory=list)
    # For a cluster on this machine's host: its state (realnode.host_state) and that state before up.
    host_state: Callable[[], dict[str, Any]] | None = None
    baseline: dict[str, Any] | None = None

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        return self.kube.kubectl(*args, **kw)

    def helm(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        # Only for what install.helm_install does not do (uninstall).
        proc = subprocess.run([str(self.helm_bin), f"--kubeconfig={self.kube.kubeconfig}", *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def install_operator(self) -> None:
        """The chart as a user installs it (hack/python/ltj_localcluster/install.py)."""
        out = install.helm_install(self.helm_bin, self.kube.kubeconfig, self.operator_image, self.trainer_image,
                                   "--set", "logLevel=DEBUG")
        assert out.returncode == 0, f"helm install failed:\n{out.stdout}\n{out.stderr}"

    def operator_pods(self) -> list[dict[str, Any]]:
        return self.kube.get("pods", "-n", OPERATOR_NAMESPACE, "-l",
                             f"app.kubernetes.io/instance={RELEASE}")["items"]

    def signal_container(self, namespace: str, pod: str, container: str, sig: str) -> None:
        """Sends ``sig`` (e.g. "SIGKILL") to the main process of a running container, as the node's
        runtime does on an eviction or an OOM kill."""
        def running_id() -> tuple[str, str] | None:
            p = self.kube.get("pod", pod, "-n", namespace)
            for cs in p["status"].get("containerStatuses") or []:
                if cs["name"] == container and "running" in (cs.get("state") or {}):
                    return p["spec"]["nodeName"], cs["containerID"].removeprefix(CONTAINERD_PREFIX)
            return None
        node, cid = wait_for(running_id, 120, what=f"{pod}/{container} running")
        self.signal(node, cid, sig)


def _ctr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ctr", "-a", imagebuild.CONTAINERD_SOCK, "-n", "k8s.io", *args],
                          capture_output=True, text=True, check=True, timeout=60)


def start_real_node(run_dir: Path) -> RealCluster | str:
    """The local cluster with one real node, or the reason it cannot run here."""
    from ltj_localcluster import realnode
    from ltj_localcluster.cluster import LocalCluster, NodePool

    reason = realnode.unavailable()
    if reason:
        return reason
    baseline = realnode.host_state()
    # With Kueue's controller beside it, for tests/e2e/test_kueue.py: it queues only jobs that name a queue
    # and no pod or Job create passes through its webhooks, so the other tests run as without it.
    cluster = LocalCluster(run_dir, NodePool(nodes=1, gpus=4), real_node=True, kueue=True)
    info = cluster.up()
    kube = Kube(info.kubeconfig, Path(info.bin_dir), run_dir)
    return RealCluster(
        name="realnode", kube=kube, helm_bin=Path(info.bin_dir) / "helm",
        operator_image=cluster.images["operator"].ref, trainer_image=cluster.images["trainer"].ref,
        signal=lambda node, cid, sig: _ctr("tasks", "kill", "--signal", sig, cid),
        host_path=Path, teardown=[cluster.down], host_state=realnode.host_state, baseline=baseline)


def docker_missing() -> str | None:
    """Why kind cannot run here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "no Docker engine (docker CLI not installed)"
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "no Docker engine (docker info timed out)"
    if proc.returncode != 0:
        detail = next((ln.strip() for ln in proc.stderr.splitlines() if ln.strip()), "docker info failed")
        return f"no Docker engine ({detail})"
    return None


def start_kind(artifacts: Path) -> RealCluster | str:
    """A kind cluster made by hack/kind-e2e.sh --setup-only (images built with Docker and loaded into
    the workers, a shared ReadWriteMany storage class), or the reason it cannot run here."""
    reason = docker_missing()
    if reason:
        if os.environ.get("LTJ_REQUIRE_KIND") == "1":
            raise RuntimeError(f"LTJ_REQUIRE_KIND=1 but {reason}")
        return reason
    artifacts.mkdir(parents=True, exist_ok=True)
    with open(artifacts / "kind-setup.log", "w") as out:
        proc = subprocess.run(["bash", str(KIND_SCRIPT), "--setup-only", "--artifacts", str(artifacts)],
                              stdout=out, stderr=subprocess.STDOUT, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/kind-e2e.sh --setup-only failed ({proc.returncode}):\n"
                           + (artifacts / "kind-setup.log").read_text(errors="replace")[-6000:])
    setup = json.loads((artifacts / "cluster.json").read_text())
    kube = Kube(setup["kubeconfig"], Path(setup["bin_dir"]), artifacts)
    volume = Path(setup["volume"])

    def host_path(path: str) -> Path:
        # Every kind node mounts the host's <artifacts>/volume at /ltj-shared.
        return volume / Path(path).relative_to(setup["node_volume"])

    return RealCluster(
        name="kind", kube=kube, helm_bin=Path(setup["helm"]), operator_image=setup["operator_image"],
        trainer_image=setup["trainer_image"],
        signal=lambda node, cid, sig: subprocess.run(
            ["docker", "exec", node, "ctr", "-n", "k8s.io", "tasks", "kill", "--signal", sig, cid],
            check=True, capture_output=True, timeout=60),
        host_path=host_path,
        teardown=[lambda: subprocess.run([setup["kind"], "delete", "cluster", "--name", setup["name"]],
                                         capture_output=True, timeout=600)])


def output_dir(cluster: RealCluster, ns: str, name: str) -> Path:
    """Where this machine sees the job's output directory on its claim's volume."""
    return cluster.host_path(str(job_output_dir(cluster.kube, ns, name)))


def job_events(cluster: RealCluster, ns: str, name: str) -> list[dict[str, Any]]:
    """The trainer's events file, read from the volume as the relay reads it."""
    from ltj_api import events as ev

    return ev.as_dicts(ev.read_all(output_dir(cluster, ns, name) / ev.FILENAME))


def first_checkpoint(cluster: RealCluster, ns: str, name: str) -> dict[str, Any]:
    return wait_status(cluster.kube, ns, name, lambda st: (st.get("training") or {}).get("lastCheckpoint"),
                       600, "a first checkpoint")


def assert_events_complete(evs: list[dict[str, Any]], attempts: int) -> None:
    """Nothing lost across restarts: one gapless seq sequence, one `started` per attempt, every later
    attempt resumed from a checkpoint, epochs never restarting at 0."""
    seqs = [e["seq"] for e in evs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    starts = [e for e in evs if e["type"] == "started"]
    assert len(starts) == attempts, starts
    assert all(s.get("resumed_from") for s in starts[1:]), starts
    for later in starts[1:]:
        i = evs.index(later)
        before = [e["epoch"] for e in evs[:i] if e["type"] == "validation"]
        after = next(e for e in evs[i:] if e["type"] == "validation")
        assert before and after["epoch"] >= before[-1], (before, after)


def long_job(name: str) -> dict[str, Any]:
    """The sample with enough epochs to be hit mid-training and no early stop."""
    return job(name, training={"maxEpochs": 8, "earlyStopping": {"enabled": False}})
