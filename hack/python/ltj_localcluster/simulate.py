"""`ltj-node-agent --simulate`: pods on the agent's nodes go Running without running anything.

For benchmarks of controllers (how fast an operator turns jobs into running gangs), where starting
real processes would measure the agent instead. Each pod bound to one of the agent's nodes is
reported Running at once with a made-up pod IP (from 100.64.0.0/10; no network namespace, volumes or
processes): non-sidecar init containers as completed, native sidecars and regular containers as
running. A pod annotated `sim.ltj.dev/exit-code: "<n>"` then ends after `sim.ltj.dev/run-seconds`
(default 0): every container terminated, the pod Succeeded for 0 and Failed otherwise, whatever its
restartPolicy. A deleted pod is gone at once (nothing runs, so there is no grace period to wait for).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .kubeapi import STRATEGIC_PATCH, ApiError, KubeApi
from .podstatus import (
    TERMINAL_PHASES,
    ContainerView,
    PodView,
    Running,
    Terminated,
    build_status,
    is_sidecar,
)
from .pods import container_id, patchable_status

log = logging.getLogger(__name__)

EXIT_CODE_ANNOTATION = "sim.ltj.dev/exit-code"
RUN_SECONDS_ANNOTATION = "sim.ltj.dev/run-seconds"
SIM_NETWORK = ipaddress.IPv4Network("100.64.0.0/10")


@dataclass(frozen=True)
class SimPlan:
    """What the annotations ask for: run forever (exit_code None) or end with exit_code after run_seconds."""

    exit_code: int | None = None
    run_seconds: float = 0.0


def plan_of(pod: Mapping[str, Any]) -> SimPlan:
    """The pod's simulation plan; malformed annotations are ignored (the pod just keeps running)."""
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    try:
        code = int(ann[EXIT_CODE_ANNOTATION]) if EXIT_CODE_ANNOTATION in ann else None
    except ValueError:
        code = None
    try:
        seconds = max(0.0, float(ann.get(RUN_SECONDS_ANNOTATION, 0)))
    except ValueError:
        seconds = 0.0
    if seconds != seconds:  # NaN
        seconds = 0.0
    return SimPlan(code, seconds)


def simulated_view(pod: Mapping[str, Any], pod_ip: str, host_ip: str, started_at: float,
                   finished_at: float | None = None, exit_code: int = 0) -> PodView:
    """All containers started at `started_at`; with `finished_at`, all terminated (regular ones with
    `exit_code`, sidecars with 0) and the pod terminal."""
    spec = pod.get("spec") or {}
    uid = (pod.get("metadata") or {}).get("uid", "")
    done = finished_at is not None

    def ended(name: str, code: int) -> Terminated:
        return Terminated(code, "Completed" if code == 0 else "Error", started_at, finished_at or started_at,
                          container_id=container_id(uid, name, 0))

    inits = []
    for c in spec.get("initContainers") or []:
        name, image = c["name"], c.get("image", "")
        if is_sidecar(c) and not done:
            inits.append(ContainerView(name, image, Running(started_at), started=True, ready=True,
                                       container_id=container_id(uid, name, 0)))
        else:
            inits.append(ContainerView(name, image, ended(name, 0), ready=not is_sidecar(c),
                                       container_id=container_id(uid, name, 0)))
    regular = []
    for c in spec.get("containers") or []:
        name, image = c["name"], c.get("image", "")
        if done:
            regular.append(ContainerView(name, image, ended(name, exit_code), container_id=container_id(uid, name, 0)))
        else:
            regular.append(ContainerView(name, image, Running(started_at), started=True, ready=True,
                                         container_id=container_id(uid, name, 0)))
    return PodView(sandbox_ready=not done, host_ip=host_ip, pod_ip=pod_ip, start_time=started_at,
                   init_statuses=tuple(inits), statuses=tuple(regular), terminal=done, has_initialized=True)


class SimIpPool:
    """Distinct addresses for live simulated pods (no network behind them)."""

    def __init__(self, network: ipaddress.IPv4Network = SIM_NETWORK) -> None:
        self.network = network
        self._next = 1
        self._used: set[str] = set()

    def take(self, wanted: str | None = None) -> str:
        if wanted and wanted not in self._used and ipaddress.IPv4Address(wanted) in self.network:
            self._used.add(wanted)
            return wanted
        size = self.network.num_addresses - 2
        for _ in range(size):
            ip = str(self.network.network_address + self._next)
            self._next = self._next % size + 1
            if ip not in self._used:
                self._used.add(ip)
                return ip
        raise RuntimeError(f"no free simulated pod IP left in {self.network}")

    def release(self, ip: str) -> None:
        self._used.discard(ip)


class _SimPod:
    def __init__(self, pod: dict[str, Any], ip: str) -> None:
        self.pod = pod
        self.ip = ip
        self.task: asyncio.Task[None] | None = None
        self.deleting = False
        self.wake = asyncio.Event()


class SimulatedPods:
    """Drop-in for PodManager: on_event(kind, pod) from the pod informer, shutdown() at exit."""

    def __init__(self, api: KubeApi, node_names: set[str], host_ip: str) -> None:
        self.api = api
        self.node_names = node_names
        self.host_ip = host_ip
        self.ips = SimIpPool()
        self.pods: dict[str, _SimPod] = {}

    async def on_event(self, kind: str, pod: dict[str, Any]) -> None:
        # Never awaits the API: the informer delivers events one at a time.
        if (pod.get("spec") or {}).get("nodeName") not in self.node_names:
            return
        meta = pod["metadata"]
        uid = meta["uid"]
        sim = self.pods.get(uid)
        if kind == "DELETE":
            if sim is not None:
                self._forget(uid, sim)
            return
        if sim is None:
            sim = _SimPod(pod, self.ips.take((pod.get("status") or {}).get("podIP")))
            self.pods[uid] = sim
            sim.task = asyncio.create_task(self._run(uid, sim), name=f"sim {meta['namespace']}/{meta['name']}")
        sim.pod = pod
        if meta.get("deletionTimestamp"):
            sim.deleting = True
        sim.wake.set()

    def _forget(self, uid: str, sim: _SimPod) -> None:
        if self.pods.get(uid) is sim:
            del self.pods[uid]
            self.ips.release(sim.ip)
        if sim.task is not None and sim.task is not asyncio.current_task():
            sim.task.cancel()

    async def _run(self, uid: str, sim: _SimPod) -> None:
        meta = sim.pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        path = f"/api/v1/namespaces/{ns}/pods/{name}"
        try:
            status = sim.pod.get("status") or {}
            started = time.time()
            sent: dict[str, Any] | None = None
            if not sim.deleting and status.get("phase") not in TERMINAL_PHASES:
                if status.get("phase") == "Running" and status.get("podIP"):
                    sent = dict(status)  # reported by an earlier agent: adopt it
                else:
                    sent = await self._report(path, uid, sim, started, None)
                plan = plan_of(sim.pod)
                if plan.exit_code is not None and sent is not None:
                    try:
                        await asyncio.wait_for(self._until_deleting(sim), plan.run_seconds)
                    except asyncio.TimeoutError:
                        await self._report(path, uid, sim, started, plan.exit_code, sent)
            await self._until_deleting(sim)
            body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                    "preconditions": {"uid": uid}}
            try:
                await self.api.delete(path, body)
            except ApiError as exc:
                if exc.status not in (404, 409):
                    raise
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one pod's failure must not stop the others
            log.exception("simulated pod %s/%s failed", ns, name)
        finally:
            self._forget(uid, sim)

    async def _until_deleting(self, sim: _SimPod) -> None:
        while not sim.deleting:
            await sim.wake.wait()
            sim.wake.clear()

    async def _report(self, path: str, uid: str, sim: _SimPod, started: float, exit_code: int | None,
                      previous: dict[str, Any] | None = None) -> dict[str, Any] | None:
        now = time.time()
        view = simulated_view(sim.pod, sim.ip, self.host_ip, started,
                              None if exit_code is None else now, exit_code or 0)
        status = build_status(sim.pod, view, now, (previous or {}).get("conditions"))
        body = {"metadata": {"uid": uid}, "status": patchable_status(status, previous)}
        try:
            await self.api.patch(path + "/status", body, STRATEGIC_PATCH)
        except ApiError as exc:
            if exc.status in (404, 409):
                return None  # gone, or a namesake: nothing to report
            raise
        return status

    async def shutdown(self) -> None:
        tasks = [s.task for s in self.pods.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
