"""The runs and what they observe: per job, submit -> pods seen and -> Running from watches; the
operator's API requests (audit log), RSS and CPU, and the whole cluster's CPU in the window."""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .cluster import WRITE_VERBS, Cluster, Watch
from .report import fmt, seconds
from .systems import PODS_PER_JOB, Proc, System, job_names

def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    s = sorted(v for v in values if not math.isnan(v))
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


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
    # Every client's writes in the window (the system's, the controllers', the nodes'): what the API
    # server and etcd work through, and so what a saturated control plane's time follows.
    cluster_writes: int | None = None
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
            "cluster_writes_per_job": self.cluster_writes / self.n if self.cluster_writes is not None else float("nan"),
            "rss_peak_mib": self.rss_peak_mib,
            "cpu_s": self.cpu_s,
            "cluster_cpu_s": sum(self.cluster_cpu_s.values()) if self.cluster_cpu_s else float("nan"),
        }


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


def observe(cluster: Cluster, system: System, ns: str) -> tuple[Observer, list[Watch]]:
    assert cluster.api is not None
    obs = Observer(system)
    watches = [Watch(cluster.api, f"/api/v1/namespaces/{ns}/pods", obs.on_pod)]
    if system.has_jobs:
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
        cluster.namespace(ns, system.namespace_objects(ns))
    obs, watches = observe(cluster, system, ns)
    try:
        name = f"warm-{tag}"
        system.submit(cluster.api, ns, [name], True, 1, obs, timeout)
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
    cluster.namespace(ns, system.namespace_objects(ns))
    proc = system.start(cluster.info.kubeconfig, logs, ns)
    try:
        if proc is not None:
            ready = wait_ready(cluster, system, proc, ns)
            log(f"{system.name}: operator ready in {ready:.1f}s")
            time.sleep(settle)
        obs, watches = observe(cluster, system, ns)
        names = job_names("job", 0, n)
        spy = None
        if profile is not None and proc is not None:
            spy = system.profile(proc, profile / f"{system.name}-{n}.txt")
            if spy is not None:
                time.sleep(1.0)  # attached before the workload starts
        cpu0 = proc.cpu() if proc else float("nan")
        operator = {system.name: proc.popen.pid} if proc else {}
        cluster0 = cluster.cpu(operator)
        timeout = 120 + 2.0 * n
        # Running is the job's status where there is a job object; the floors without one, both pods Running.
        pods_only = not system.has_jobs
        wall0, t0 = time.time(), time.monotonic()
        submitted = system.submit(cluster.api, ns, names, False, 8, obs, timeout)
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
        # "" matches every user agent not the system's (the first matching prefix counts a request).
        counts = cluster.audit({system.name: system.agents, "": ("",)}, wall0, wall_end)
        w.requests = counts[system.name]
        w.cluster_writes = sum(v for c in counts.values() for k, v in c.items() if k.split()[0] in WRITE_VERBS)
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
    cluster.namespace(ns, system.namespace_objects(ns))
    proc = system.start(cluster.info.kubeconfig, logs, ns)
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
            system.submit(cluster.api, ns, names, True, 8, obs, 300 + 1.0 * fill)
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
            issued = system.submit(cluster.api, ns, [probe], False, 1, obs, 120)
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


def median_run(runs: Sequence[Workload]) -> Workload:
    """The run with the median time to all jobs Running (a single small run is mostly noise)."""
    def key(w: Workload) -> float:
        t = w.summary()["running_total_s"]
        return math.inf if math.isnan(t) else t

    return sorted(runs, key=key)[(len(runs) - 1) // 2]


