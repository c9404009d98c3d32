"""Simulated nodes beside a running control plane: kwok (sigs.k8s.io/kwok) keeps the Node objects we
create Ready through their Leases and drives the pods bound to them through the Stages of
kwok-stages.yaml. Nothing runs: a pod is Running with a pod IP at once and keeps running, unless it
carries ``EXIT_CODE`` and/or ``RUN_SECONDS`` (then it ends RUN_SECONDS after it started, Succeeded
for exit code 0 and Failed otherwise). A deleted pod is gone at once.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .controlplane import ClusterInfo, record_pid, stop_pids, wait_ready

if TYPE_CHECKING:
    from .cluster import NodePool

log = logging.getLogger(__name__)

STAGES = Path(__file__).with_name("kwok-stages.yaml")
# Pod annotations read by kwok-stages.yaml's pod-complete stage.
EXIT_CODE = "ltj.dev/kwok-exit-code"
RUN_SECONDS = "ltj.dev/kwok-run-seconds"
NODE_ANNOTATION = "kwok.x-k8s.io/node"
NODE_LABEL = "type"  # kwok's docs label their fake nodes type=kwok
# Made-up addresses, apart from the service range and the real node's pods so they cannot be confused.
POD_CIDR = "10.245.0.0/16"
NODE_IP = "10.246.0.1"


def node_manifest(name: str, pool: NodePool) -> dict[str, Any]:
    """A fake node of ``pool``'s shape. The API server keeps a Node's status on create, so its
    resources are set here and kwok only adds conditions."""
    resources = {"cpu": pool.cpu, "memory": pool.memory, "pods": str(pool.pods)}
    if pool.gpus:
        resources["nvidia.com/gpu"] = str(pool.gpus)
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {NODE_ANNOTATION: "fake"},
                     "labels": {NODE_LABEL: "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64"}},
        "status": {"capacity": resources, "allocatable": resources},
    }


class KwokNodes:
    """``pool.nodes`` fake nodes named ``<prefix>-<i>`` and the kwok process that runs them."""

    def __init__(self, info: ClusterInfo, pool: NodePool, prefix: str = "kwok-node") -> None:
        self.info = info
        self.pool = pool
        self.names = [f"{prefix}-{i}" for i in range(pool.nodes)]
        self.run_dir = Path(info.run_dir)
        self.log_file = self.run_dir / "logs" / "kwok.log"
        self._proc: subprocess.Popen | None = None

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return subprocess.run([str(Path(self.info.bin_dir) / "kubectl"), f"--kubeconfig={self.info.kubeconfig}",
                               *args], input=input, capture_output=True, text=True, check=check).stdout

    def start(self, timeout: float = 60) -> None:
        t0 = time.monotonic()
        self.kubectl("apply", "--server-side", "--field-manager=ltj-localcluster", "-f", "-",
                     input=yaml.safe_dump_all(node_manifest(n, self.pool) for n in self.names))
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            self._proc = subprocess.Popen(
                [str(Path(self.info.bin_dir) / "kwok"), f"--kubeconfig={self.info.kubeconfig}",
                 f"--config={STAGES}", "--manage-all-nodes=false",
                 f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
                 # Leases, as a kubelet keeps them, tell the node controller the nodes are alive.
                 "--node-lease-duration-seconds=40", f"--cidr={POD_CIDR}", f"--node-ip={NODE_IP}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        record_pid(self.run_dir, "kwok", self._proc.pid)
        wait_ready(self._proc, "kwok", self._ready, self.log_file, timeout)
        log.info("%d kwok nodes Ready in %.1fs", len(self.names), time.monotonic() - t0)

    def _ready(self) -> bool:
        """Every node Ready and without taints (the node controller lifts not-ready after Ready)."""
        nodes = json.loads(self.kubectl("get", "nodes", "-l", f"{NODE_LABEL}=kwok", "-o", "json"))["items"]
        ready = {n["metadata"]["name"] for n in nodes if not n["spec"].get("taints") and any(
            c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions") or [])}
        return ready >= set(self.names)

    def stop(self) -> None:
        """Stops kwok and drops its node Leases: each kwok process has a new identity, so one started
        again would otherwise wait for them to expire (40 s) before it drives these nodes' pods. The
        Node objects stay, and turn NotReady after the node controller's grace period."""
        if self._proc is None:
            return
        stop_pids(self.run_dir, {"kwok": self._proc.pid})
        self._proc = None
        self.kubectl("delete", "lease", "-n", "kube-node-lease", "--ignore-not-found", *self.names, check=False)
