"""The systems the operator benchmark compares: ltj's operator, Kubeflow's training-operator (the
peer) and the floors (a plain client creating the same objects). Each knows its manifests, how its
jobs are submitted, how its pods and job states read, and how its process starts."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ltj_localcluster.controlplane import free_port
from ltj_localcluster.kwok import EXIT_CODE as SIM_EXIT  # kwok-stages.yaml ends such a pod with that code

from .cluster import OUTPUT_CLAIM, Api, Kubectl, cpu_seconds

if TYPE_CHECKING:
    from .measure import Observer

REPO = Path(__file__).resolve().parents[2]
LTJ_CRD = REPO / "crds" / "ltj.dev_lightningtrainingjobs.yaml"
PEER_BUILD = REPO / "benchmarks" / "peers" / "build-training-operator.sh"
PEER_CRD_REL = "manifests/base/crds/kubeflow.org_pytorchjobs.yaml"
WEBHOOK_CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")  # hard-coded in training-operator v1.9
FLOOR_UA = "ltj-bench-floor"
# The peer's own defaults are 1 worker thread and a client-side limit of 20 requests/s (burst 30);
# peer-fast lifts both to match our operator's 4 workers and unthrottled client.
PEER_FAST_ARGS = ("--controller-threads=4", "--kube-api-qps=1000", "--kube-api-burst=2000")
PODS_PER_JOB = 2


def ltj_job(namespace: str, name: str, finish: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": "digits_cnn"},
        "nodes": PODS_PER_JOB,
        "output": {"claimName": OUTPUT_CLAIM},
        "runPolicy": {"cleanPodPolicy": "None"},
    }
    if finish:
        spec["podTemplate"] = {"metadata": {"annotations": {SIM_EXIT: "0"}}}
    return {"apiVersion": "ltj.dev/v1alpha1", "kind": "LightningTrainingJob",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def pytorch_job(namespace: str, name: str, finish: bool) -> dict[str, Any]:
    def replica() -> dict[str, Any]:
        template: dict[str, Any] = {"spec": {"containers": [{
            "name": "pytorch", "image": "ltj-trainer:bench", "command": ["ltj-train"],
        }]}}
        if finish:
            template["metadata"] = {"annotations": {SIM_EXIT: "0"}}
        return {"replicas": 1, "restartPolicy": "OnFailure", "template": template}

    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"runPolicy": {"cleanPodPolicy": "None"},
                     "pytorchReplicaSpecs": {"Master": replica(), "Worker": replica()}}}


def condition_true(obj: Mapping[str, Any], ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


# floor-job's one status write: what ltj's status says of a running 2-node gang.
FLOOR_JOB_STATUS = {"status": {
    "phase": "Running", "nodes": PODS_PER_JOB, "readyNodes": PODS_PER_JOB, "attempt": 0, "launchedAttempt": 0,
    "restarts": 0, "observedGeneration": 1,
    "conditions": [{"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": "2026-01-01T00:00:00Z"}
                   for t, r, m in (("Created", "PodsCreated", f"created {PODS_PER_JOB} pod(s) (attempt 0)"),
                                   ("Running", "AllPodsRunning", f"all {PODS_PER_JOB} pod(s) running (attempt 0)"))]}}


def floor_objects(namespace: str, name: str, everything: bool) -> list[dict[str, Any]]:
    """What the floor client creates for one job: our operator's rendered pods and Service (plus the
    ServiceAccounts the pods name), or every child (`everything`), with no owner."""
    from ltj_operator import render
    from ltj_operator.config import OperatorConfig
    from ltj_operator.spec import parse_job

    job = parse_job({**ltj_job(namespace, name, False), "metadata": {"name": name, "namespace": namespace,
                                                                       "uid": "floor", "generation": 1}})
    children = render.render_children(job, OperatorConfig())
    if not everything:
        children = [c for c in children if c["kind"] in ("ServiceAccount", "Service")]
    objs = [*children, *render.render_pods(job, 0, OperatorConfig())]
    for o in objs:
        o["metadata"].pop("ownerReferences", None)  # no job object: the garbage collector would remove them
    return objs


@dataclass
class Proc:
    """The operator under test, with psutil for RSS and CPU."""

    popen: subprocess.Popen

    def cpu(self) -> float:
        return cpu_seconds(self.popen.pid)

    def rss_mib(self) -> float:
        import psutil

        return psutil.Process(self.popen.pid).memory_info().rss / 2**20

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


class System:
    """One system under test. `has_jobs`: its runs create job objects whose status says Running (else
    both pods Running is the job's Running); `start` returns its operator process, or None for a
    client that does the work itself."""

    name = ""
    agents: tuple[str, ...] = ()
    has_jobs = True
    kueue = False  # its cluster runs Kueue's controller beside the control plane

    def namespace_objects(self, ns: str) -> list[dict[str, Any]]:
        """What its jobs need in each fresh namespace, made before any is submitted."""
        return []

    def build(self) -> None:
        """Builds what the system runs (once, cached), before any cluster starts."""

    def setup(self, kubectl: Kubectl) -> None:
        """What the system needs in a fresh cluster (its CRD...)."""

    def start(self, kubeconfig: str, logs: Path, tag: str) -> Proc | None:
        return None

    def profile(self, proc: Proc, path: Path) -> subprocess.Popen | None:
        """A sampling profiler attached to the operator, where one can read its stacks."""
        return None

    def job_of_pod(self, pod: Mapping[str, Any]) -> str | None:
        return ((pod.get("metadata") or {}).get("labels") or {}).get("ltj.dev/job-name")

    def job_running(self, obj: Mapping[str, Any]) -> bool:
        return False

    def job_finished(self, obj: Mapping[str, Any]) -> bool:
        return False

    def manifest(self, ns: str, name: str, finish: bool) -> dict[str, Any]:
        raise NotImplementedError

    def jobs_path(self, ns: str) -> str:
        raise NotImplementedError

    def submit(self, api: Api, ns: str, names: Sequence[str], finish: bool, concurrency: int, obs: "Observer",
               timeout: float) -> dict[str, float]:
        """Creates the jobs with `concurrency` connections; name -> monotonic time its create was issued."""
        issued: dict[str, float] = {}
        path = self.jobs_path(ns)

        def one(name: str) -> None:
            body = json.dumps(self.manifest(ns, name, finish)).encode()
            issued[name] = time.monotonic()
            api.request("POST", path, body)

        with cf.ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, names))
        return issued


class Ltj(System):
    name = "ltj"
    agents = ("kopf/", "OpenAPI-Generator/")

    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = dict(env or {})

    def setup(self, kubectl: Kubectl) -> None:
        kubectl.apply_crd(LTJ_CRD, "lightningtrainingjobs.ltj.dev")

    def start(self, kubeconfig: str, logs: Path, tag: str) -> Proc:
        env = {**os.environ, "KUBECONFIG": kubeconfig, "LTJ_HEALTH_PORT": str(free_port()),
               "PYTHONUNBUFFERED": "1", **self.env}
        out = open(logs / f"ltj-operator-{tag}.log", "ab")
        p = subprocess.Popen([sys.executable, "-m", "ltj_operator"], env=env, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        return Proc(p)

    def profile(self, proc: Proc, path: Path) -> subprocess.Popen:
        # py-spy (the dev dependencies) samples the operator; raw = collapsed stacks.
        path.parent.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(proc.popen.pid),
                                 "--rate", "200", "--format", "raw", "--threads", "--gil", "-o", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def job_running(self, obj: Mapping[str, Any]) -> bool:
        return (obj.get("status") or {}).get("phase") == "Running"

    def job_finished(self, obj: Mapping[str, Any]) -> bool:
        return (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")

    def manifest(self, ns: str, name: str, finish: bool) -> dict[str, Any]:
        return ltj_job(ns, name, finish)

    def jobs_path(self, ns: str) -> str:
        return f"/apis/ltj.dev/v1alpha1/namespaces/{ns}/lightningtrainingjobs"


class LtjKueue(Ltj):
    """ltj with every job queued through Kueue: a LocalQueue per namespace, of a ClusterQueue whose quota
    exceeds what every workload asks, so Kueue admits each job as soon as it has seen it (the latency
    measured is the Workload round trip, not a wait for quota)."""

    name = "ltj-kueue"
    kueue = True
    QUEUE = "bench"

    def setup(self, kubectl: Kubectl) -> None:
        from ltj_operator.constants import KUEUE_API

        super().setup(kubectl)
        quota = {"cpu": "100000", "memory": "100Ti"}
        kubectl.apply(
            {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": {"name": self.QUEUE}},
            {"apiVersion": KUEUE_API, "kind": "ClusterQueue", "metadata": {"name": self.QUEUE},
             "spec": {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": list(quota), "flavors": [
                 {"name": self.QUEUE, "resources": [{"name": r, "nominalQuota": q} for r, q in quota.items()]}]}]}})

    def namespace_objects(self, ns: str) -> list[dict[str, Any]]:
        from ltj_operator.constants import KUEUE_API

        return [{"apiVersion": KUEUE_API, "kind": "LocalQueue", "metadata": {"name": self.QUEUE, "namespace": ns},
                 "spec": {"clusterQueue": self.QUEUE}}]

    def manifest(self, ns: str, name: str, finish: bool) -> dict[str, Any]:
        from ltj_operator.constants import LABEL_KUEUE_QUEUE

        job = super().manifest(ns, name, finish)
        job["metadata"]["labels"] = {LABEL_KUEUE_QUEUE: self.QUEUE}
        return job


class Peer(System):
    """Kubeflow's training-operator v1, out of cluster (self-signed webhook certs, no webhook config)."""

    agents = ("training-operator",)

    def __init__(self, extra_args: Sequence[str] = (), name: str = "peer"):
        self.name = name
        self.extra_args = list(extra_args)
        self.binary: Path | None = None
        self.crd: Path | None = None

    def build(self) -> None:
        out = subprocess.run(["bash", str(PEER_BUILD)], stdout=subprocess.PIPE, text=True, check=True)
        bin_dir, mod_dir = out.stdout.strip().splitlines()[-2:]
        self.binary, self.crd = Path(bin_dir) / "training-operator", Path(mod_dir) / PEER_CRD_REL

    def setup(self, kubectl: Kubectl) -> None:
        assert self.crd is not None
        kubectl.apply_crd(self.crd, "pytorchjobs.kubeflow.org")
        # cert-controller fills this Secret; the webhook server reads the files (nothing mounts them here).
        kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeflow"}},
                      {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "training-operator-webhook-cert",
                                                                          "namespace": "kubeflow"}})
        WEBHOOK_CERT_DIR.mkdir(parents=True, exist_ok=True)
        if not (WEBHOOK_CERT_DIR / "tls.crt").exists() or not (WEBHOOK_CERT_DIR / "tls.key").exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                            "-subj", "/CN=training-operator.kubeflow.svc", "-keyout", str(WEBHOOK_CERT_DIR / "tls.key"),
                            "-out", str(WEBHOOK_CERT_DIR / "tls.crt")], check=True, capture_output=True)

    def start(self, kubeconfig: str, logs: Path, tag: str) -> Proc:
        assert self.binary is not None
        env = {**os.environ, "KUBECONFIG": kubeconfig}
        out = open(logs / f"training-operator-{tag}.log", "ab")
        p = subprocess.Popen(
            [str(self.binary), "--enable-scheme=pytorchjob", f"--metrics-bind-address=127.0.0.1:{free_port()}",
             f"--health-probe-bind-address=127.0.0.1:{free_port()}", f"--webhook-server-port={free_port()}",
             *self.extra_args],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        return Proc(p)

    def job_of_pod(self, pod: Mapping[str, Any]) -> str | None:
        return ((pod.get("metadata") or {}).get("labels") or {}).get("training.kubeflow.org/job-name")

    def job_running(self, obj: Mapping[str, Any]) -> bool:
        return condition_true(obj, "Running")

    def job_finished(self, obj: Mapping[str, Any]) -> bool:
        return condition_true(obj, "Succeeded") or condition_true(obj, "Failed")

    def manifest(self, ns: str, name: str, finish: bool) -> dict[str, Any]:
        return pytorch_job(ns, name, finish)

    def jobs_path(self, ns: str) -> str:
        return f"/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs"


class Floor(System):
    """A plain client creating the objects itself: every job "submitted" at t0."""

    agents = (FLOOR_UA,)

    def __init__(self, everything: bool, concurrency: int, with_job: bool = False):
        self.everything = everything
        self.has_jobs = with_job
        self.name = "floor-job" if with_job else "floor-all" if everything else "floor"
        self.concurrency = concurrency
        self.job = Ltj()  # floor-job's job objects: ours, their status read the same way

    def setup(self, kubectl: Kubectl) -> None:
        if self.has_jobs:
            self.job.setup(kubectl)

    def job_running(self, obj: Mapping[str, Any]) -> bool:
        return self.job.job_running(obj)

    def manifest(self, ns: str, name: str, finish: bool) -> dict[str, Any]:
        return self.job.manifest(ns, name, finish)

    def jobs_path(self, ns: str) -> str:
        return self.job.jobs_path(ns)

    def submit(self, api: Api, ns: str, names: Sequence[str], finish: bool, concurrency: int, obs: "Observer",
               timeout: float) -> dict[str, float]:
        """Creates every job's objects with the floor's connections (floor-job: the job first, through
        `api` like any submit, then its objects, and its status once its pods run)."""
        bodies = {n: [(f"/api/v1/namespaces/{ns}/{_plural(o)}" if o["apiVersion"] == "v1" else
                       f"/apis/{o['apiVersion']}/namespaces/{ns}/{_plural(o)}", json.dumps(o).encode())
                      for o in floor_objects(ns, n, self.everything)] for n in names}
        jobs = {n: json.dumps(self.manifest(ns, n, False)).encode() for n in names} if self.has_jobs else {}
        t0 = time.monotonic()
        floor_api = Api(f"https://{api.host}:{api.port}", api.ctx, FLOOR_UA)

        def one(name: str) -> None:
            if self.has_jobs:
                api.request("POST", self.jobs_path(ns), jobs[name])
            for path, body in bodies[name]:
                floor_api.request("POST", path, body)

        patcher = None
        if self.has_jobs:
            patcher = cf.ThreadPoolExecutor(1).submit(self.patch_running, floor_api, ns, names, obs, t0 + timeout)
        with cf.ThreadPoolExecutor(self.concurrency) as pool:
            list(pool.map(one, names))
        if patcher is not None:
            patcher.result()
        return {n: t0 for n in names}

    def patch_running(self, api: Api, ns: str, names: Sequence[str], obs: "Observer", deadline: float) -> None:
        """floor-job's status writes: each job's, once, as soon as both its pods run (with as many
        connections as the floor's creates, beside them)."""
        left, body = set(names), json.dumps(FLOOR_JOB_STATUS).encode()
        with cf.ThreadPoolExecutor(self.concurrency) as pool:
            writes = []
            while left and time.monotonic() < deadline:
                with obs.changed:
                    ready = [j for j in obs.jobs_with_pods(obs.pod_running) if j in left]
                    if not ready:
                        obs.changed.wait(0.05)
                        continue
                left.difference_update(ready)
                writes += [pool.submit(api.request, "PATCH", f"{self.jobs_path(ns)}/{j}/status", body,
                                       "application/merge-patch+json") for j in ready]
            for w in writes:
                w.result()  # a refused write is an error of the benchmark, not a slow floor


def job_names(prefix: str, start: int, count: int) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(start, start + count)]


def _plural(obj: Mapping[str, Any]) -> str:
    return {"Pod": "pods", "Service": "services", "ServiceAccount": "serviceaccounts",
            "Role": "roles", "RoleBinding": "rolebindings", "PersistentVolumeClaim": "persistentvolumeclaims",
            "NetworkPolicy": "networkpolicies"}[obj["kind"]]

