"""Runs the pods bound to this agent's nodes, one level-based worker per pod (like kubelet's syncPod).

Each pass of a worker looks at the pod and its containers and does the next thing: create the
sandbox (network namespace, hosts file), set up volumes, run init containers in order (native
sidecars are started and kept running), start and restart regular containers per restartPolicy,
decide the pod is done, stop containers on deletion (regular first, then sidecars in reverse
order, SIGKILL after the grace period), report status, and finally confirm the deletion.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from .env import EnvConfigError, PodFacts, build_env, expand_argv, referenced_objects
from .hosts import entry_for, pod_hostname, render_resolv_conf
from .hostsfiles import HostsRegistry, PodHosts
from .images import ImageError, resolve_argv
from .kubeapi import STRATEGIC_PATCH, ApiError, KubeApi
from .logfmt import parse_entries, tail_text
from .logs_server import LogIndex
from .network import NetworkError, PodNetwork, Sandbox
from .podstatus import (
    FAILED,
    TERMINAL_PHASES,
    ContainerView,
    PodView,
    Running,
    Terminated,
    Waiting,
    build_status,
    is_sidecar,
)
from .runtime import ContainerProcess, ExitInfo, LaunchSpec
from .volumes import BindMount, PodVolumes, VolumeError, sort_mounts

log = logging.getLogger(__name__)

MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
DEFAULT_GRACE = 30
SIDECAR_MIN_GRACE = 2.0
STABLE_RUN_RESETS_BACKOFF = 600.0


@dataclass
class AgentContext:
    api: KubeApi
    network: PodNetwork
    hosts: HostsRegistry
    logs: LogIndex
    state_dir: Path
    host_ip: str
    service_env: Mapping[str, str]
    allocatable: Mapping[str, Decimal]
    base_env: Mapping[str, str]
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    refresh_interval: float = 60.0

    def pod_dir(self, uid: str) -> Path:
        return self.state_dir / "kubelet" / "pods" / uid

    def pid_dir(self, ns: str, name: str) -> Path:
        return self.state_dir / "pods" / ns / name


@dataclass
class ContainerRun:
    spec: dict[str, Any]
    kind: str  # "init" | "sidecar" | "regular"
    starts: int = 0  # instances started so far (continues the count of a pod taken over)
    proc: ContainerProcess | None = None
    last: Terminated | None = None
    prev: Terminated | None = None
    waiting: Waiting | None = None
    next_start: float | None = 0.0  # monotonic time the next start is due; None: not scheduled
    done: bool = False
    crashes: int = 0
    term_sent: bool = False
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def running(self) -> bool:
        return self.proc is not None

    def due(self, now: float) -> bool:
        return not self.running and not self.done and self.next_start is not None and now >= self.next_start


def container_id(uid: str, name: str, instance: int) -> str:
    return "ltj://" + hashlib.sha256(f"{uid}/{name}/{instance}".encode()).hexdigest()[:32]


def _parse_api_time(text: str | None) -> float:
    from .logfmt import parse_time_ns

    try:
        return parse_time_ns(text) / 1e9 if text else time.time()
    except ValueError:
        return time.time()


def terminated_from_api(d: Mapping[str, Any]) -> Terminated:
    return Terminated(
        exit_code=int(d.get("exitCode", 0)),
        reason=d.get("reason", ""),
        started_at=_parse_api_time(d.get("startedAt")),
        finished_at=_parse_api_time(d.get("finishedAt")),
        message=d.get("message", ""),
        signal=d.get("signal"),
        container_id=d.get("containerID", ""),
    )


class PodWorker:
    def __init__(self, ctx: AgentContext, pod: dict[str, Any]) -> None:
        self.ctx = ctx
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.wake = asyncio.Event()
        self.gone = False
        self.shutting_down = False
        self.containers: dict[str, ContainerRun] = {}
        spec = pod.get("spec", {})
        for c in spec.get("initContainers") or []:
            self.containers[c["name"]] = ContainerRun(c, "sidecar" if is_sidecar(c) else "init")
        for c in spec.get("containers") or []:
            self.containers[c["name"]] = ContainerRun(c, "regular")
        self.sandbox: Sandbox | None = None
        self.sandbox_torn_down = False
        self.pod_ip: str | None = None
        self.volumes: PodVolumes | None = None
        self.volumes_ready = False
        self.retry_at: float | None = None
        self.retry_delay = 1.0
        self.next_refresh = 0.0
        self.start_time: float | None = None
        self.initialized = False
        self.terminal = False
        self.phase_override: str | None = None
        self.reason: str | None = None
        self.message: str | None = None
        self.stop_started: float | None = None
        self.stop_deadline: float | None = None
        self.adopted_terminal = False
        self.report_retry_at: float | None = None
        self._last_sent: dict[str, Any] | None = None
        self._sent_conditions: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ events

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.ctx.hosts.hide(self.uid)
        self.wake.set()

    def mark_gone(self) -> None:
        self.gone = True
        self.wake.set()

    def stop_for_shutdown(self) -> None:
        self.shutting_down = True
        self.wake.set()

    # ------------------------------------------------------------------ helpers

    @property
    def spec(self) -> dict[str, Any]:
        return self.pod.get("spec", {})

    @property
    def restart_policy(self) -> str:
        return self.spec.get("restartPolicy", "Always")

    def deleting(self) -> bool:
        return bool(self.pod["metadata"].get("deletionTimestamp"))

    def _grace(self) -> float:
        meta = self.pod["metadata"]
        if self.deleting() and meta.get("deletionGracePeriodSeconds") is not None:
            return float(meta["deletionGracePeriodSeconds"])
        value = self.spec.get("terminationGracePeriodSeconds")
        return float(DEFAULT_GRACE if value is None else value)

    def _ordered(self, kind: str) -> list[ContainerRun]:
        return [c for c in self.containers.values() if c.kind == kind]

    def running_containers(self) -> list[ContainerRun]:
        return [c for c in self.containers.values() if c.running]

    @property
    def pod_dir(self) -> Path:
        return self.ctx.pod_dir(self.uid)

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            self.kill_all()
            raise
        except Exception as exc:
            # A bug must not make the pod run twice: fail it and wait for its deletion.
            log.exception("pod %s/%s: worker failed", self.ns, self.name)
            self.kill_all()
            await self._wait_all_exited(10)
            self.terminal = True
            self.phase_override = FAILED
            self.reason, self.message = "NodeAgentError", f"ltj-node-agent: {exc}"
            await self._finish()

    async def _run(self) -> None:
        self._adopt_existing_status()
        while True:
            if self.gone or self.shutting_down:
                await self._stop_now()
                break
            if self.deleting() or self.terminal:
                self._stop_step()
                if not self.running_containers():
                    break
            else:
                await self._sync_step()
            await self._report()
            await self._sleep_until_next()
        await self._finish()

    async def _finish(self) -> None:
        """All containers stopped: remove the sandbox, report the final status, confirm deletion."""
        await self.teardown_sandbox()
        if self.gone or self.shutting_down:
            return
        await self._report()
        if not self.adopted_terminal:
            log.info("pod %s/%s finished (%s)", self.ns, self.name, (self._last_sent or {}).get("phase", "?"))
        while not self.gone and not self.shutting_down:
            if self.deleting():
                await self._finalize_delete()
            try:
                await asyncio.wait_for(self.wake.wait(), 5.0 if self.deleting() else None)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()

    async def _sleep_until_next(self) -> None:
        now = time.monotonic()
        # Past-due starts are blocked (e.g. behind an init container): an event will wake us.
        times = [
            c.next_start
            for c in self.containers.values()
            if not c.running and not c.done and c.next_start is not None and c.next_start > now
        ]
        for t in (self.retry_at, self.stop_deadline, self.report_retry_at):
            if t is not None:
                times.append(t)
        if self.volumes_ready and not self.terminal:
            times.append(self.next_refresh)
        deadline = self._active_deadline()
        if deadline is not None and not self.terminal:
            times.append(deadline)
        timeout = max(0.0, min(times) - now) if times else None
        if timeout is not None:
            timeout = max(timeout, 0.01)
        try:
            await asyncio.wait_for(self.wake.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        self.wake.clear()

    def _adopt_existing_status(self) -> None:
        """Take over a pod an earlier agent ran (its processes are gone), like a kubelet restart."""
        status = self.pod.get("status", {})
        if status.get("startTime"):
            self.start_time = _parse_api_time(status["startTime"])
        if status.get("phase") in TERMINAL_PHASES:
            self.terminal = True
            self.adopted_terminal = True
            for c in self.containers.values():
                c.done = True
            return
        seen = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        started = False
        for st in seen:
            c = self.containers.get(st.get("name", ""))
            if c is None:
                continue
            state = st.get("state") or {}
            ran = "running" in state or "terminated" in state or bool(st.get("lastState"))
            if not ran:
                continue
            started = True
            c.starts = int(st.get("restartCount", 0)) + 1
            if "terminated" in state:
                c.last = terminated_from_api(state["terminated"])
        if not started:
            return
        if self.restart_policy == "Never":
            # The containers cannot be restarted and their fate is unknown: the pod failed.
            now = time.time()
            for c in self.containers.values():
                if c.last is None or c.kind == "sidecar":
                    c.last = Terminated(137, "ContainerStatusUnknown", now, now,
                                        "The container could not be located when the pod was terminated")
                c.done = True
            self.terminal = True
            self.initialized = True
            log.info("pod %s/%s was running before this agent started; marking it failed", self.ns, self.name)
        else:
            for c in self.containers.values():
                c.last = None

    # ------------------------------------------------------------------ sync

    def _active_deadline(self) -> float | None:
        ads = self.spec.get("activeDeadlineSeconds")
        if ads is None or self.start_time is None:
            return None
        return time.monotonic() + (self.start_time + float(ads) - time.time())

    async def _sync_step(self) -> None:
        now = time.monotonic()
        if self.start_time is None:
            self.start_time = time.time()
        deadline = self._active_deadline()
        if deadline is not None and now >= deadline:
            self.terminal = True
            self.phase_override = FAILED
            self.reason = "DeadlineExceeded"
            self.message = "Pod was active on the node longer than the specified deadline"
            return
        if self.retry_at is not None and now < self.retry_at:
            return
        self.retry_at = None
        if self.sandbox is None and not self.sandbox_torn_down:
            try:
                await self._setup_sandbox()
            except (NetworkError, OSError) as exc:
                log.warning("pod %s/%s: sandbox: %s", self.ns, self.name, exc)
                self._retry_later()
                return
        if not self.volumes_ready:
            assert self.volumes is not None
            try:
                await self.volumes.setup()
            except Exception as exc:  # noqa: BLE001 - VolumeError, or the API unreachable: retry later
                log.info("pod %s/%s: %s", self.ns, self.name, exc)
                self._set_waiting_all(Waiting("ContainerCreating", str(exc)))
                self._retry_later()
                return
            self.volumes_ready = True
            self.retry_delay = 1.0
            self._set_waiting_all(None)
            self.next_refresh = now + self._refresh_period()
        elif now >= self.next_refresh:
            assert self.volumes is not None
            await self.volumes.refresh(self.pod)
            self.next_refresh = time.monotonic() + self._refresh_period()

        if not self.initialized:
            for c in self._ordered_init():
                if c.kind == "sidecar":
                    if not c.running and c.due(now):
                        await self._start(c)
                    if c.running:
                        continue
                    return  # a sidecar that is not up blocks the init containers after it
                if c.done and c.last is not None and c.last.exit_code == 0:
                    continue
                if c.running:
                    return
                if c.done:  # failed and restartPolicy Never
                    self.terminal = True
                    return
                if c.due(now):
                    await self._start(c)
                return
            self.initialized = True

        for c in self._ordered("regular"):
            if c.due(now):
                await self._start(c)
        for c in self._ordered("sidecar"):
            if c.due(now):
                await self._start(c)
        regular = self._ordered("regular")
        if regular and all(c.done for c in regular):
            self.terminal = True

    def _ordered_init(self) -> list[ContainerRun]:
        return [c for c in self.containers.values() if c.kind in ("init", "sidecar")]

    def _refresh_period(self) -> float:
        period = self.ctx.refresh_interval
        if self.volumes is not None:
            due = self.volumes.next_token_refresh()
            if due is not None:
                period = min(period, max(1.0, due - time.time()))
        return period

    def _retry_later(self) -> None:
        self.retry_at = time.monotonic() + self.retry_delay
        self.retry_delay = min(self.retry_delay * 2, 10.0)

    def _set_waiting_all(self, waiting: Waiting | None) -> None:
        for c in self.containers.values():
            if not c.running and c.starts == 0:
                c.waiting = waiting

    async def _setup_sandbox(self) -> None:
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        if self.spec.get("hostNetwork"):
            self.pod_ip = self.ctx.host_ip
        else:
            # An adopted pod keeps its IP when it is free (peers' hosts files stay right).
            self.sandbox = await self.ctx.network.setup(self.uid, self.pod.get("status", {}).get("podIP"))
            self.pod_ip = self.sandbox.ip
        hostname = pod_hostname(self.pod)
        (self.pod_dir / "hostname").write_text(hostname + "\n")
        (self.pod_dir / "resolv.conf").write_text(render_resolv_conf(self.ns, self.spec.get("dnsConfig")))
        if self.spec.get("hostNetwork"):
            # Host-network pods use the host's files; their address is no use to pods in namespaces.
            self.volumes = PodVolumes(self.ctx.api, self.pod, self.pod_dir, self._facts())
            self.ctx.logs.register(self.ns, self.name, self.uid)
            return
        self.ctx.hosts.add(
            self.uid,
            PodHosts(
                entry=entry_for(self.pod, self.pod_ip),
                pod_name=self.name,
                path=self.pod_dir / "etc-hosts",
                created=self.pod["metadata"].get("creationTimestamp", ""),
                aliases=tuple(self.spec.get("hostAliases") or ()),
            ),
        )
        if self.deleting():
            self.ctx.hosts.hide(self.uid)
        self.volumes = PodVolumes(self.ctx.api, self.pod, self.pod_dir, self._facts())
        self.ctx.logs.register(self.ns, self.name, self.uid)

    def _facts(self) -> PodFacts:
        return PodFacts(pod_ip=self.pod_ip or "", host_ip=self.ctx.host_ip, node_allocatable=self.ctx.allocatable)

    async def _container_env(self, spec: Mapping[str, Any]) -> list[tuple[str, str]]:
        cm_names, secret_names = referenced_objects(spec)
        cms = {n: await self.ctx.api.get_or_none(f"/api/v1/namespaces/{self.ns}/configmaps/{n}") for n in cm_names}
        secrets = {n: await self.ctx.api.get_or_none(f"/api/v1/namespaces/{self.ns}/secrets/{n}") for n in secret_names}
        return build_env(
            self.pod, spec, config_maps=cms, secrets=secrets, service_env=self.ctx.service_env, facts=self._facts()
        )

    def _system_mounts(self, spec: Mapping[str, Any], run_dir: Path) -> list[BindMount]:
        user_targets = {vm.get("mountPath") for vm in spec.get("volumeMounts") or []}
        mounts: list[BindMount] = []
        if not self.spec.get("hostNetwork"):
            if "/etc/hosts" not in user_targets:
                mounts.append(BindMount(str(self.pod_dir / "etc-hosts"), "/etc/hosts", False))
            if "/etc/hostname" not in user_targets:
                mounts.append(BindMount(str(self.pod_dir / "hostname"), "/etc/hostname", False))
            if self.spec.get("dnsPolicy") != "Default" and "/etc/resolv.conf" not in user_targets:
                mounts.append(BindMount(str(self.pod_dir / "resolv.conf"), "/etc/resolv.conf", False))
        term_path = spec.get("terminationMessagePath") or "/dev/termination-log"
        if term_path not in user_targets:
            term_file = run_dir / "termination-log"
            term_file.touch()
            mounts.append(BindMount(str(term_file), term_path, False))
        return mounts

    async def _start(self, c: ContainerRun) -> None:
        instance = c.starts
        run_dir = self.pod_dir / "containers" / c.name / str(instance)
        now = time.time()
        try:
            env = await self._container_env(c.spec)
            argv = expand_argv(resolve_argv(c.spec.get("image", ""), c.spec.get("command"), c.spec.get("args")), env)
            assert self.volumes is not None
            run_dir.mkdir(parents=True, exist_ok=True)
            mounts = sort_mounts([*self.volumes.mounts_for(c.spec, env), *self._system_mounts(c.spec, run_dir)])
        except EnvConfigError as exc:
            c.waiting = Waiting("CreateContainerConfigError", str(exc))
            c.next_start = time.monotonic() + 5.0
            log.info("pod %s/%s container %s: %s", self.ns, self.name, c.name, exc)
            return
        except (ApiError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            c.waiting = Waiting("CreateContainerConfigError", f"reading referenced objects: {exc}")
            c.next_start = time.monotonic() + 5.0
            return
        except (ImageError, VolumeError, OSError) as exc:
            c.starts += 1
            self._record_exit(c, instance, ExitInfo(128, None, "StartError", str(exc), now, now))
            return
        hostname = pod_hostname(self.pod)
        full_env = {**self.ctx.base_env, "HOSTNAME": hostname, **dict(env)}
        log_path = self.ctx.logs.log_path(self.ns, self.name, self.uid, c.name, instance)
        proc = ContainerProcess(run_dir, log_path, self.ctx.pid_dir(self.ns, self.name) / f"{c.name}.pid")
        await proc.start(
            LaunchSpec(
                argv=argv,
                env=full_env,
                cwd=c.spec.get("workingDir") or "/",
                hostname=hostname,
                netns=self.sandbox.netns_path if self.sandbox else None,
                mounts=mounts,
            )
        )
        c.proc = proc
        c.starts += 1
        c.waiting = None
        c.next_start = None
        c.term_sent = False
        state = self.ctx.logs.container(self.ns, self.name, self.uid, c.name)
        state.instance, state.running = instance, True
        log.info("pod %s/%s: started container %s (instance %d, pid %s): %s", self.ns, self.name, c.name, instance, proc.pid, argv)
        c.watcher = asyncio.create_task(self._watch(c, proc, instance))

    async def _watch(self, c: ContainerRun, proc: ContainerProcess, instance: int) -> None:
        info = await proc.wait()
        if c.proc is proc:
            c.proc = None
        self.ctx.logs.container(self.ns, self.name, self.uid, c.name).running = False
        self._record_exit(c, instance, info)

    def _termination_message(self, c: ContainerRun, instance: int, info: ExitInfo) -> str:
        run_dir = self.pod_dir / "containers" / c.name / str(instance)
        try:
            with open(run_dir / "termination-log", "rb") as f:
                msg = f.read(MAX_TERMINATION_MESSAGE).decode("utf-8", errors="replace")
        except OSError:
            msg = ""
        policy = c.spec.get("terminationMessagePolicy") or "File"
        if not msg and policy == "FallbackToLogsOnError" and info.exit_code != 0:
            try:
                data = self.ctx.logs.log_path(self.ns, self.name, self.uid, c.name, instance).read_bytes()
            except OSError:
                data = b""
            entries, _ = parse_entries(data[-256 * 1024 :])
            msg = tail_text(entries, FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES)
        return msg or info.message

    def _record_exit(self, c: ContainerRun, instance: int, info: ExitInfo) -> None:
        term = Terminated(
            exit_code=info.exit_code,
            reason=info.reason,
            started_at=info.started_at,
            finished_at=info.finished_at,
            message=self._termination_message(c, instance, info),
            signal=info.signal,
            container_id=container_id(self.uid, c.name, instance),
        )
        c.prev, c.last = c.last, term
        log.info(
            "pod %s/%s: container %s exited with %d (%s)", self.ns, self.name, c.name, info.exit_code, info.reason
        )
        stopping = self.terminal or self.deleting() or self.gone or self.shutting_down
        if stopping:
            c.done, c.next_start = True, None
        elif c.kind == "init":
            if info.exit_code == 0 or self.restart_policy == "Never":
                c.done, c.next_start = True, None
            else:
                c.next_start = self._backoff(c, info)
        elif c.kind == "sidecar":
            c.next_start = self._backoff(c, info)
        else:
            restart = self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and info.exit_code != 0)
            if restart:
                c.next_start = self._backoff(c, info)
            else:
                c.done, c.next_start = True, None
        self.wake.set()

    def _backoff(self, c: ContainerRun, info: ExitInfo) -> float:
        """First restart at once, then base, 2*base, ... up to max (reset after a long, stable run)."""
        if info.finished_at - info.started_at >= STABLE_RUN_RESETS_BACKOFF:
            c.crashes = 0
        delay = 0.0 if c.crashes == 0 else min(self.ctx.backoff_base * 2 ** (c.crashes - 1), self.ctx.backoff_max)
        c.crashes += 1
        return time.monotonic() + delay

    # ------------------------------------------------------------------ stopping

    def _stop_step(self) -> None:
        """Regular containers first, then sidecars one by one in reverse order; SIGKILL at the deadline."""
        now = time.monotonic()
        for c in self.containers.values():
            if not c.running:
                c.done, c.next_start = True, None
        grace = self._grace()
        if self.stop_started is None or self.stop_deadline is None:
            self.stop_started, self.stop_deadline = now, now + grace
        elif self.deleting() and now < self.stop_deadline:
            # A second delete may shorten the grace period.
            self.stop_deadline = min(self.stop_deadline, max(now, self.stop_started + grace))
        if now >= self.stop_deadline:
            for c in self.running_containers():
                if c.proc is not None:
                    c.proc.kill()
            self.stop_deadline = now + 1.0  # look again in a second (the exits wake us sooner)
            return
        main = [c for c in self.running_containers() if c.kind != "sidecar"]
        if main:
            for c in main:
                if not c.term_sent and c.proc is not None:
                    c.proc.signal(signal.SIGTERM)
                    c.term_sent = True
            return
        sidecars = [c for c in self._ordered("sidecar") if c.running]
        if sidecars:
            last = sidecars[-1]
            if not last.term_sent and last.proc is not None:
                self.stop_deadline = max(self.stop_deadline, now + SIDECAR_MIN_GRACE)
                last.proc.signal(signal.SIGTERM)
                last.term_sent = True

    def kill_all(self) -> None:
        for c in self.containers.values():
            c.done, c.next_start = True, None
            if c.proc is not None:
                c.proc.kill()

    async def _wait_all_exited(self, timeout: float) -> None:
        tasks = [c.watcher for c in self.containers.values() if c.watcher is not None and not c.watcher.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def _stop_now(self) -> None:
        """Pod object gone (force-deleted) or agent shutdown: SIGTERM briefly on shutdown, then SIGKILL."""
        if self.shutting_down and not self.gone:
            for c in self.running_containers():
                if c.proc is not None:
                    c.proc.signal(signal.SIGTERM)
            await self._wait_all_exited(2.0)
        self.kill_all()
        await self._wait_all_exited(10.0)

    async def teardown_sandbox(self) -> None:
        """Remove the pod's network namespace, volumes and files (idempotent)."""
        self.ctx.hosts.remove(self.uid)
        volumes, self.volumes = self.volumes, None
        if volumes is not None:
            await volumes.teardown()
        if self.sandbox is not None:
            try:
                await self.ctx.network.teardown(self.uid)
            except Exception as exc:  # noqa: BLE001 - cleanup is best effort
                log.warning("pod %s/%s: network teardown: %s", self.ns, self.name, exc)
            self.sandbox = None
        self.sandbox_torn_down = True
        pid_dir = self.ctx.pid_dir(self.ns, self.name)
        try:
            pid_dir.rmdir()
        except OSError:
            pass

    async def _finalize_delete(self) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
        try:
            await self.ctx.api.delete(f"/api/v1/namespaces/{self.ns}/pods/{self.name}", body)
        except ApiError as exc:
            if exc.status in (404, 409):
                self.gone = True
            else:
                log.warning("pod %s/%s: delete failed: %s", self.ns, self.name, exc)
        except Exception as exc:  # noqa: BLE001 - API unreachable: the caller retries
            log.warning("pod %s/%s: delete failed: %s", self.ns, self.name, exc)

    # ------------------------------------------------------------------ status

    def _view_of(self, c: ContainerRun) -> ContainerView:
        image = c.spec.get("image", "")
        restarts = max(0, c.starts - 1)
        if c.proc is not None:
            return ContainerView(
                name=c.name,
                image=image,
                state=Running(c.proc.started_at),
                last_state=c.last,
                restart_count=restarts,
                started=True,
                ready=c.kind != "init",
                container_id=container_id(self.uid, c.name, c.starts - 1),
            )
        if c.last is not None and (c.done or c.next_start is None):
            return ContainerView(
                name=c.name,
                image=image,
                state=c.last,
                last_state=c.prev,
                restart_count=restarts,
                started=False,
                ready=c.kind == "init" and c.last.exit_code == 0,
                container_id=c.last.container_id,
            )
        if c.last is not None:
            waiting = c.waiting or Waiting(
                "CrashLoopBackOff",
                f"back-off restarting failed container={c.name} pod={self.name}_{self.ns}({self.uid})",
            )
            return ContainerView(name=c.name, image=image, state=waiting, last_state=c.last, restart_count=restarts)
        if c.waiting is not None:
            waiting = c.waiting
        elif c.kind == "regular" and not self.initialized and self._ordered_init():
            waiting = Waiting("PodInitializing")
        elif c.kind != "regular":
            waiting = Waiting("PodInitializing")
        else:
            waiting = Waiting("ContainerCreating")
        return ContainerView(name=c.name, image=image, state=waiting, restart_count=restarts)

    def view(self) -> PodView:
        inits = tuple(self._view_of(c) for c in self._ordered_init())
        regular = tuple(self._view_of(c) for c in self._ordered("regular"))
        stopped_for_delete = self.deleting() and not self.running_containers() and self.stop_started is not None
        return PodView(
            sandbox_ready=self.sandbox is not None or (bool(self.spec.get("hostNetwork")) and not self.sandbox_torn_down and self.pod_ip is not None),
            host_ip=self.ctx.host_ip,
            pod_ip=self.pod_ip,
            start_time=self.start_time,
            init_statuses=inits,
            statuses=regular,
            terminal=(self.terminal and not self.running_containers()) or stopped_for_delete,
            has_initialized=self.initialized,
            reason=self.reason,
            message=self.message,
            phase_override=self.phase_override,
        )

    async def _report(self) -> None:
        if self.adopted_terminal or self.gone or self.shutting_down:
            return
        status = build_status(self.pod, self.view(), time.time(), self._sent_conditions)
        if status == self._last_sent:
            return
        body = {"metadata": {"uid": self.uid}, "status": patchable_status(status, self._last_sent)}
        try:
            await self.ctx.api.patch(f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status", body, STRATEGIC_PATCH)
        except ApiError as exc:
            if exc.status in (404, 409):
                self.gone = True
                return
            log.warning("pod %s/%s: status update failed: %s", self.ns, self.name, exc)
            self.report_retry_at = time.monotonic() + 5.0
            return
        except Exception as exc:  # noqa: BLE001 - API unreachable (after retries): try again later
            log.warning("pod %s/%s: status update failed: %s", self.ns, self.name, exc)
            self.report_retry_at = time.monotonic() + 5.0
            return
        self.report_retry_at = None
        self._last_sent = status
        self._sent_conditions = status["conditions"]


def patchable_status(status: dict[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """Strategic merge merges conditions by type and maps key by key: null out dropped fields."""
    out = dict(status)
    # podIPs/hostIPs merge by ip: replace them, or a changed IP would be added as a second one.
    for key in ("podIPs", "hostIPs"):
        if key in out:
            out[key] = [*out[key], {"$patch": "replace"}]
    out["conditions"] = [
        {**{"reason": None, "message": None}, **c} for c in status.get("conditions", [])
    ]
    for key in ("reason", "message"):
        if key not in out and previous and key in previous:
            out[key] = None
    return out


class PodManager:
    """Routes pod events to per-pod workers (keyed by UID)."""

    def __init__(self, ctx: AgentContext, node_names: set[str]) -> None:
        self.ctx = ctx
        self.node_names = node_names
        self.workers: dict[str, PodWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._by_key: dict[str, str] = {}

    async def on_event(self, kind: str, pod: dict[str, Any]) -> None:
        if pod.get("spec", {}).get("nodeName") not in self.node_names:
            return
        meta = pod["metadata"]
        uid, key = meta["uid"], f"{meta['namespace']}/{meta['name']}"
        if kind == "DELETE":
            worker = self.workers.get(uid)
            if worker is not None:
                worker.mark_gone()
            return
        old = self._by_key.get(key)
        if old is not None and old != uid and old in self.workers:
            self.workers[old].mark_gone()  # the name now belongs to a new pod: the old one is gone
        self._by_key[key] = uid
        worker = self.workers.get(uid)
        if worker is None:
            worker = PodWorker(self.ctx, pod)
            self.workers[uid] = worker
            self._tasks[uid] = asyncio.create_task(self._run(worker, key))
        else:
            worker.update(pod)

    async def _run(self, worker: PodWorker, key: str) -> None:
        try:
            await worker.run()
        finally:
            self.ctx.logs.forget(worker.uid)
            self.workers.pop(worker.uid, None)
            self._tasks.pop(worker.uid, None)
            if self._by_key.get(key) == worker.uid:
                del self._by_key[key]

    async def shutdown(self, grace: float = 2.0) -> None:
        """Agent exit: SIGTERM every container, SIGKILL after `grace`, then remove the sandboxes.

        Done here rather than by the workers, which may be stuck talking to a gone API server.
        """
        workers = list(self.workers.values())
        for worker in workers:
            worker.shutting_down = True
            for c in worker.running_containers():
                if c.proc is not None:
                    c.proc.signal(signal.SIGTERM)
        watchers = [c.watcher for w in workers for c in w.containers.values() if c.watcher is not None and not c.watcher.done()]
        if watchers:
            await asyncio.wait(watchers, timeout=grace)
        for worker in workers:
            worker.kill_all()
        if watchers:
            await asyncio.wait(watchers, timeout=10)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for worker in workers:
            await worker.teardown_sandbox()


def default_base_env(venv_bin: str) -> dict[str, str]:
    """The emulated image environment: the repo venv's bin first on PATH."""
    path = os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    parts = [venv_bin, *[p for p in path.split(":") if p and p != venv_bin]]
    return {
        "PATH": ":".join(parts),
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }
