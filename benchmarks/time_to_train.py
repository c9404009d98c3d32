"""What an ML engineer waits for, on the real node: ltj side by side, in one run, with Kubeflow's
training-operator running the same Lightning script from the same image.

    .venv/bin/python benchmarks/time_to_train.py [--repeats 3] [--epochs 6] [--systems ltj,pytorchjob]

One local cluster with a real node (kubelet + containerd; ``ltj_localcluster``), both operators
installed side by side, each run in a fresh namespace, one run at a time:
- ltj: the CPU sample (2 nodes x 1 process, digits CNN) as a LightningTrainingJob; the operator
  installed with its Helm chart, running as a pod.
- pytorchjob: training-operator v1 (benchmarks/peers/build-training-operator.sh, run out of
  cluster as in benchmarks/operator_scale.py); a PyTorchJob with a Master and one Worker
  (restartPolicy OnFailure) whose `pytorch` container runs the trainer image's ENTRYPOINT with the
  PyTorchJob env contract (MASTER_ADDR/PORT, WORLD_SIZE, RANK, PET_*), the trainer config ltj
  renders for the same job (from a ConfigMap), and a claim of the same class at /output.

Both trainers resume from the last checkpoint on their volume when they start again, so a restart
keeps what was saved either way; what differs is how each system restarts the ranks. Every pod sets
LTJ_LOG_EVERY_N_STEPS=1, so rank 0 writes a `progress` event at every optimizer step (the trainer's
events file, on the volume; DDP steps are synchronous, so rank 0's step is every rank's step).

Scenarios (each --repeats times, the median reported):
- clean: submit -> first training step; submit -> Succeeded (the job's own status, polled).
- kill: once training has passed its first checkpoint and half an epoch more, rank 1's trainer
  container is SIGKILLed through containerd (an OOM kill or a node losing it look the same to the
  job): kill -> first step of the resumed run, and the steps lost (the last step done before the
  kill minus the step the resumed run continued from).

Writes benchmarks/out/time_to_train.{csv,md,png}; the latest run is in benchmarks/results/. Needs
root, the real node's packages (make real-node) and Go for the peer (built once, cached).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack" / "python"))
sys.path.insert(0, str(REPO / "benchmarks"))

from ltj_localcluster import imagebuild, install  # noqa: E402
from ltj_localcluster.cluster import LocalCluster, NodePool  # noqa: E402
from opbench.cluster import Kubectl, wait  # noqa: E402
from opbench.systems import Peer  # noqa: E402

from ltj_operator import render, spec  # noqa: E402
from ltj_operator.config import OperatorConfig  # noqa: E402
from ltj_api import events as ev  # noqa: E402

SAMPLE = REPO / "crds" / "samples" / "cpu-digits-2node.yaml"
SYSTEMS = ("ltj", "pytorchjob")
STEP_EVERY = {"name": "LTJ_LOG_EVERY_N_STEPS", "value": "1"}
PEER_PORT = 23456  # training-operator's default PyTorchJob port
# Stands for the uid in the PyTorchJob's trainer config: its output directory is <name>-pytorchjob.
PYTORCHJOB_UID = "pytorchjob"


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def ltj_job(name: str, epochs: int) -> dict[str, Any]:
    job = yaml.safe_load(SAMPLE.read_text())
    job["metadata"] = {"name": name}
    job["spec"]["training"]["maxEpochs"] = epochs
    job["spec"]["training"]["earlyStopping"] = {"enabled": False}
    job["spec"]["runPolicy"]["cleanPodPolicy"] = "None"
    job["spec"]["podTemplate"] = {"env": [STEP_EVERY]}
    return job


def pytorch_job(name: str, epochs: int, image: str) -> list[dict[str, Any]]:
    """The PyTorchJob running what ltj runs for ``ltj_job(name, epochs)``, and its claim: each
    replica's pod is ltj's rank-0 pod (its trainer config annotation, security context, resources and
    volumes) without the relay and the env ltj sets, so the training-operator sets the env."""
    job = spec.parse_job({**ltj_job(name, epochs), "metadata": {"name": name, "namespace": "-",
                                                                 "uid": PYTORCHJOB_UID}})
    pod = render.render_pod(job, 0, 0, OperatorConfig(default_trainer_image=image))
    pod_spec = {k: v for k, v in pod["spec"].items() if k in ("securityContext", "volumes", "containers")}
    [trainer] = pod_spec["containers"]
    trainer.update(name="pytorch", imagePullPolicy="Never", env=[STEP_EVERY, *(
        e for e in trainer["env"] if e["name"] in ("LTJ_CONFIG", "LTJ_JOB_NAME"))],
        ports=[{"name": "pytorchjob-port", "containerPort": PEER_PORT}])
    mounted = {m["name"] for m in trainer["volumeMounts"]}
    pod_spec["volumes"] = [v for v in pod_spec["volumes"] if v["name"] in mounted]  # not the relay's token
    template = {"metadata": {"annotations": pod["metadata"]["annotations"]}, "spec": pod_spec}
    claim = render.render_pvc(job)
    assert claim is not None
    claim["metadata"] = {"name": claim["metadata"]["name"]}  # not owned by an ltj job here
    return [
        claim,
        {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": name},
         # The training-operator counts every container restart of every replica against backoffLimit,
         # and one rank's failure restarts all of them: ltj's limit of gang restarts times the ranks.
         "spec": {"runPolicy": {"cleanPodPolicy": "None",
                                "backoffLimit": job.spec.run_policy.backoff_limit * job.spec.nodes},
                  "pytorchReplicaSpecs": {role: {"replicas": 1, "restartPolicy": "OnFailure",
                                                 "template": copy.deepcopy(template)}
                                          for role in ("Master", "Worker")}}},
    ]


@dataclass
class Run:
    system: str
    scenario: str
    values: dict[str, float] = field(default_factory=dict)


class Bench:
    def __init__(self, cluster: LocalCluster, epochs: int, log: Callable[[str], None]):
        info = cluster.info
        assert info is not None
        self.kube = Kubectl(info.kubeconfig, Path(info.bin_dir))
        self.trainer_image = cluster.images["trainer"].ref
        self.epochs = epochs
        self.log = log
        self.count = 0

    # -- one job --------------------------------------------------------------------------------
    def submit(self, system: str, ns: str, name: str) -> float:
        self.kube("create", "namespace", ns)
        wait(lambda: self.kube("get", "serviceaccount", "default", "-n", ns, check=False), 30, "default account")
        objects = [ltj_job(name, self.epochs)] if system == "ltj" else pytorch_job(name, self.epochs, self.trainer_image)
        t0 = time.time()
        for obj in objects:  # the job last: its objects exist when it starts
            self.kube("create", "-n", ns, "-f", "-", input=yaml.safe_dump(obj))
        return t0

    def finished(self, system: str, ns: str, name: str) -> str | None:
        if system == "ltj":
            phase = (self.kube.get("ltj", name, "-n", ns).get("status") or {}).get("phase")
            return phase if phase in ("Succeeded", "Failed") else None
        conds = self.kube.get("pytorchjob", name, "-n", ns).get("status", {}).get("conditions") or []
        done = [c["type"] for c in conds if c["type"] in ("Succeeded", "Failed") and c["status"] == "True"]
        return done[0] if done else None

    def not_failed(self, system: str, ns: str, name: str) -> None:
        """Raises once the job has failed: nothing waited for will come."""
        if self.finished(system, ns, name) == "Failed":
            raise RuntimeError(f"{system} {ns}/{name} failed")

    def events(self, ns: str, name: str) -> list[dict[str, Any]]:
        """The trainer's events file on the claim's volume; none while the claim is not bound yet."""
        out = self.kube("get", "pvc", f"{name}-output", "-n", ns, "-o", "json", check=False)
        pvc = json.loads(out) if out else {}
        if not pvc.get("spec", {}).get("volumeName"):
            return []
        pv = self.kube.get("pv", pvc["spec"]["volumeName"])
        # The job's own directory (ltj_api.trainer.job_dir) is named after its uid: one per job here.
        found = sorted((Path(pv["spec"]["hostPath"]["path"]) / name).glob(f"{name}-*/{ev.FILENAME}"))
        return ev.as_dicts(ev.read_all(found[0])) if found else []

    def kill_rank1(self, system: str, ns: str, name: str) -> float:
        pod = f"{name}-node-1" if system == "ltj" else f"{name}-worker-0"
        container = "trainer" if system == "ltj" else "pytorch"
        st = self.kube.get("pod", pod, "-n", ns)["status"]
        [cid] = [c["containerID"].removeprefix("containerd://") for c in st["containerStatuses"]
                 if c["name"] == container and "running" in c["state"]]
        t = time.time()
        subprocess.run(["ctr", "-a", imagebuild.CONTAINERD_SOCK, "-n", "k8s.io", "tasks", "kill", "--signal",
                        "SIGKILL", cid], check=True, capture_output=True, timeout=60)
        return t

    # -- scenarios ------------------------------------------------------------------------------
    def run(self, system: str, scenario: str) -> Run:
        self.count += 1
        ns, name = f"ttt-{self.count}-{system}", "digits"
        try:
            t0 = self.submit(system, ns, name)
            out = Run(system, scenario)
            if scenario == "clean":
                first = wait(lambda: self.not_failed(system, ns, name) or next(
                    (e for e in self.events(ns, name) if e["type"] == ev.PROGRESS), None), 600, "first step")
                out.values["submit_to_first_step_s"] = ts(first["time"]) - t0
                result = wait(lambda: self.finished(system, ns, name), 900, "finished")
                out.values["submit_to_succeeded_s"] = time.time() - t0
                if result != "Succeeded":
                    raise RuntimeError(f"{system} {ns}/{name} ended {result}")
                return out
            out.values.update(self.kill_and_resume(system, ns, name))
            return out
        finally:
            self.kube("delete", "namespace", ns, "--wait=false", check=False)

    def kill_and_resume(self, system: str, ns: str, name: str) -> dict[str, float]:
        def half_epoch_past_checkpoint() -> bool:
            evs = self.events(ns, name)
            ckpt = next((e for e in evs if e["type"] == ev.CHECKPOINT), None)
            steps = [e for e in evs if e["type"] == ev.PROGRESS]
            if ckpt is None or not steps:
                return False
            per_epoch = steps[-1]["steps_per_epoch"]
            return steps[-1]["step"] >= ckpt["step"] + max(1, per_epoch // 2)

        wait(half_epoch_past_checkpoint, 600, "half an epoch past the first checkpoint", interval=0.05)
        t_kill = self.kill_rank1(system, ns, name)

        def resumed() -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
            self.not_failed(system, ns, name)
            evs = self.events(ns, name)
            starts = [i for i, e in enumerate(evs) if e["type"] == ev.STARTED]
            if len(starts) < 2:
                return None
            step = next((e for e in evs[starts[1]:] if e["type"] == ev.PROGRESS), None)
            return (evs, step) if step else None

        evs, first = wait(resumed, 900, "the first step of the resumed run")
        started = [i for i, e in enumerate(evs) if e["type"] == ev.STARTED][1]
        done = max(e["step"] for e in evs[:started] if e["type"] == ev.PROGRESS)
        kept = first["step"] - 1  # the resumed run's first step follows the checkpoint's
        result = wait(lambda: self.finished(system, ns, name), 900, "finished")
        if result != "Succeeded":
            raise RuntimeError(f"{system} {ns}/{name} ended {result} after the kill")
        return {"kill_to_resumed_step_s": ts(first["time"]) - t_kill, "steps_lost": float(done - kept),
                "resumed_from_step": float(kept)}


# training-operator's init container for workers (pkg/controller.v1/pytorch/initcontainer.go: wait
# until the master's name resolves, trying every 2 s) with python instead of alpine's nslookup: the
# node has no registry to pull alpine from.
INIT_CONTAINER = """
- name: init-pytorch
  image: {{.InitContainerImage}}
  imagePullPolicy: IfNotPresent
  command: ["python", "-c", "import socket, sys, time\\nfor _ in range({{.MaxTries}}):\\n    try:\\n        socket.gethostbyname('{{.MasterAddr}}'); sys.exit(0)\\n    except OSError:\\n        print('waiting for master', flush=True); time.sleep(2)\\nsys.exit(1)"]
"""


def start_peer(cluster: LocalCluster, logs: Path) -> Any:
    """training-operator out of cluster, as the operator benchmark runs it; its init container runs
    in the operator image (python, no registry needed)."""
    template = logs / "init-container.yaml"
    template.write_text(INIT_CONTAINER)
    peer = Peer(extra_args=[f"--pytorch-init-container-image={cluster.images['operator'].ref}",
                            f"--pytorch-init-container-template-file={template}"])
    peer.build()
    peer.setup(Kubectl(cluster.info.kubeconfig, Path(cluster.info.bin_dir)))
    return peer.start(cluster.info.kubeconfig, logs, "time-to-train")


def report(runs: list[Run], out: Path, repeats: int) -> str:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "time_to_train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["system", "scenario", "repeat", "metric", "value"])
        seen: dict[tuple[str, str], int] = {}
        for r in runs:
            i = seen[(r.system, r.scenario)] = seen.get((r.system, r.scenario), 0) + 1
            for metric, value in r.values.items():
                w.writerow([r.system, r.scenario, i, metric, f"{value:.3f}"])
    values: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        for metric, value in r.values.items():
            values.setdefault((r.system, metric), []).append(value)
    med = {k: statistics.median(v) for k, v in values.items()}
    rows = [("submit -> first training step (s)", "submit_to_first_step_s"),
            ("submit -> Succeeded (s)", "submit_to_succeeded_s"),
            ("rank 1 killed -> first resumed step (s)", "kill_to_resumed_step_s"),
            ("steps lost to the kill", "steps_lost")]
    lines = [f"# Time to train: ltj vs PyTorchJob on the real node (median of {repeats})", "",
             "| | ltj | PyTorchJob | ltj / PyTorchJob |", "| --- | ---: | ---: | ---: |"]
    for label, key in rows:
        a, b = med.get(("ltj", key)), med.get(("pytorchjob", key))
        ratio = f"{a / b:.2f}" if a is not None and b else "-"
        lines.append(f"| {label} | {_fmt(a)} | {_fmt(b)} | {ratio} |")
    text = "\n".join(lines) + "\n"
    (out / "time_to_train.md").write_text(text)
    _plot(runs, out / "time_to_train.png")
    return text


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _plot(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["submit_to_first_step_s", "submit_to_succeeded_s", "kill_to_resumed_step_s"]
    fig, ax = plt.subplots(figsize=(8, 4))
    for offset, system in ((-0.15, "ltj"), (0.15, "pytorchjob")):
        for i, m in enumerate(metrics):
            vals = [r.values[m] for r in runs if r.system == system and m in r.values]
            ax.scatter([i + offset] * len(vals), vals, label=system if i == 0 else None,
                       color="tab:blue" if system == "ltj" else "tab:orange")
    ax.set_xticks(range(len(metrics)), ["submit -> first step", "submit -> Succeeded", "kill -> resumed step"])
    ax.set_ylabel("seconds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each scenario per system (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=6, help="max epochs of each job (default: %(default)s)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of %(default)s")
    ap.add_argument("--scenarios", default="clean,kill", help="comma-separated subset of %(default)s")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out", help="where results go")
    a = ap.parse_args(argv)
    systems = [s for s in a.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        ap.error(f"--systems: unknown {sorted(unknown)}")

    def log(msg: str) -> None:
        print(f"[time_to_train] {msg}", file=sys.stderr, flush=True)

    # A SIGTERM (timeout, kill) unwinds through the finally below, which stops the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="ltj-ttt-"))
    cluster = LocalCluster(work / "cluster", NodePool(nodes=1, gpus=0))
    peer: Any = None
    runs: list[Run] = []
    try:
        info = cluster.up()
        done = install.helm_install(Path(info.bin_dir) / "helm", info.kubeconfig, cluster.images["operator"].ref,
                                    cluster.images["trainer"].ref)
        if done.returncode != 0:
            raise RuntimeError(f"helm install failed:\n{done.stdout}{done.stderr}")
        if "pytorchjob" in systems:
            peer = start_peer(cluster, work)
        bench = Bench(cluster, a.epochs, log)
        for _ in range(a.repeats):
            for scenario in a.scenarios.split(","):
                for system in systems:  # interleaved, so drift on the machine hits both alike
                    r = bench.run(system, scenario)
                    log(f"{system} {scenario}: " + ", ".join(f"{k}={v:.2f}" for k, v in r.values.items()))
                    runs.append(r)
    finally:
        if peer is not None:
            peer.stop()
        cluster.down()
    print(report(runs, a.out, a.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
