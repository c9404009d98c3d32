"""The container launcher for real (local processes and namespaces; no cluster). Needs root."""

from __future__ import annotations

import asyncio
import os
import signal
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

    async def main() -> object:
        proc = ContainerProcess(tmp_path / "run", tmp_path / "0.log", tmp_path / "c.pid")
        await proc.start(spec(["sh", "-c", f"(exec -a {marker} sleep 300) & sleep 300"]))
        for _ in range(100):
            if (tmp_path / "c.pid").exists():
                break
            await asyncio.sleep(0.05)
        os.kill(int((tmp_path / "c.pid").read_text()), signal.SIGKILL)
        return await proc.wait()

    info = run(main())
    assert (info.exit_code, info.signal) == (137, 9)  # type: ignore[attr-defined]
    time.sleep(0.2)
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and marker.encode() in _cmdline(p)]
    assert leftovers == []


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


def _cmdline(p: Path) -> bytes:
    try:
        return (p / "cmdline").read_bytes()
    except OSError:
        return b""
