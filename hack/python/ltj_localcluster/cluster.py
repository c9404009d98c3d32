"""The whole local cluster: binaries, the control plane and its nodes (one real node running containers,
or kwok's simulated nodes, on which nothing runs), and Kueue when asked for, up and down together."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import imagebuild, realnode
from .controlplane import ClusterInfo, ControlPlane, delete_bridge, stop_pids
from .kueue import Kueue
from .kwok import KwokNodes

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO / "hack" / "build-binaries.sh"


def pinned_versions() -> dict[str, str]:
    """hack/versions.env: the pinned version of each binary the cluster runs."""
    lines = (BUILD_SCRIPT.parent / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def prepare_real_node() -> tuple[Path, dict[str, imagebuild.Image]]:
    """What a real node needs, built or found cached: its Debian packages, the binaries, the images."""
    realnode.ensure_packages()
    return ensure_binaries(node=True), imagebuild.ensure_images()


def ensure_binaries(node: bool = False, kwok: bool = False, kueue: bool = False) -> Path:
    """Builds (or finds cached) control plane binaries, the real node's with ``node``, kwok with
    ``kwok`` and Kueue with ``kueue`` (see kueue_dir); progress goes to stderr."""
    flags = [*(["--node"] if node else []), *(["--kwok"] if kwok else []), *(["--kueue"] if kueue else [])]
    out = subprocess.run(["bash", str(BUILD_SCRIPT), *flags], stdout=subprocess.PIPE, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def kueue_dir(bin_dir: Path) -> Path:
    """Where ``ensure_binaries(kueue=True)`` put the pinned Kueue: its controller, CRDs and webhooks."""
    return bin_dir / f"kueue-v{pinned_versions()['KUEUE_VERSION']}"


@dataclass(frozen=True)
class NodePool:
    nodes: int = 2
    cpu: str = "8"
    memory: str = "16Gi"
    gpus: int = 4
    pods: int = 110  # max pods per node (kwok's nodes; the kubelet's default)


class LocalCluster:
    """``real_node``: one real node (kubelet + containerd) runs the pods in containers of the project's
    images, built on first use; otherwise kwok runs ``pool``'s simulated nodes, where pods are
    scheduled and shown Running but nothing runs. ``kueue``: Kueue's controller runs beside the control
    plane, with LightningTrainingJob as an external framework (built on first use)."""

    def __init__(self, run_dir: str | os.PathLike[str], pool: NodePool = NodePool(), real_node: bool = True,
                 kueue: bool = False):
        self.run_dir = Path(run_dir).resolve()
        self.pool = pool
        self.real_node = real_node
        self.with_kueue = kueue
        self.info: ClusterInfo | None = None
        self.images: dict[str, imagebuild.Image] = {}
        self.kwok: KwokNodes | None = None
        self.kueue: Kueue | None = None

    def up(self) -> ClusterInfo:
        t0 = time.monotonic()
        if self.real_node:
            bin_dir, self.images = prepare_real_node()
            if self.with_kueue:
                ensure_binaries(kueue=True)
        else:
            bin_dir = ensure_binaries(kwok=True, kueue=self.with_kueue)
        self.info = ControlPlane(self.run_dir, bin_dir, routable=self.real_node).start()
        try:
            if self.real_node:
                realnode.RealNode(self.info, bin_dir, self.pool.gpus).start(self.images)
            else:
                self.kwok = KwokNodes(self.info, self.pool)
                self.kwok.start()
            if self.with_kueue:
                self.kueue = Kueue(self.info, kueue_dir(bin_dir))
                self.kueue.start()
        except BaseException:
            self.down()
            raise
        log.info("local cluster up in %.1fs (kubeconfig %s)", time.monotonic() - t0, self.info.kubeconfig)
        return self.info

    def down(self) -> None:
        down(self.run_dir)


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
    if info is not None:
        delete_bridge(info.bridge)
