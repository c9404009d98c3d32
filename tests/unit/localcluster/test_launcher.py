"""The container launcher for real (local processes and namespaces; no cluster). Needs root."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from ltj_localcluster.logfmt import parse_entries
from ltj_localcluster.runtime import ContainerProcess, LaunchSpec
from ltj_localcluster.volumes import BindMount

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and bind mounts need root"),
    pytest.mark.timeout(60),
]

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


def spec(argv: list[str], mounts: tuple[BindMount, ...] = (), cwd: str = "/") -> LaunchSpec:
    return LaunchSpec(argv=argv, env=ENV, cwd=cwd, hostname="pod-host", netns=None, mounts=mounts)


def log_text(path: Path) -> str:
    entries, _ = parse_entries(path.read_bytes())
    return "".join(f"{e.stream}:{e.content.decode()}\n" for e in entries)


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def test_runs_in_own_namespaces_with_bind_mounts(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "in.txt").write_text("from-volume")
    target = tmp_path / "mnt" / "data"  # missing mountpoint: created
    ro = tmp_path / "ro"

    async def main() -> tuple:
        proc = ContainerProcess(tmp_path / "run", tmp_path / "logs" / "0.log", tmp_path / "c.pid")
        script = (
            f"hostname; echo pid=$$; cat {target}/in.txt; echo; echo out > {target}/out.txt; "
            f"touch {ro}/x 2>/dev/null || echo readonly-ok; echo err >&2; pwd; exit 3"
        )
        await proc.start(spec(["sh", "-c", script], (BindMount(str(vol), str(target), False), BindMount(str(vol), str(ro), True)), cwd=str(tmp_path / "wd")))
        return await proc.wait(), proc

    info, proc = run(main())
    out = log_text(tmp_path / "logs" / "0.log")
    assert (info.exit_code, info.reason, info.signal) == (3, "Error", None)
    assert "stdout:pod-host\n" in out and "stdout:pid=2\n" in out  # UTS and PID namespaces
    assert "stdout:from-volume\n" in out and "stdout:readonly-ok\n" in out and "stderr:err\n" in out
    assert f"stdout:{tmp_path / 'wd'}\n" in out
    assert (vol / "out.txt").read_text() == "out\n"
    assert not (ro / "x").exists()
    assert os.uname().nodename != "pod-host"
    assert not any(str(tmp_path) in line for line in Path("/proc/self/mountinfo").read_text().splitlines())


def test_sigterm_reaches_main_process_and_pid_file(tmp_path: Path) -> None:
    async def main() -> tuple:
        proc = ContainerProcess(tmp_path / "run", tmp_path / "0.log", tmp_path / "c.pid")
        await proc.start(spec(["sh", "-c", "trap 'echo term; exit 7' TERM; echo ready; while true; do sleep 0.1; done"]))
        for _ in range(100):
            if (tmp_path / "c.pid").exists() and "ready" in (tmp_path / "0.log").read_text():
                break
            await asyncio.sleep(0.05)
        pid = int((tmp_path / "c.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        proc.signal(signal.SIGTERM)
        return await proc.wait(), cmdline

    info, cmdline = run(main())
    assert cmdline.startswith(b"sh\0-c\0trap")
    assert info.exit_code == 7
    assert "stdout:term\n" in log_text(tmp_path / "0.log")
    assert not (tmp_path / "c.pid").exists()


def test_killing_main_pid_and_no_leftovers(tmp_path: Path) -> None:
    marker = f"ltj-leftover-{os.getpid()}-{time.time_ns()}"
    marked = lambda: _processes_with(marker)  # noqa: E731

    async def main() -> object:
        proc = ContainerProcess(tmp_path / "run", tmp_path / "0.log", tmp_path / "c.pid")
        await proc.start(spec(["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(300)' {marker} & sleep 300"]))
        for _ in range(100):
            if (tmp_path / "c.pid").exists() and marked():
                break
            await asyncio.sleep(0.05)
        assert marked(), "the background process never started"
        os.kill(int((tmp_path / "c.pid").read_text()), signal.SIGKILL)
        return await proc.wait()

    info = run(main())
    assert (info.exit_code, info.signal) == (137, 9)  # type: ignore[attr-defined]
    time.sleep(0.2)
    assert marked() == []


def test_kill_process_group_and_start_error(tmp_path: Path) -> None:
    async def main() -> tuple:
        proc = ContainerProcess(tmp_path / "run", tmp_path / "0.log", None)
        await proc.start(spec(["sh", "-c", "trap '' TERM; sleep 300"]))
        await asyncio.sleep(0.3)
        proc.signal(signal.SIGTERM)  # ignored
        await asyncio.sleep(0.2)
        assert proc.running
        proc.kill()
        killed = await proc.wait()
        bad = ContainerProcess(tmp_path / "run2", tmp_path / "1.log", None)
        await bad.start(spec(["no-such-command-ltj"]))
        return killed, await bad.wait()

    killed, bad = run(main())
    assert (killed.exit_code, killed.signal) == (137, 9)
    assert (bad.exit_code, bad.reason) == (128, "StartError")
    assert 'exec: "no-such-command-ltj": executable file not found in $PATH' == bad.message


def _processes_with(marker: str) -> list[Path]:
    return [p for p in Path("/proc").iterdir() if p.name.isdigit() and marker.encode() in _cmdline(p)]


def _cmdline(p: Path) -> bytes:
    try:
        return (p / "cmdline").read_bytes()
    except OSError:
        return b""


def test_sigterm_at_any_moment_of_the_start_stops_the_command(tmp_path: Path) -> None:
    """A pod deleted while its containers start: the SIGTERM must not be lost between the launcher,
    init and the command (init of a PID namespace drops signals it has no handler for)."""
    marker = f"ltj-early-term-{os.getpid()}-{time.time_ns()}"

    async def one(i: int) -> object:
        proc = ContainerProcess(tmp_path / f"run{i}", tmp_path / f"{i}.log", None)
        await proc.start(spec([sys.executable, "-c", "import time; time.sleep(300)", marker]))
        await asyncio.sleep((i % 40) * 0.0015)  # sweeps the launcher's first 60 ms
        proc.signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return f"SIGTERM sent {(i % 40) * 1.5:.1f} ms after the start was lost"

    async def main() -> list:
        return [await one(i) for i in range(80)]

    outcomes = run(main())
    assert [o for o in outcomes if isinstance(o, str)] == []
    assert {(o.exit_code, o.signal) for o in outcomes} == {(143, 15)}  # type: ignore[attr-defined]
    assert _processes_with(marker) == []


def test_exit_is_seen_while_an_escaped_process_holds_the_output_pipe(tmp_path: Path) -> None:
    """The command hands its stdout to a process outside the container, then exits: the exit is
    reported anyway (asyncio's Process.wait() alone would wait for the pipe to close)."""
    sock_path = str(tmp_path / "fd.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock_path)
    server.listen(1)
    held: list[int] = []

    def hold() -> None:
        conn, _ = server.accept()
        _, fds, _, _ = socket.recv_fds(conn, 10, 1)
        held.extend(fds)
        conn.close()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    send = (f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({sock_path!r}); "
            "socket.send_fds(s, [b'x'], [1]); print('handed over', flush=True)")

    async def main() -> tuple:
        proc = ContainerProcess(tmp_path / "run", tmp_path / "0.log", None)
        await proc.start(spec([sys.executable, "-c", send]))
        return await asyncio.wait_for(proc.wait(), 30), proc.running

    try:
        info, running = run(main())
    finally:
        holder.join(5)
        for fd in held:
            os.close(fd)
        server.close()
    assert held, "the command never handed its stdout over"
    assert (info.exit_code, running) == (0, False)
    assert "stdout:handed over\n" in log_text(tmp_path / "0.log")
