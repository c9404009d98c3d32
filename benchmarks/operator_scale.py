"""Operator scale benchmark: ltj-operator side by side with Kubeflow's training-operator and a floor.

    .venv/bin/python benchmarks/operator_scale.py [--sizes 1,50,200] [--scale 100,1000] [--systems ltj,peer,floor]

Systems, each on its own fresh private control plane (etcd, kube-apiserver with an audit log,
controller-manager, scheduler) with two kwok nodes (sigs.k8s.io/kwok: pods bound to them go Running
at once without running anything), one system at a time:
- ltj:   our operator as a subprocess (`python -m ltj_operator`), LightningTrainingJob, 2 nodes.
- peer:  Kubeflow training-operator v1 (benchmarks/peers/build-training-operator.sh), PyTorchJob with
         a Master and one Worker, run out-of-cluster (self-signed webhook certs, no webhook config).
- floor: a plain client creating the same pods (as render.py renders them) and their Service (plus
         the relay's ServiceAccount, which admission needs for rank 0) directly, with
         --floor-concurrency connections: the API server's own limit for that work. `floor-all`
         also creates every other child our operator creates (the relay's Role and RoleBinding);
         `floor-job` creates the floor's objects for a LightningTrainingJob it creates first, and
         patches the job's status to Running once when both pods run: the least work any operator
         of this CRD adds to the floor.

Workloads: N jobs (--sizes) of 2 pods each submitted at once, in a fresh namespace and a fresh
operator process each. Measured: per job, submit -> both pods exist (first watch event) and
submit -> job status Running (ltj, floor-job: status.phase; peer: the Running condition; floor,
floor-all: both pods Running); totals from the first submit (workloads of <= 10 jobs run --repeats times, larger ones
--repeats-large times, the median run reported); API requests by the operator's user agents counted in the
API server's audit log (submit .. all Running + settle); the operator's peak RSS (VmHWM) and CPU
seconds in that window. Scale (--scale): jobs whose pods finish at once (ltj.dev/kwok-exit-code=0)
up to each size, then, with the operator idle: its RSS, its API requests per minute, and the time
one new job takes to get its pods and to run.

Writes benchmarks/out/operator_scale.csv (long format: section,system,n,metric,value) and
operator_scale.png, and prints the tables. Needs root (the local control plane makes a Linux bridge),
the binaries of hack/build-binaries.sh (kwok included, built on first use), and Go for the peer
(built once, cached).
"""

from __future__ import annotations

import argparse
import calendar
import concurrent.futures as cf
import csv
import http.client
import json
import math
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ltj_localcluster.kwok import EXIT_CODE as SIM_EXIT  # kwok-stages.yaml ends such a pod with that code

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
LTJ_CRD = REPO / "crds" / "ltj.dev_lightningtrainingjobs.yaml"
PEER_BUILD = REPO / "benchmarks" / "peers" / "build-training-operator.sh"
PEER_CRD_REL = "manifests/base/crds/kubeflow.org_pytorchjobs.yaml"
WEBHOOK_CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")  # hard-coded in training-operator v1.9
BENCH_UA = "ltj-bench"
FLOOR_UA = "ltj-bench-floor"
SYSTEMS = ("ltj", "peer", "peer-fast", "floor", "floor-all", "floor-job")
# The peer's own defaults are 1 worker thread and a client-side limit of 20 requests/s (burst 30);
# peer-fast lifts both to match our operator's 4 workers and unthrottled client.
PEER_FAST_ARGS = ("--controller-threads=4", "--kube-api-qps=1000", "--kube-api-burst=2000")
PODS_PER_JOB = 2
OTHERS = ("peer", "peer-fast", "floor", "floor-all", "floor-job")  # what ours is compared with
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
OUTPUT_CLAIM = "bench-output"
SMALL_N = 10  # workloads this small are repeated (--repeats): one job's latency is a few round trips

AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  resources: [{group: coordination.k8s.io, resources: [leases]}]
- level: Metadata
"""


# ---------------------------------------------------------------------------------------------
# pure helpers (unit-tested in tests/unit/bench)
# ---------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    s = sorted(v for v in values if not math.isnan(v))
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return float("nan")
    return a / b


def parse_sizes(text: str, flag: str) -> list[int]:
    """'1,50,200' -> [1, 50, 200]; '' -> []; errors name the flag."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            n = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag}: {part!r} is not an integer") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"{flag}: sizes must be >= 1, got {n}")
        out.append(n)
    return sorted(set(out))


def fmt(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def seconds(value: float) -> str:
    """A duration: milliseconds resolution below a second (where one job's times differ)."""
    return fmt(value, 3 if abs(value) < 1 else 2)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (right-aligned numbers), for the terminal and the README alike."""
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"]
    for r in cells[1:]:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |")
    return "\n".join(lines)


def audit_counts(lines: Iterable[str | bytes], agents: Mapping[str, Sequence[str]], start: float, end: float,
                 ) -> dict[str, dict[str, int]]:
    """API requests per system and "verb resource[/subresource]" from audit log lines, by user-agent
    prefix, received in [start, end].

    One count per request: the ResponseComplete event, except watches, counted when they start
    (ResponseStarted), since a watch completes only when it ends."""
    out: dict[str, dict[str, int]] = {name: {} for name in agents}
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue  # a line being written
        verb, stage = ev.get("verb", ""), ev.get("stage")
        if stage != ("ResponseStarted" if verb == "watch" else "ResponseComplete"):
            continue
        ts = _rfc3339(ev.get("requestReceivedTimestamp", ""))
        if ts is None or not start <= ts <= end:
            continue
        ua = ev.get("userAgent", "")
        ref = ev.get("objectRef") or {}
        key = f"{verb} {ref.get('resource') or ev.get('requestURI', '?').split('?')[0]}"
        if ref.get("subresource"):
            key += "/" + ref["subresource"]
        for name, prefixes in agents.items():
            if any(ua.startswith(p) for p in prefixes):
                out[name][key] = out[name].get(key, 0) + 1
                break
    return out


def _rfc3339(text: str) -> float | None:
    # 2025-01-02T03:04:05.123456Z (the audit log always writes UTC with microseconds)
    try:
        base, _, frac = text.rstrip("Z").partition(".")
        t = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
        return t + (float("0." + frac) if frac else 0.0)
    except ValueError:
        return None


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
    relay's ServiceAccount that rank 0 names), or every child (`everything`), with no owner."""
    from ltj_operator import render
    from ltj_operator.config import OperatorConfig
    from ltj_operator.spec import parse_job

    job = parse_job({**ltj_job(namespace, name, False), "metadata": {"name": name, "namespace": namespace,
                                                                       "uid": "floor", "generation": 1}})
    children = render.render_children(job)
    if not everything:
        children = [c for c in children if c["kind"] in ("ServiceAccount", "Service")]
    objs = [*children, *render.render_pods(job, 0, OperatorConfig())]
    for o in objs:
        o["metadata"].pop("ownerReferences", None)  # no job object: the garbage collector would remove them
    return objs


@dataclass
class Workload:
    """One (system, N) run's raw observations: monotonic-clock times per job."""

    system: str
    n: int
    t0: float
    submit: dict[str, float]
    created: dict[str, float]  # both pods seen
    running: dict[str, float]  # status Running
    requests: dict[str, int] = field(default_factory=dict)  # by "verb resource"
    rss_peak_mib: float = float("nan")
    cpu_s: float = float("nan")
    # CPU seconds of every process of the machine's cluster in the window (the operator included):
    # on a saturated machine the time to Running follows the whole system's work, not the operator's.
    cluster_cpu_s: dict[str, float] = field(default_factory=dict)

    def latencies(self, which: Mapping[str, float]) -> list[float]:
        return [which[j] - self.submit[j] if j in which else float("nan") for j in self.submit]

    def summary(self) -> dict[str, float]:
        created, running = self.latencies(self.created), self.latencies(self.running)
        done_c = [self.created[j] for j in self.submit if j in self.created]
        done_r = [self.running[j] for j in self.submit if j in self.running]
        complete_c = len(done_c) == len(self.submit)
        complete_r = len(done_r) == len(self.submit)
        total_requests = sum(self.requests.values())
        return {
            "created_p50_s": percentile(created, 50),
            "created_p99_s": percentile(created, 99),
            "created_total_s": max(done_c) - self.t0 if complete_c and done_c else float("nan"),
            "running_p50_s": percentile(running, 50),
            "running_p99_s": percentile(running, 99),
            "running_total_s": max(done_r) - self.t0 if complete_r and done_r else float("nan"),
            "jobs_created": float(len(done_c)),
            "jobs_running": float(len(done_r)),
            "requests_per_job": total_requests / self.n if self.requests else float("nan"),
            "writes_per_job": sum(v for k, v in self.requests.items()
                                  if k.split()[0] in WRITE_VERBS)
            / self.n if self.requests else float("nan"),
            "rss_peak_mib": self.rss_peak_mib,
            "cpu_s": self.cpu_s,
            "cluster_cpu_s": sum(self.cluster_cpu_s.values()) if self.cluster_cpu_s else float("nan"),
        }


# ---------------------------------------------------------------------------------------------
# I/O: a small HTTPS client, watches, the cluster, the systems
# ---------------------------------------------------------------------------------------------


class Api:
    """Blocking JSON calls with one keep-alive connection per thread."""

    def __init__(self, server: str, ctx: ssl.SSLContext, user_agent: str = BENCH_UA):
        url = urllib.parse.urlsplit(server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.ctx = ctx
        self.user_agent = user_agent
        self._local = threading.local()

    def connection(self, timeout: float = 60) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                ok: Sequence[int] = ()) -> Any:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(3):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self.connection()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.2)
                continue
            if resp.status in (429, 500, 503) and attempt < 2:
                time.sleep(0.5)
                continue
            if resp.status >= 300:
                if resp.status in ok:
                    return None  # an expected failure (e.g. 404 when probing)
                raise RuntimeError(f"{method} {path}: {resp.status} {payload[:500]!r}")
            return json.loads(payload) if payload else None
        raise AssertionError("unreachable")


class Watch(threading.Thread):
    """Lists then watches a collection; calls on_event(type, obj, monotonic time) from this thread."""

    def __init__(self, api: Api, path: str, on_event: Callable[[str, dict[str, Any], float], None]):
        super().__init__(daemon=True)
        self.api, self.path, self.on_event = api, path, on_event
        self.ready = threading.Event()
        self.stopped = False
        self.conn: http.client.HTTPSConnection | None = None

    def run(self) -> None:
        rv = ""
        while not self.stopped:
            try:
                if not rv:
                    listing = self.api.request("GET", self.path)
                    now = time.monotonic()
                    for item in listing.get("items") or []:
                        self.on_event("ADDED", item, now)
                    rv = listing["metadata"]["resourceVersion"]
                sep = "&" if "?" in self.path else "?"
                self.conn = self.api.connection(timeout=3600)
                self.conn.request("GET", f"{self.path}{sep}watch=1&resourceVersion={rv}&timeoutSeconds=1800"
                                  "&allowWatchBookmarks=true", headers={"User-Agent": BENCH_UA})
                resp = self.conn.getresponse()
                if resp.status != 200:
                    rv = ""
                    time.sleep(0.5)
                    continue
                self.ready.set()
                while not self.stopped:
                    line = resp.readline()
                    if not line:
                        break
                    now = time.monotonic()
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    if ev.get("type") == "ERROR":
                        rv = ""
                        break
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if ev.get("type") != "BOOKMARK":
                        self.on_event(ev["type"], obj, now)
            except (OSError, http.client.HTTPException, ValueError):
                if self.stopped:
                    return
                time.sleep(0.5)

    def stop(self) -> None:
        self.stopped = True
        if self.conn is not None:
            try:
                self.conn.sock and self.conn.sock.shutdown(2)  # type: ignore[func-returns-value]
            except OSError:
                pass


class Observer:
    """First-seen times of pods and of job states in one namespace."""

    def __init__(self, system: "System"):
        self.system = system
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.pods: dict[str, str] = {}  # pod -> job
        self.pod_seen: dict[str, float] = {}
        self.pod_running: dict[str, float] = {}
        self.job_running: dict[str, float] = {}
        self.job_finished: dict[str, float] = {}

    def on_pod(self, etype: str, pod: dict[str, Any], t: float) -> None:
        if etype == "DELETED":
            return
        name = pod["metadata"]["name"]
        job = self.system.job_of_pod(pod)
        if job is None:
            return
        with self.changed:
            self.pods[name] = job
            self.pod_seen.setdefault(name, t)
            if (pod.get("status") or {}).get("phase") == "Running":
                self.pod_running.setdefault(name, t)
            self.changed.notify_all()

    def on_job(self, etype: str, obj: dict[str, Any], t: float) -> None:
        if etype == "DELETED":
            return
        name = obj["metadata"]["name"]
        with self.changed:
            if self.system.job_running(obj):
                self.job_running.setdefault(name, t)
            if self.system.job_finished(obj):
                self.job_finished.setdefault(name, t)
            self.changed.notify_all()

    def jobs_with_pods(self, field_: Mapping[str, float]) -> dict[str, float]:
        """job -> time its last pod reached the state (only jobs with all their pods there)."""
        per: dict[str, list[float]] = {}
        for pod, job in self.pods.items():
            if pod in field_:
                per.setdefault(job, []).append(field_[pod])
        return {j: max(ts) for j, ts in per.items() if len(ts) >= PODS_PER_JOB}

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 1.0))
        return True


class AuditedControlPlane:
    """ltj_localcluster's ControlPlane, with the API server writing an audit log (request counting)."""

    def __init__(self, run_dir: Path, bin_dir: Path):
        from ltj_localcluster.controlplane import ControlPlane

        self.run_dir = run_dir
        self.audit_log = run_dir / "audit.log"
        policy = run_dir / "audit-policy.yaml"
        run_dir.mkdir(parents=True, exist_ok=True)
        policy.write_text(AUDIT_POLICY)
        extra = [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
                 "--audit-log-maxbackup=0"]

        class _CP(ControlPlane):
            def _spawn(self, name: str, args: list[str]) -> None:
                super()._spawn(name, [*args, *extra] if name == "kube-apiserver" else args)

        self.cp = _CP(run_dir, bin_dir)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


class Cluster:
    def __init__(self, work: Path, bin_dir: Path, log: Callable[[str], None]):
        self.work = work
        self.bin_dir = bin_dir
        self.log = log
        self.cp = AuditedControlPlane(work / "cp", bin_dir)
        self.info: Any = None
        self.api: Api | None = None
        self._audit_pos = 0
        self._audit_lines: list[tuple[float, bytes]] = []

    def up(self) -> None:
        t = time.monotonic()
        self.info = self.cp.cp.start()
        self.ctx = ssl.create_default_context(cafile=str(Path(self.info.pki_dir) / "ca.crt"))
        import yaml

        user = yaml.safe_load(Path(self.info.kubeconfig).read_text())["users"][0]["user"]
        self.ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        self.api = Api(self.info.server, self.ctx)
        from ltj_localcluster.cluster import NodePool
        from ltj_localcluster.kwok import KwokNodes

        # Two nodes with more CPU and memory than the pods ask for and room for every pod of the scale
        # section (finished pods stay: cleanPodPolicy None). kwok records its process in the run dir's
        # pids.json: cpu() counts it (as "kwok"), down() stops it.
        KwokNodes(self.info, NodePool(nodes=2, cpu="1000", memory="4Ti", gpus=0, pods=2000)).start(timeout=120)
        self.log(f"control plane + kwok nodes up in {time.monotonic() - t:.0f}s")

    def cpu(self, extra: Mapping[str, int] | None = None) -> dict[str, float]:
        """CPU seconds so far of each cluster process (and of `extra`: name -> pid), by name."""
        import psutil

        pids = {**json.loads((Path(self.info.run_dir) / "pids.json").read_text()), **(extra or {})}
        used = {}
        for name, pid in pids.items():
            try:
                used[name] = cpu_seconds(pid)
            except psutil.NoSuchProcess:
                continue
        return used

    def down(self) -> None:
        from ltj_localcluster.cluster import down

        down(self.cp.run_dir)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return subprocess.run([str(self.bin_dir / "kubectl"), f"--kubeconfig={self.info.kubeconfig}", *args],
                              input=input, capture_output=True, text=True, check=True, timeout=120).stdout

    def apply_crd(self, path: Path, name: str) -> None:
        self.kubectl("apply", "--server-side", "-f", str(path))
        for _ in range(120):
            if subprocess.run([str(self.bin_dir / "kubectl"), f"--kubeconfig={self.info.kubeconfig}", "wait",
                               "--for=condition=Established", "--timeout=10s", f"crd/{name}"],
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError(f"CRD {name} not established")

    def namespace(self, ns: str) -> None:
        assert self.api is not None
        self.api.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                        "metadata": {"name": ns}})
        # The claim the ltj jobs name (the scheduler waits for it to be bound). No provisioner runs beside
        # kwok: a static volume of its own, which nothing mounts, of no class (so no default class
        # applies). Its claimRef names the claim's uid, as a provisioner's does: the volume controller
        # then binds the claim on the volume's first sync (without the uid, only on its 15 s resync).
        # Retained when the claim goes, and deleted with the namespace.
        claim = self.api.request("POST", f"/api/v1/namespaces/{ns}/persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": OUTPUT_CLAIM},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": ""}})
        self.api.request("POST", "/api/v1/persistentvolumes", {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume_name(ns)},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                     "persistentVolumeReclaimPolicy": "Retain",
                     "hostPath": {"path": str(Path(self.info.run_dir) / "volumes" / ns)},
                     "claimRef": {"namespace": ns, "name": OUTPUT_CLAIM, "uid": claim["metadata"]["uid"]}}})
        deadline = time.monotonic() + 60
        while True:
            pvc = self.api.request("GET", f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{OUTPUT_CLAIM}")
            if (pvc.get("status") or {}).get("phase") == "Bound":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"claim {ns}/{OUTPUT_CLAIM} not bound")
            time.sleep(0.2)
        # ServiceAccount admission needs the namespace's default ServiceAccount.
        while self.api.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default", ok=(404,)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no default ServiceAccount in {ns}")
            time.sleep(0.2)

    def delete_namespace(self, ns: str, timeout: float = 300) -> float:
        assert self.api is not None
        t = time.monotonic()
        # Pods first, without grace (nothing runs): the namespace controller would otherwise wait
        # out their grace period before it looks again.
        self.api.request("DELETE", f"/api/v1/namespaces/{ns}/pods?gracePeriodSeconds=0", ok=(404,))
        self.api.request("DELETE", f"/api/v1/namespaces/{ns}", ok=(404,))
        while self.api.request("GET", f"/api/v1/namespaces/{ns}", ok=(404,)) is not None:
            if time.monotonic() - t > timeout:
                raise RuntimeError(f"namespace {ns} not gone after {timeout:.0f}s")
            time.sleep(0.5)
        # Its claim went with it; the volume (Released, retained) would stay. Its protection finalizer
        # lets it go once the volume controller has seen the claim gone: nothing waits for that.
        self.api.request("DELETE", f"/api/v1/persistentvolumes/{volume_name(ns)}", ok=(404,))
        return time.monotonic() - t

    def audit(self, agents: Mapping[str, Sequence[str]], start: float, end: float) -> dict[str, dict[str, int]]:
        """Requests per system in [start, end] (wall clock); reads only what was appended since the last call."""
        time.sleep(0.3)  # let the API server finish writing the window's last entries
        with open(self.cp.audit_log, "rb") as f:
            f.seek(self._audit_pos)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self._audit_pos += cut
        self._audit_lines.extend((_line_time(ln), ln) for ln in data[:cut].splitlines())
        self._audit_lines = [(t, ln) for t, ln in self._audit_lines if t >= time.time() - 900]
        return audit_counts((ln for t, ln in self._audit_lines if start - 1 <= t <= end + 1), agents, start, end)

    def quiesce(self, agents: Sequence[str], quiet: float, timeout: float) -> float:
        """Waits until the system has written nothing for `quiet` seconds; returns the time waited."""
        t = time.monotonic()
        while time.monotonic() - t < timeout:
            now = time.time()
            counts = self.audit({"x": agents}, now - quiet, now)["x"]
            if not any(k.split()[0] in WRITE_VERBS for k in counts):
                break
            time.sleep(1.0)
        return time.monotonic() - t


def volume_name(ns: str) -> str:
    """The static volume that binds namespace `ns`'s OUTPUT_CLAIM."""
    return f"{OUTPUT_CLAIM}-{ns}"


def _line_time(line: bytes) -> float:
    i = line.find(b'"requestReceivedTimestamp":"')
    if i < 0:
        return 0.0
    return _rfc3339(line[i + 28:i + 55].split(b'"')[0].decode()) or 0.0


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
    name = ""
    kind_plural = ""
    agents: tuple[str, ...] = ()

    def setup(self, cluster: Cluster) -> None: ...

    def start(self, cluster: Cluster, logs: Path, tag: str) -> Proc | None:
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


class Ltj(System):
    name = "ltj"
    agents = ("kopf/", "OpenAPI-Generator/")

    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = dict(env or {})

    def setup(self, cluster: Cluster) -> None:
        cluster.apply_crd(LTJ_CRD, "lightningtrainingjobs.ltj.dev")

    def start(self, cluster: Cluster, logs: Path, tag: str) -> Proc:
        from ltj_localcluster.controlplane import free_port

        env = {**os.environ, "KUBECONFIG": cluster.info.kubeconfig, "LTJ_HEALTH_PORT": str(free_port()),
               "PYTHONUNBUFFERED": "1", **self.env}
        out = open(logs / f"ltj-operator-{tag}.log", "ab")
        p = subprocess.Popen([sys.executable, "-m", "ltj_operator"], env=env, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        return Proc(p)

    def job_running(self, obj: Mapping[str, Any]) -> bool:
        return (obj.get("status") or {}).get("phase") == "Running"

    def job_finished(self, obj: Mapping[str, Any]) -> bool:
        return (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")

    def manifest(self, ns: str, name: str, finish: bool) -> dict[str, Any]:
        return ltj_job(ns, name, finish)

    def jobs_path(self, ns: str) -> str:
        return f"/apis/ltj.dev/v1alpha1/namespaces/{ns}/lightningtrainingjobs"


class Peer(System):
    name = "peer"
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

    def setup(self, cluster: Cluster) -> None:
        """The CRD and what the training-operator expects to find; ``cluster`` needs only ``apply_crd``
        and ``kubectl`` (benchmarks/time_to_train.py passes its own)."""
        assert self.crd is not None
        cluster.apply_crd(self.crd, "pytorchjobs.kubeflow.org")
        # cert-controller fills this Secret; the webhook server reads the files (nothing mounts them here).
        cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeflow"}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "training-operator-webhook-cert",
                                                                "namespace": "kubeflow"}}]}))
        WEBHOOK_CERT_DIR.mkdir(parents=True, exist_ok=True)
        if not (WEBHOOK_CERT_DIR / "tls.crt").exists() or not (WEBHOOK_CERT_DIR / "tls.key").exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                            "-subj", "/CN=training-operator.kubeflow.svc", "-keyout", str(WEBHOOK_CERT_DIR / "tls.key"),
                            "-out", str(WEBHOOK_CERT_DIR / "tls.crt")], check=True, capture_output=True)

    def start(self, cluster: Cluster, logs: Path, tag: str) -> Proc:
        from ltj_localcluster.controlplane import free_port

        assert self.binary is not None
        env = {**os.environ, "KUBECONFIG": cluster.info.kubeconfig}
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
    agents = (FLOOR_UA,)

    def __init__(self, everything: bool, concurrency: int, with_job: bool = False):
        self.everything = everything
        self.with_job = with_job
        self.name = "floor-job" if with_job else "floor-all" if everything else "floor"
        self.concurrency = concurrency
        self.job = Ltj()  # floor-job's job objects: ours, their status read the same way

    def setup(self, cluster: Cluster) -> None:
        if self.with_job:
            self.job.setup(cluster)

    def job_running(self, obj: Mapping[str, Any]) -> bool:
        return self.job.job_running(obj)

    def manifest(self, ns: str, name: str, finish: bool) -> dict[str, Any]:
        return self.job.manifest(ns, name, finish)

    def jobs_path(self, ns: str) -> str:
        return self.job.jobs_path(ns)


# ---------------------------------------------------------------------------------------------
# the runs
# ---------------------------------------------------------------------------------------------


def job_names(prefix: str, start: int, count: int) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(start, start + count)]


def submit(api: Api, system: System, ns: str, names: Sequence[str], finish: bool, concurrency: int
           ) -> dict[str, float]:
    """Creates the jobs with `concurrency` connections; name -> monotonic time its create was issued."""
    issued: dict[str, float] = {}
    path = system.jobs_path(ns)

    def one(name: str) -> None:
        body = json.dumps(system.manifest(ns, name, finish)).encode()
        issued[name] = time.monotonic()
        api.request("POST", path, body)

    with cf.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, names))
    return issued


def run_floor(api: Api, floor: Floor, ns: str, names: Sequence[str], obs: Observer, timeout: float
              ) -> dict[str, float]:
    """The floor "submits" every job at t0 and creates their objects with its connections (floor-job:
    the job first, through `api` like any submit, then its objects, and its status once its pods run)."""
    bodies = {n: [(f"/api/v1/namespaces/{ns}/{_plural(o)}" if o["apiVersion"] == "v1" else
                   f"/apis/{o['apiVersion']}/namespaces/{ns}/{_plural(o)}", json.dumps(o).encode())
                  for o in floor_objects(ns, n, floor.everything)] for n in names}
    jobs = {n: json.dumps(floor.manifest(ns, n, False)).encode() for n in names} if floor.with_job else {}
    t0 = time.monotonic()
    floor_api = Api(f"https://{api.host}:{api.port}", api.ctx, FLOOR_UA)

    def one(name: str) -> None:
        if floor.with_job:
            api.request("POST", floor.jobs_path(ns), jobs[name])
        for path, body in bodies[name]:
            floor_api.request("POST", path, body)

    patcher = None
    if floor.with_job:
        patcher = cf.ThreadPoolExecutor(1).submit(patch_running, floor_api, floor, ns, names, obs, t0 + timeout)
    with cf.ThreadPoolExecutor(floor.concurrency) as pool:
        list(pool.map(one, names))
    if patcher is not None:
        patcher.result()
    return {n: t0 for n in names}


def patch_running(api: Api, floor: Floor, ns: str, names: Sequence[str], obs: Observer, deadline: float) -> None:
    """floor-job's status writes: each job's, once, as soon as both its pods run (with as many connections
    as the floor's creates, beside them)."""
    left, body = set(names), json.dumps(FLOOR_JOB_STATUS).encode()
    with cf.ThreadPoolExecutor(floor.concurrency) as pool:
        writes = []
        while left and time.monotonic() < deadline:
            with obs.changed:
                ready = [j for j in obs.jobs_with_pods(obs.pod_running) if j in left]
                if not ready:
                    obs.changed.wait(0.05)
                    continue
            left.difference_update(ready)
            writes += [pool.submit(api.request, "PATCH", f"{floor.jobs_path(ns)}/{j}/status", body,
                                   "application/merge-patch+json") for j in ready]
        for w in writes:
            w.result()  # a refused write is an error of the benchmark, not a slow floor


def _plural(obj: Mapping[str, Any]) -> str:
    return {"Pod": "pods", "Service": "services", "ServiceAccount": "serviceaccounts",
            "Role": "roles", "RoleBinding": "rolebindings", "PersistentVolumeClaim": "persistentvolumeclaims"}[obj["kind"]]


def observe(cluster: Cluster, system: System, ns: str) -> tuple[Observer, list[Watch]]:
    assert cluster.api is not None
    obs = Observer(system)
    watches = [Watch(cluster.api, f"/api/v1/namespaces/{ns}/pods", obs.on_pod)]
    if not isinstance(system, Floor) or system.with_job:
        watches.append(Watch(cluster.api, system.jobs_path(ns), obs.on_job))
    for w in watches:
        w.start()
    for w in watches:
        if not w.ready.wait(30):
            raise RuntimeError(f"watch {w.path} not established")
    return obs, watches


def wait_ready(cluster: Cluster, system: System, proc: Proc, tag: str, timeout: float = 180) -> float:
    """Until the operator has turned a warm-up job into pods (its watches and caches are up)."""
    assert cluster.api is not None
    t = time.monotonic()
    ns = "warmup"
    if cluster.api.request("GET", f"/api/v1/namespaces/{ns}", ok=(404,)) is None:
        cluster.namespace(ns)
    obs, watches = observe(cluster, system, ns)
    try:
        name = f"warm-{tag}"
        submit(cluster.api, system, ns, [name], finish=True, concurrency=1)
        if not obs.wait(lambda: name in obs.jobs_with_pods(obs.pod_seen), timeout):
            raise RuntimeError(f"{system.name} did not create the warm-up job's pods within {timeout:.0f}s "
                               f"(exit code {proc.popen.poll()})")
        obs.wait(lambda: name in obs.job_finished, 30)
    finally:
        for w in watches:
            w.stop()
    return time.monotonic() - t


def run_workload(cluster: Cluster, system: System, n: int, logs: Path, settle: float, log: Callable[[str], None],
                 profile: Path | None = None, run: int = 0) -> Workload:
    assert cluster.api is not None
    ns = f"w{n}-{run}"
    cluster.namespace(ns)
    proc = system.start(cluster, logs, ns)
    try:
        if proc is not None:
            ready = wait_ready(cluster, system, proc, ns)
            log(f"{system.name}: operator ready in {ready:.1f}s")
            time.sleep(settle)
        obs, watches = observe(cluster, system, ns)
        names = job_names("job", 0, n)
        spy = None
        if profile is not None and proc is not None and isinstance(system, Ltj):
            # py-spy (the dev extra) samples the operator during the workload; raw = collapsed stacks.
            profile.mkdir(parents=True, exist_ok=True)
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                                    str(proc.popen.pid), "--rate", "200", "--format", "raw", "--threads", "--gil",
                                    "-o", str(profile / f"{system.name}-{n}.txt")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        cpu0 = proc.cpu() if proc else float("nan")
        operator = {system.name: proc.popen.pid} if proc else {}
        cluster0 = cluster.cpu(operator)
        timeout = 120 + 2.0 * n
        # Running is the job's status where there is a job object; the floors without one, both pods Running.
        pods_only = isinstance(system, Floor) and not system.with_job
        wall0, t0 = time.time(), time.monotonic()
        if isinstance(system, Floor):
            submitted = run_floor(cluster.api, system, ns, names, obs, timeout)
        else:
            submitted = submit(cluster.api, system, ns, names, finish=False, concurrency=8)
        if pods_only:
            ok = obs.wait(lambda: len(obs.jobs_with_pods(obs.pod_running)) >= n, timeout)
        else:
            ok = obs.wait(lambda: len(obs.job_running) >= n and len(obs.jobs_with_pods(obs.pod_seen)) >= n, timeout)
        t_end = time.monotonic()
        if not ok:
            log(f"{system.name} N={n}: timed out after {timeout:.0f}s")
        with obs.lock:
            created = {j: t for j, t in obs.jobs_with_pods(obs.pod_seen).items() if j in submitted}
            running = ({j: t for j, t in obs.jobs_with_pods(obs.pod_running).items() if j in submitted}
                       if pods_only else {j: t for j, t in obs.job_running.items() if j in submitted})
        time.sleep(settle)  # requests the last status changes cause still belong to this workload
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        wall_end = wall0 + (time.monotonic() - t0)
        w = Workload(system.name, n, t0, submitted, created, running)
        if proc is not None:
            w.cpu_s = proc.cpu() - cpu0
            w.rss_peak_mib = proc.peak_rss_mib()
        w.cluster_cpu_s = {k: v - cluster0[k] for k, v in cluster.cpu(operator).items() if k in cluster0}
        w.requests = cluster.audit({system.name: system.agents}, wall0, wall_end)[system.name]
        for wt in watches:
            wt.stop()
        s = w.summary()
        top = sorted(w.requests.items(), key=lambda kv: -kv[1])[:8]
        log(f"{system.name} N={n}: requests/job " + ", ".join(f"{k} {v / n:.1f}" for k, v in top))
        log(f"{system.name} N={n}: pods {seconds(s['created_total_s'])}s, running {seconds(s['running_total_s'])}s, "
            f"{fmt(s['requests_per_job'], 1)} req/job, peak RSS {fmt(s['rss_peak_mib'], 0)} MiB, "
            f"CPU {fmt(s['cpu_s'], 1)}s (wall {t_end - t0:.1f}s)")
        log(f"{system.name} N={n}: cluster CPU {fmt(s['cluster_cpu_s'], 1)}s: "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(w.cluster_cpu_s.items(), key=lambda kv: -kv[1])))
        return w
    finally:
        if proc is not None:
            proc.stop()
        gone = cluster.delete_namespace(ns)
        log(f"{system.name} N={n}: namespace deleted in {gone:.0f}s")


@dataclass
class ScalePoint:
    system: str
    jobs: int
    finished: int
    rss_mib: float
    rss_peak_mib: float
    idle_requests_per_min: float
    new_created_s: float
    new_running_s: float
    fill_s: float


def run_scale(cluster: Cluster, system: System, sizes: Sequence[int], logs: Path, idle_window: float,
              log: Callable[[str], None]) -> list[ScalePoint]:
    assert cluster.api is not None
    ns = "scale"
    cluster.namespace(ns)
    proc = system.start(cluster, logs, ns)
    assert proc is not None
    points: list[ScalePoint] = []
    try:
        wait_ready(cluster, system, proc, ns)
        obs, watches = observe(cluster, system, ns)
        present = 0
        probes = 0
        for size in sizes:
            t = time.monotonic()
            fill = max(0, size - present - 1)  # the probe job makes up the last one
            names = job_names("done", present, fill)
            submit(cluster.api, system, ns, names, finish=True, concurrency=8)
            present += fill
            want = set(names) | set(obs.job_finished)
            if not obs.wait(lambda: want <= set(obs.job_finished), 300 + 1.0 * fill):
                log(f"{system.name} scale {size}: only {len(obs.job_finished)} finished")
            fill_s = time.monotonic() - t
            # Idle means idle: the operator may still be working through its backlog.
            waited = cluster.quiesce(system.agents, 5.0, 180)
            log(f"{system.name} scale {size}: quiet after {waited:.0f}s more")
            wall0 = time.time()
            time.sleep(idle_window)
            idle = sum(cluster.audit({system.name: system.agents}, wall0, time.time())[system.name].values())
            rss = proc.rss_mib()
            probe = f"probe-{probes:02d}"
            probes += 1
            issued = submit(cluster.api, system, ns, [probe], finish=False, concurrency=1)
            obs.wait(lambda: probe in obs.job_running and probe in obs.jobs_with_pods(obs.pod_seen), 120)
            present += 1
            with obs.lock:
                created = obs.jobs_with_pods(obs.pod_seen).get(probe, float("nan")) - issued[probe]
                running = obs.job_running.get(probe, float("nan")) - issued[probe]
            p = ScalePoint(system.name, present, len(obs.job_finished), rss, proc.peak_rss_mib(),
                           idle * 60 / idle_window, created, running, fill_s)
            points.append(p)
            log(f"{system.name} scale {present} jobs ({p.finished} finished, filled in {fill_s:.0f}s): RSS "
                f"{rss:.0f} MiB, idle {p.idle_requests_per_min:.0f} req/min, new job pods {fmt(created)}s, "
                f"running {fmt(running)}s")
        for w in watches:
            w.stop()
    finally:
        proc.stop()
    return points


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def median_run(runs: Sequence[Workload]) -> Workload:
    """The run with the median time to all jobs Running (a single small run is mostly noise)."""
    def key(w: Workload) -> float:
        t = w.summary()["running_total_s"]
        return math.inf if math.isnan(t) else t

    return sorted(runs, key=key)[(len(runs) - 1) // 2]


def workload_rows(results: Sequence[Workload]) -> list[dict[str, Any]]:
    rows = []
    by = {(w.system, w.n): w.summary() for w in results}
    for w in results:
        s = by[(w.system, w.n)]
        row: dict[str, Any] = {"system": w.system, "n": w.n, **s}
        row.update({f"cpu_s:{proc}": v for proc, v in w.cluster_cpu_s.items()})
        if w.system == "ltj":
            for other in OTHERS:
                o = by.get((other, w.n))
                if o is not None:
                    row[f"created_vs_{other}"] = ratio(s["created_total_s"], o["created_total_s"])
                    row[f"running_vs_{other}"] = ratio(s["running_total_s"], o["running_total_s"])
        rows.append(row)
    return rows


def print_report(rows: Sequence[Mapping[str, Any]], points: Sequence[ScalePoint]) -> str:
    parts = []
    parts.append(table(
        ["system", "N", "pods p50 s", "pods p99 s", "pods total s", "Running p50 s", "Running p99 s",
         "Running total s", "API req/job", "writes/job", "peak RSS MiB", "CPU s", "cluster CPU s"],
        [[r["system"], r["n"], *(seconds(r[k]) for k in ("created_p50_s", "created_p99_s", "created_total_s",
                                                          "running_p50_s", "running_p99_s", "running_total_s")), fmt(r["requests_per_job"], 1), fmt(r["writes_per_job"], 1),
          fmt(r["rss_peak_mib"], 0), fmt(r["cpu_s"], 1), fmt(r["cluster_cpu_s"], 1)] for r in rows]))
    procs = sorted({k for r in rows for k in r if k.startswith("cpu_s:")},
                   key=lambda k: -sum(r.get(k, 0.0) for r in rows))
    if procs:
        # Where the machine's CPU went (operators under their system's name): what the time follows.
        parts.append(table(["system", "N", *[k.split(":", 1)[1] for k in procs]],
                           [[r["system"], r["n"], *[fmt(r.get(k, float("nan")), 1) for k in procs]] for r in rows]))
    ratios = [r for r in rows if r["system"] == "ltj"]
    cols = [f"{m}_vs_{o}" for o in OTHERS for m in ("created", "running") if any(f"{m}_vs_{o}" in r for r in ratios)]
    if cols:
        parts.append(table(["N", *[c.replace("created", "pods").replace("_vs_", " ltj/") for c in cols]],
                           [[r["n"], *[r.get(c, float("nan")) for c in cols]] for r in ratios]))
    if points:
        parts.append(table(["system", "jobs", "finished", "RSS MiB", "peak RSS MiB", "idle req/min",
                            "new job pods s", "new job Running s", "fill s"],
                           [[p.system, p.jobs, p.finished, fmt(p.rss_mib, 0), fmt(p.rss_peak_mib, 0),
                             fmt(p.idle_requests_per_min, 0), seconds(p.new_created_s), seconds(p.new_running_s),
                             fmt(p.fill_s, 0)]
                            for p in points]))
        by_sys: dict[str, list[ScalePoint]] = {}
        for p in points:
            by_sys.setdefault(p.system, []).append(p)
        growth = []
        for name, ps in by_sys.items():
            if len(ps) >= 2:
                a, b = ps[0], ps[-1]
                growth.append([name, f"{a.jobs}->{b.jobs}", fmt(b.rss_mib - a.rss_mib, 1),
                               fmt(1024 * (b.rss_mib - a.rss_mib) / (b.jobs - a.jobs), 1),
                               fmt(ratio(b.new_running_s, a.new_running_s), 2)])
        if growth:
            parts.append(table(["system", "jobs", "RSS growth MiB", "KiB/job", "new-job Running x"], growth))
    text = "\n\n".join(parts)
    print(text)
    return text


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], points: Sequence[ScalePoint]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["section", "system", "n", "metric", "value"])
        for r in rows:
            for k, v in r.items():
                if k not in ("system", "n"):
                    w.writerow(["workload", r["system"], r["n"], k, v])
        for p in points:
            for k in ("finished", "rss_mib", "rss_peak_mib", "idle_requests_per_min", "new_created_s",
                      "new_running_s", "fill_s"):
                w.writerow(["scale", p.system, p.jobs, k, getattr(p, k)])


def plot(path: Path, rows: Sequence[Mapping[str, Any]], points: Sequence[ScalePoint]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    systems = list(dict.fromkeys(r["system"] for r in rows))
    for ax, key, title in ((axes[0][0], "created_total_s", "submit -> all pods created (s)"),
                           (axes[0][1], "running_total_s", "submit -> all jobs Running (s)"),
                           (axes[1][0], "requests_per_job", "API requests per job")):
        for s in systems:
            rs = [r for r in rows if r["system"] == s]
            ax.plot([r["n"] for r in rs], [r[key] for r in rs], marker="o", label=s)
        ax.set_xlabel("jobs submitted at once (2 pods each)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax = axes[1][1]
    if points:
        ax2 = ax.twinx()
        for s in dict.fromkeys(p.system for p in points):
            ps = [p for p in points if p.system == s]
            ax.plot([p.jobs for p in ps], [p.rss_mib for p in ps], marker="o", label=f"{s} RSS (MiB)")
            ax2.plot([p.jobs for p in ps], [p.new_running_s for p in ps], marker="x", linestyle="--",
                     label=f"{s} new job Running (s)")
        ax.axhline(150, color="red", linewidth=0.8, linestyle=":", label="150 MiB goal")
        ax.set_xlabel("jobs present (most finished)")
        ax.set_ylabel("operator RSS (MiB)")
        ax2.set_ylabel("one new job: submit -> Running (s)")
        ax.set_title("steady state at scale")
        ax.legend(loc="upper left")
        ax2.legend(loc="lower right")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=lambda s: parse_sizes(s, "--sizes"), default=[1, 50, 200],
                    help="jobs submitted at once per workload [1,50,200]")
    ap.add_argument("--scale", type=lambda s: parse_sizes(s, "--scale"), default=[100, 1000],
                    help="jobs present for the steady-state points ('' to skip) [100,1000]")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"from {','.join(SYSTEMS)}")
    ap.add_argument("--scale-systems", default="ltj,peer-fast",
                    help="systems that also run the scale phase (the peer's default rate limit makes filling slow)")
    ap.add_argument("--peer-args", default="", help="extra training-operator flags, e.g. '--controller-threads=4'")
    ap.add_argument("--repeats", type=int, default=5,
                    help=f"runs of each workload of at most {SMALL_N} jobs; the median one is reported [5]")
    ap.add_argument("--repeats-large", type=int, default=3,
                    help="runs of each larger workload (machine noise moves one run by a third) [3]")
    ap.add_argument("--floor-concurrency", type=int, default=16)
    ap.add_argument("--settle", type=float, default=2.0, help="seconds of quiet before and after each workload")
    ap.add_argument("--idle-window", type=float, default=60.0,
                    help="seconds over which idle API requests are counted (>= our 60 s resync period)")
    ap.add_argument("--ltj-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment for our operator (e.g. LTJ_WORKERS=8); repeatable")
    ap.add_argument("--profile", action="store_true",
                    help="sample our operator with py-spy during each workload (raw stacks under the output dir)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--keep", action="store_true", help="keep the run directory (logs, audit logs)")
    args = ap.parse_args(argv)
    for flag in ("repeats", "repeats_large"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')}: must be >= 1")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    scale_systems = {s.strip() for s in args.scale_systems.split(",") if s.strip()}
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"--systems: unknown system {s!r} (choose from {', '.join(SYSTEMS)})")

    from ltj_localcluster.cluster import ensure_binaries

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ltj-scale-bench-"))
    logs = work / "logs"
    logs.mkdir()
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)

    bin_dir = ensure_binaries(kwok=True)
    ltj_env = dict(kv.split("=", 1) for kv in args.ltj_env)
    impls: dict[str, System] = {"ltj": Ltj(ltj_env), "peer": Peer(args.peer_args.split()),
                                "peer-fast": Peer([*PEER_FAST_ARGS, *args.peer_args.split()], "peer-fast"),
                                "floor": Floor(False, args.floor_concurrency),
                                "floor-all": Floor(True, args.floor_concurrency),
                                "floor-job": Floor(False, args.floor_concurrency, with_job=True)}
    for name in ("peer", "peer-fast"):
        if name in systems:
            impls[name].build()  # type: ignore[attr-defined]
    results: list[Workload] = []
    points: list[ScalePoint] = []
    # Every system on a fresh control plane of its own: the API server's cost of the same work grows with
    # what an earlier system left behind (deleted namespaces, Events), so sharing one would favour the first.
    try:
        for name in systems:
            cluster = Cluster(work / name, bin_dir, log)
            log(f"{name}: starting a fresh control plane")
            cluster.up()
            try:
                system = impls[name]
                system.setup(cluster)
                for n in args.sizes:
                    runs = [run_workload(cluster, system, n, logs, args.settle, log,
                                         out / "profiles" if args.profile else None, run=i)
                            for i in range(args.repeats if n <= SMALL_N else args.repeats_large)]
                    results.append(median_run(runs))
                if args.scale and name in scale_systems and not isinstance(system, Floor):
                    points.extend(run_scale(cluster, system, args.scale, logs, args.idle_window, log))
            finally:
                cluster.down()
    finally:
        if args.keep:
            log(f"run directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    rows = workload_rows(results)
    print()
    text = print_report(rows, points)
    write_csv(out / "operator_scale.csv", rows, points)
    plot(out / "operator_scale.png", rows, points)
    (out / "operator_scale.md").write_text(text + "\n")
    log(f"wrote {out / 'operator_scale.csv'}, {out / 'operator_scale.png'}, {out / 'operator_scale.md'} "
        f"(whole run {time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
