"""The kubelet's log endpoint, so `kubectl logs` works: GET /containerLogs/{ns}/{pod}/{container}.

The API server proxies pod log requests here (node InternalIP + daemonEndpoints port). Query:
follow, previous, tailLines, limitBytes, timestamps, sinceSeconds, sinceTime. No client auth.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from .logfmt import LogEntry, LogOptions, LogOptionsError, options_from_query, parse_entries, render_entries, select_entries

log = logging.getLogger(__name__)


@dataclass
class ContainerLogState:
    instance: int = -1  # current (or last) instance number; -1: never started
    running: bool = False
    waiting_reason: str = "ContainerCreating"


@dataclass
class PodLogs:
    uid: str
    directory: Path
    containers: dict[str, ContainerLogState] = field(default_factory=dict)


class LogIndex:
    """Where each known pod's logs are, and which container instances are running.

    A name can belong to two pods at once (a terminating one and its replacement); requests by
    name go to the pod registered last.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.by_uid: dict[str, PodLogs] = {}
        self.current: dict[tuple[str, str], str] = {}

    def pod_dir(self, ns: str, name: str, uid: str) -> Path:
        return self.root / f"{ns}_{name}_{uid}"

    def _pod(self, ns: str, name: str, uid: str) -> PodLogs:
        found = self.by_uid.get(uid)
        if found is None:
            found = self.by_uid[uid] = PodLogs(uid, self.pod_dir(ns, name, uid))
        return found

    def register(self, ns: str, name: str, uid: str) -> PodLogs:
        """A pod that now owns the name (its sandbox was just created)."""
        self.current[(ns, name)] = uid
        return self._pod(ns, name, uid)

    def forget(self, uid: str) -> None:
        self.by_uid.pop(uid, None)
        for key, value in list(self.current.items()):
            if value == uid:
                del self.current[key]

    def container(self, ns: str, name: str, uid: str, container: str) -> ContainerLogState:
        return self._pod(ns, name, uid).containers.setdefault(container, ContainerLogState())

    def log_path(self, ns: str, name: str, uid: str, container: str, instance: int) -> Path:
        return self.pod_dir(ns, name, uid) / container / f"{instance}.log"

    def lookup(self, ns: str, name: str) -> PodLogs | None:
        uid = self.current.get((ns, name))
        if uid is not None and uid in self.by_uid:
            return self.by_uid[uid]
        # A pod this agent no longer tracks (deleted, or from before a restart): the newest directory.
        candidates = sorted(self.root.glob(f"{ns}_{name}_*"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            return None
        uid = candidates[-1].name[len(f"{ns}_{name}_") :]
        return PodLogs(uid, candidates[-1])


class LogsServer:
    def __init__(self, index: LogIndex, poll_interval: float = 0.2) -> None:
        self.index = index
        self.poll = poll_interval
        self.app = web.Application()
        self.app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self.handle_logs)
        self.app.router.add_get("/healthz", self.handle_healthz)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context, reuse_address=True)
        await site.start()
        server = site._server  # noqa: SLF001 - the only way to learn an ephemeral port
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle_healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _bad(self, message: str, status: int = 400) -> web.Response:
        return web.Response(status=status, text=message)

    async def handle_logs(self, request: web.Request) -> web.StreamResponse:
        ns, pod, container = (request.match_info[k] for k in ("ns", "pod", "container"))
        try:
            opts = options_from_query(request.query, time.time_ns())
        except LogOptionsError as exc:
            return self._bad(str(exc))
        pod_logs = self.index.lookup(ns, pod)
        if pod_logs is None:
            return self._bad(f'pod "{pod}" in namespace "{ns}" not found on this node', 404)
        state = pod_logs.containers.get(container)
        cdir = pod_logs.directory / container
        instances = sorted(int(p.stem) for p in cdir.glob("*.log") if p.stem.isdigit()) if cdir.is_dir() else []
        current = state.instance if state is not None and state.instance >= 0 else (instances[-1] if instances else -1)
        if opts.previous:
            older = [i for i in instances if i < current]
            if not older:
                return self._bad(f'previous terminated container "{container}" in pod "{pod}" not found')
            instance, live = older[-1], False
        else:
            if current < 0:
                reason = state.waiting_reason if state is not None else "ContainerCreating"
                return self._bad(f'container "{container}" in pod "{pod}" is waiting to start: {reason}')
            instance, live = current, bool(state and state.running)
        path = cdir / f"{instance}.log"
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)

        def is_live() -> bool:
            return live and state is not None and state.running and state.instance == instance

        try:
            await self._stream(resp, path, opts, is_live, request)
        except ConnectionError:
            pass  # the client went away (e.g. `kubectl logs -f` interrupted)
        return resp

    async def _stream(
        self,
        resp: web.StreamResponse,
        path: Path,
        opts: LogOptions,
        is_live: Callable[[], bool],
        request: web.Request,
    ) -> None:
        remaining = opts.limit_bytes

        line_start = True

        async def send(entries: list[LogEntry]) -> bool:
            nonlocal remaining, line_start
            if not entries:
                return True
            data = render_entries(entries, opts.timestamps, line_start)
            line_start = not entries[-1].partial
            if remaining is not None:
                data = data[:remaining]
                remaining -= len(data)
            if data:
                await resp.write(data)
            return remaining is None or remaining > 0

        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        entries, rest = parse_entries(data)
        offset = len(data) - len(rest)
        if not await send(select_entries(entries, opts)):
            return
        if not opts.follow:
            return
        while True:
            if request.transport is None or request.transport.is_closing():
                return
            live = is_live()
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:
                chunk = b""
            entries, rest = parse_entries(chunk)
            offset += len(chunk) - len(rest)
            if opts.since_ns is not None:
                entries = [e for e in entries if e.time_ns >= opts.since_ns]
            if entries and not await send(entries):
                return
            if not live and not entries:
                return
            await asyncio.sleep(self.poll)
