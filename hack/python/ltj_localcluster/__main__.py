"""`python -m ltj_localcluster up|down|info|prepare --run-dir DIR`: the local cluster from a shell.

`prepare` builds (or finds cached) what a real node needs: its Debian packages, binaries and the
project's images; where the machine cannot run one it says why and succeeds."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict

from . import imagebuild, realnode
from .cluster import LocalCluster, NodePool, down, ensure_binaries
from .controlplane import ClusterInfo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ltj_localcluster")
    p.add_argument("command", choices=["up", "down", "info", "prepare"])
    p.add_argument("--run-dir", default=".run/cluster")
    p.add_argument("--nodes", type=int, default=NodePool.nodes)
    p.add_argument("--cpu", default=NodePool.cpu)
    p.add_argument("--memory", default=NodePool.memory)
    p.add_argument("--gpus", type=int, default=NodePool.gpus)
    p.add_argument("--real-node", action="store_true",
                   help="one real node (kubelet, containerd, CoreDNS, kube-proxy) running the project's images")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if a.command == "prepare":
        reason = realnode.unavailable()
        if reason:
            print(f"real node: skipped here: {reason}")
            return 0
        realnode.ensure_packages()
        ensure_binaries(node=True)
        imagebuild.ensure_images()
    elif a.command == "up":
        info = LocalCluster(a.run_dir, NodePool(a.nodes, a.cpu, a.memory, a.gpus), real_node=a.real_node).up()
        print(f"export KUBECONFIG={info.kubeconfig}")
    elif a.command == "down":
        down(a.run_dir)
    else:
        for k, v in asdict(ClusterInfo.load(a.run_dir)).items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
