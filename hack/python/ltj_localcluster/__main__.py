"""`python -m ltj_localcluster up|down|info|prepare --run-dir DIR`: the local cluster from a shell.

`up` starts one real node running the project's images (built on first use), or with ``--kwok``
simulated nodes on which nothing runs; with ``--kueue`` Kueue's controller too. `prepare` builds (or
finds cached) what a real node needs: its Debian packages, binaries and the project's images; where the
machine cannot run one it says why and succeeds."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from . import install, realnode
from .cluster import LocalCluster, NodePool, down, pinned_versions, prepare_real_node
from .controlplane import ClusterInfo
from .kueue import LTJ_FRAMEWORK


def next_steps(cluster: LocalCluster, run_dir: str) -> str:
    """What to do with a cluster that is up, as `kind create cluster` says it."""
    info = cluster.info
    assert info is not None
    bin_dir = Path(info.bin_dir)
    venv = Path(sys.executable)
    if cluster.real_node:
        flags = install.chart_flags(cluster.images["operator"].ref, cluster.images["trainer"].ref)
        operator = (f"  helm install {install.RELEASE} {install.CHART} {shlex.join(flags)}\n"
                    "  (the chart installs the CRD; the operator runs as a pod of the real node)")
    else:
        operator = (f"  kubectl apply --server-side -f {install.CRD}\n"
                    f"  {venv} -m kopf run --standalone --all-namespaces -m ltj_operator.handlers\n"
                    "  (kwok nodes: pods are scheduled and shown Running, but no trainer runs)")
    nodes = "one real node" if cluster.real_node else f"{cluster.pool.nodes} kwok nodes"
    kueue = ""
    if cluster.kueue is not None:
        kueue = f"""
Kueue v{pinned_versions()['KUEUE_VERSION']} runs beside the control plane ({LTJ_FRAMEWORK} is an external framework):
  readiness {cluster.kueue.ready_url}, log {cluster.kueue.log_file}, config {cluster.kueue.dir / 'config.yaml'}
  kubectl get clusterqueues,localqueues -A; kubectl get workloads -A
  (jobs labelled kueue.x-k8s.io/queue-name are not admitted through Kueue yet: see README, Running with Kueue)
"""
    return f"""
The local cluster is up ({nodes}); API server {info.server}.

  export KUBECONFIG={info.kubeconfig}
  export PATH={bin_dir}:$PATH   # kubectl and helm of the server's version (v{_kube_version()})
{kueue}
Install ltj:
{operator}

Run the sample and watch it:
  kubectl apply -f {install.REPO / 'crds' / 'samples' / 'cpu-digits-2node.yaml'}
  kubectl get ltj -w

Stop the cluster (it leaves nothing behind):
  {venv} -m ltj_localcluster down --run-dir {shlex.quote(run_dir)}
"""


def _kube_version() -> str:
    return pinned_versions()["KUBE_VERSION"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ltj_localcluster",
                                description="The local Kubernetes cluster for ltj: a control plane on this "
                                            "machine and its nodes (root).")
    p.add_argument("command", choices=["up", "down", "info", "prepare"],
                   help="up: start a cluster; down: stop it and remove what it made; info: print its "
                        "cluster.json; prepare: build what a real node needs ahead of time")
    p.add_argument("--run-dir", default=".run/cluster",
                   help="where the cluster keeps its certificates, configs, logs and state (default: %(default)s)")
    p.add_argument("--kwok", action="store_true",
                   help="simulated nodes (kwok) instead of the real node: for scheduling, nothing runs")
    p.add_argument("--kueue", action="store_true",
                   help="also run Kueue's controller (built on first use) with LightningTrainingJob as an "
                        "external framework; its CRDs and webhooks are installed")
    p.add_argument("--nodes", type=int, default=NodePool.nodes,
                   help="--kwok: how many nodes (default: %(default)s; the real node is always one)")
    p.add_argument("--cpu", default=NodePool.cpu, help="--kwok: each node's cpu capacity (default: %(default)s)")
    p.add_argument("--memory", default=NodePool.memory,
                   help="--kwok: each node's memory capacity (default: %(default)s)")
    p.add_argument("--gpus", type=int, default=NodePool.gpus,
                   help="nvidia.com/gpu capacity each node advertises, for scheduling only (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if a.command == "prepare":
        reason = realnode.unavailable()
        if reason:
            print(f"real node: skipped here: {reason}")
            return 0
        prepare_real_node()
    elif a.command == "up":
        cluster = LocalCluster(a.run_dir, NodePool(a.nodes, a.cpu, a.memory, a.gpus), real_node=not a.kwok,
                               kueue=a.kueue)
        cluster.up()
        print(next_steps(cluster, a.run_dir))
    elif a.command == "down":
        down(a.run_dir)
    else:
        for k, v in asdict(ClusterInfo.load(a.run_dir)).items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
