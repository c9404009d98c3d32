"""`make demo`: a real 2-node DDP LightningTrainingJob on the local cluster, as on any cluster.

Starts the local control plane with one real node (kubelet, containerd, CoreDNS, kube-proxy), builds
the project's images from its Dockerfiles (cached), installs the operator with the Helm chart (it
runs as a pod), applies crds/samples/cpu-digits-2node.yaml unchanged, streams the job's progress
from its status until it finishes, prints `kubectl get ltj` and where the checkpoints are, then
stops everything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack" / "python"))

from ltj_localcluster import install  # noqa: E402
from ltj_localcluster.cluster import LocalCluster, NodePool  # noqa: E402

SAMPLE = REPO / "crds" / "samples" / "cpu-digits-2node.yaml"


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default=str(REPO / ".run" / "demo"),
                    help="where the cluster keeps its state and logs (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for the job")
    ap.add_argument("--keep", action="store_true", help="leave the cluster running (stop: make demo-down)")
    a = ap.parse_args()

    say("starting the local cluster with a real node (the first run builds the Kubernetes binaries, the "
        "node's binaries and the images, with progress below: ~25 min on 2 cores; later runs ~2 min)")
    cluster = LocalCluster(a.run_dir, NodePool(nodes=1, gpus=4))
    info = cluster.up()
    kubectl = [str(Path(info.bin_dir) / "kubectl"), f"--kubeconfig={info.kubeconfig}"]
    try:
        say("helm install ltj charts/ltj-operator -n ltj-system (the operator runs as a pod)")
        out = install.helm_install(Path(info.bin_dir) / "helm", info.kubeconfig, cluster.images["operator"].ref,
                                   cluster.images["trainer"].ref)
        if out.returncode != 0:
            raise RuntimeError(f"helm install failed:\n{out.stdout}{out.stderr}")
        say(f"kubectl apply -f {SAMPLE.relative_to(REPO)}")
        subprocess.run([*kubectl, "apply", "-f", str(SAMPLE)], check=True)
        name = _sample_name()
        job = _stream(kubectl, name, a.timeout)
        print()
        subprocess.run([*kubectl, "get", "ltj", name, "-o", "wide"])
        _where_checkpoints(kubectl, job)
        phase = (job.get("status") or {}).get("phase")
        say(f"job {name} finished: {phase}")
        return 0 if phase == "Succeeded" else 1
    finally:
        if a.keep:
            say(f"cluster left running: export KUBECONFIG={info.kubeconfig}; "
                f"stop it with: .venv/bin/python -m ltj_localcluster down --run-dir {a.run_dir}")
        else:
            say("stopping the local cluster")
            cluster.down()


def _sample_name() -> str:
    import yaml

    return yaml.safe_load(SAMPLE.read_text())["metadata"]["name"]


def _stream(kubectl: list[str], name: str, timeout: float) -> dict:
    """Prints each change of the job's status until it is Succeeded or Failed."""
    deadline = time.monotonic() + timeout
    last = None
    job: dict = {}
    while time.monotonic() < deadline:
        out = subprocess.run([*kubectl, "get", "ltj", name, "-o", "json"], capture_output=True, text=True)
        if out.returncode == 0:
            job = json.loads(out.stdout)
            st = job.get("status") or {}
            tr = st.get("training") or {}
            shown = tr.get("display") or {}  # as the columns show it: epochs from 1, values rounded
            line = (f"phase={st.get('phase', '-')} restarts={st.get('restarts', 0)} "
                    f"epoch={shown.get('epoch', '-')} step={tr.get('step', '-')} "
                    f"progress={tr.get('progress', '-')}% metrics={shown.get('metrics', '-')} "
                    f"best={shown.get('best', '-')} last_ckpt={tr.get('lastCheckpoint', '-')}")
            if line != last:
                print(time.strftime("%H:%M:%S"), line, flush=True)
                last = line
            if st.get("phase") in ("Succeeded", "Failed"):
                return job
        time.sleep(1)
    raise TimeoutError(f"job {name} did not finish within {timeout:.0f}s")


def _where_checkpoints(kubectl: list[str], job: dict) -> None:
    st = job.get("status") or {}
    tr = st.get("training") or {}
    ns = job["metadata"]["namespace"]
    claim = f"{job['metadata']['name']}-output"
    pvc = subprocess.run([*kubectl, "-n", ns, "get", "pvc", claim, "-o", "jsonpath={.spec.volumeName}"],
                         capture_output=True, text=True).stdout
    host = subprocess.run([*kubectl, "get", "pv", pvc, "-o", "jsonpath={.spec.hostPath.path}"],
                          capture_output=True, text=True).stdout if pvc else ""
    say(f"best checkpoint (in the pod's /output): {tr.get('bestCheckpoint', '-')} score={tr.get('bestScore', '-')}")
    if host:
        say(f"the volume {claim} lives on this machine at {host}")


if __name__ == "__main__":
    sys.exit(main())
