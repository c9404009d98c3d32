"""The whole local cluster: binaries, control plane and its node (the agent's simulated nodes, or one
real node running containers), up and down together."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import imagebuild, realnode
from .controlplane import ClusterInfo, ControlPlane, delete_bridge, record_pid, stop_pids
from .network import remove_pod_namespaces

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO / "hack" / "build-binaries.sh"


def prepare_real_node() -> tuple[Path, dict[str, imagebuild.Image]]:
    """What a real node needs, built or found cached: its Debian packages, the binaries, the images."""
    realnode.ensure_packages()
    return ensure_binaries(node=True), imagebuild.ensure_images()


def ensure_binaries(node: bool = False, kwok: bool = False) -> Path:
    """Builds (or finds cached) control plane binaries, the real node's with ``node`` and kwok with
    ``kwok``; progress goes to stderr."""
    flags = [*(["--node"] if node else []), *(["--kwok"] if kwok else [])]
    out = subprocess.run(["bash", str(BUILD_SCRIPT), *flags], stdout=subprocess.PIPE, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class NodePool:
    nodes: int = 2
    cpu: str = "8"
    memory: str = "16Gi"
    gpus: int = 4


class LocalCluster:
    """``real_node``: one real node (kubelet + containerd) runs the pods in containers of the project's
    images, built on first use; otherwise the node agent runs ``pool``'s nodes."""

    def __init__(self, run_dir: str | os.PathLike[str], pool: NodePool = NodePool(), real_node: bool = False):
        self.run_dir = Path(run_dir).resolve()
        self.pool = pool
        self.real_node = real_node
        self.info: ClusterInfo | None = None
        self.images: dict[str, imagebuild.Image] = {}
        self._cp: ControlPlane | None = None
        self._agent: subprocess.Popen | None = None

    @property
    def agent_state(self) -> Path:
        return self.run_dir / "agent"

    def up(self, timeout: float = 240) -> ClusterInfo:
        t0 = time.monotonic()
        if self.real_node:
            bin_dir, self.images = prepare_real_node()
        else:
            bin_dir = ensure_binaries()
        self._cp = ControlPlane(self.run_dir, bin_dir, routable=self.real_node)
        self.info = self._cp.start()
        try:
            if self.real_node:
                realnode.RealNode(self.info, bin_dir, self.pool.gpus).start(self.images)
            else:
                self._start_agent(timeout)
        except BaseException:
            self.down()
            raise
        log.info("local cluster up in %.1fs (kubeconfig %s)", time.monotonic() - t0, self.info.kubeconfig)
        return self.info

    def _start_agent(self, timeout: float) -> None:
        self.agent_state.mkdir(parents=True, exist_ok=True)
        ready = self.agent_state / "agent.ready"
        ready.unlink(missing_ok=True)
        logf = open(self.run_dir / "logs" / "node-agent.log", "ab")
        bindir = Path(sys.executable).parent
        env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
        self._agent = subprocess.Popen(
            [str(bindir / "ltj-node-agent"), "--cluster-info", str(self.run_dir / "cluster.json"),
             "--state-dir", str(self.agent_state), "--nodes", str(self.pool.nodes), "--cpu", self.pool.cpu,
             "--memory", self.pool.memory, "--gpus", str(self.pool.gpus)],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        logf.close()
        record_pid(self.run_dir, "ltj-node-agent", self._agent.pid)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self._agent.poll() is not None:
                tail = (self.run_dir / "logs" / "node-agent.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"node agent exited with {self._agent.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError("node agent not ready")
            time.sleep(0.2)

    def down(self) -> None:
        down(self.run_dir)
        self._agent = None
        self._cp = None


def down(run_dir: str | os.PathLike[str]) -> None:
    """Stops everything a cluster in ``run_dir`` started (also from another process)."""
    run_dir = Path(run_dir).resolve()
    try:
        info: ClusterInfo | None = ClusterInfo.load(run_dir)
    except ValueError:
        info = None
    node = realnode.holds_node(run_dir)  # the lock is taken first thing, so a half-started node holds it
    if node and info is not None:
        realnode.drain(run_dir, [str(Path(info.bin_dir) / "kubectl"), f"--kubeconfig={info.kubeconfig}"])
    stop_pids(run_dir, grace=20)
    if node:
        realnode.cleanup(run_dir, Path(info.bin_dir) if info else None)
    if info is None:
        return
    bridge = info.bridge
    # Pod network namespaces outlive an agent that was SIGKILLed: remove them with the bridge.
    remove_pod_namespaces(bridge)
    delete_bridge(bridge)
