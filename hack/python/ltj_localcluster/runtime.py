"""One container instance as a local process tree (see launcher.py), with its log file.

stdout/stderr are pumped by the agent into a CRI-format log file, like a container runtime shim.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .logfmt import LineSplitter, LogEntry, encode_entry
from .volumes import BindMount

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("launcher.py")
START_ERROR_EXIT = 128


@dataclass(frozen=True)
class LaunchSpec:
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str
    hostname: str
    netns: str | None
    mounts: Sequence[BindMount]


@dataclass(frozen=True)
class ExitInfo:
    exit_code: int
    signal: int | None
    reason: str
    message: str
    started_at: float
    finished_at: float


def exit_info_from(records: Sequence[Mapping[str, object]], returncode: int, started: float, finished: float) -> ExitInfo:
    """Combine the launcher's status records with its own exit code (pure)."""
    start_error = next((str(r["start_error"]) for r in records if "start_error" in r), None)
    if start_error is not None:
        return ExitInfo(START_ERROR_EXIT, None, "StartError", start_error, started, finished)
    final = next((r for r in reversed(records) if "exit_code" in r), None)
    if final is not None:
        code = int(final["exit_code"])  # type: ignore[arg-type]
        sig = final.get("signal")
        sig_i = int(sig) if sig is not None else None  # type: ignore[arg-type]
    elif returncode < 0:
        code, sig_i = 128 - returncode, -returncode
    else:
        code, sig_i = returncode, None
    reason = "Completed" if code == 0 else "Error"
    return ExitInfo(code, sig_i, reason, "", started, finished)


def read_status_records(path: Path) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    try:
        text = path.read_text()
    except OSError:
        return records
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


class LogFile:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f = open(path, "ab", buffering=0)

    def write(self, entries: Sequence[LogEntry]) -> None:
        if entries and not self._f.closed:
            self._f.write(b"".join(encode_entry(e) for e in entries))

    def close(self) -> None:
        self._f.close()


class LauncherOutput(asyncio.SubprocessProtocol):
    """Writes the launcher's stdout/stderr to the log as it comes; `exited` resolves when the
    launcher exits and `drained` when both pipes are closed.

    asyncio's Process.wait() waits for the pipes as well, so a descendant that kept them open
    would hide the exit (and make a later kill a no-op): the exit is taken from here instead.
    """

    def __init__(self, log: LogFile) -> None:
        loop = asyncio.get_running_loop()
        self._log = log
        self._splitters = {1: LineSplitter("stdout"), 2: LineSplitter("stderr")}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:  # type: ignore[override]
        self._log.write(self._splitters[fd].feed(data))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        splitter = self._splitters.pop(fd, None)
        if splitter is not None:
            self._log.write(splitter.flush())
        if not self._splitters and not self.drained.done():
            self.drained.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


class ContainerProcess:
    def __init__(self, run_dir: Path, log_path: Path, pid_file: Path | None) -> None:
        self.run_dir = run_dir
        self.log_path = log_path
        self.pid_file = pid_file
        self._transport: asyncio.SubprocessTransport | None = None
        self._output: LauncherOutput | None = None
        self.started_at = 0.0
        self._log: LogFile | None = None
        self._exit: ExitInfo | None = None

    @property
    def pid(self) -> int | None:
        return self._transport.get_pid() if self._transport else None

    @property
    def status_file(self) -> Path:
        return self.run_dir / "status.jsonl"

    async def start(self, spec: LaunchSpec) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.status_file.unlink(missing_ok=True)
        if self.pid_file is not None:
            self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        spec_path = self.run_dir / "spec.json"
        spec_path.write_text(
            json.dumps(
                {
                    "argv": list(spec.argv),
                    "env": dict(spec.env),
                    "cwd": spec.cwd,
                    "hostname": spec.hostname,
                    "netns": spec.netns,
                    "mounts": [{"source": m.source, "target": m.target, "readonly": m.readonly} for m in spec.mounts],
                    "pid_file": str(self.pid_file) if self.pid_file else None,
                    "status_file": str(self.status_file),
                    "parent_pid": os.getpid(),
                }
            )
        )
        self._log = LogFile(self.log_path)
        self.started_at = time.time()
        log = self._log
        self._transport, self._output = await asyncio.get_running_loop().subprocess_exec(
            lambda: LauncherOutput(log),
            sys.executable,
            "-I",
            "-S",
            str(LAUNCHER),
            str(spec_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={"LANG": "C.UTF-8"},
        )

    async def wait(self) -> ExitInfo:
        if self._exit is not None:
            return self._exit
        assert self._transport is not None and self._output is not None
        await asyncio.shield(self._output.exited)
        returncode = self._transport.get_returncode()
        assert returncode is not None
        finished = time.time()
        # Everything in the container's PID namespace is gone now, so the pipes reach EOF soon;
        # a descendant that escaped with the pipe open must not hold up the exit.
        await asyncio.wait([self._output.drained], timeout=5)
        self._transport.close()
        if self._log:
            self._log.close()
        records = read_status_records(self.status_file)
        self._exit = exit_info_from(records, returncode, self.started_at, finished)
        self._remove_pid_file()
        return self._exit

    def _remove_pid_file(self) -> None:
        """Remove the pid file unless it now names a live process (a same-named pod's newer one)."""
        if self.pid_file is None:
            return
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, 0)
            return
        except ProcessLookupError:
            pass
        except PermissionError:
            return
        self.pid_file.unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        return self._transport is not None and self._transport.get_returncode() is None

    def signal(self, sig: int) -> None:
        """Deliver sig to the container's main process (the launcher and init forward it)."""
        if self.running and self.pid is not None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the launcher's process group; init dies with it, and with init the namespace."""
        if self.running and self.pid is not None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

