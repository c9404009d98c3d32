"""Starts one container process: `python -I -S launcher.py SPEC.json` (stdlib only, runs as root).

Process layout (host view):
  launcher (session leader, dies with the agent: PR_SET_PDEATHSIG)
    -> init (pid 1 of a new PID namespace; forwards signals, reaps, reports the exit status)
       -> the container command (pid 2, its own session)
When init exits, the kernel kills every process left in the PID namespace, so nothing the
container started can outlive it, and nothing outlives the agent.

Forwarded signals stay blocked (pending) from the launcher's start until the command exists: one
that came earlier would kill the launcher and orphan init, or be dropped by init (the kernel drops
a signal for a PID namespace's init that has no handler for it), and the command would not stop.

Before forking init the launcher enters the pod's network namespace, makes a private mount
namespace (bind-mounting the volumes at their mountPaths, creating missing mountpoints) and a UTS
namespace with the pod's hostname.

The spec (JSON): argv, env, cwd, hostname, netns (path or null), mounts [{source, target,
readonly}], pid_file, status_file, parent_pid. The status file gets JSON lines:
{"start_error": msg} and/or {"exit_code": n, "signal": s|null}.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal
import stat
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
START_ERROR_EXIT = 128

_libc = ctypes.CDLL(None, use_errno=True)


class LaunchError(Exception):
    pass


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise LaunchError(f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            None,
        ),
        f"mount {source or ''} on {target}",
    )


def _ensure_target(source: str, target: str) -> None:
    """Create a missing mountpoint of the source's type (directory or file)."""
    is_dir = stat.S_ISDIR(os.stat(source).st_mode)
    if os.path.lexists(target):
        return
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)


def _bind(source: str, target: str, readonly: bool) -> None:
    if not os.path.exists(source):
        raise LaunchError(f"mount source {source} does not exist")
    _ensure_target(source, target)
    _mount(source, target, None, MS_BIND | MS_REC)
    if readonly:
        # A read-only bind needs a remount that keeps the flags it already has.
        vfs = os.statvfs(target)
        keep = vfs.f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
        _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | keep)


def _write_status(fd: int, record: dict[str, object]) -> None:
    os.write(fd, (json.dumps(record) + "\n").encode())


def _exit_code(wait_status: int) -> tuple[int, int | None]:
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        return 128 + sig, sig
    return os.WEXITSTATUS(wait_status), None


def _exec_command(spec: dict, status_fd: int) -> None:
    """In the command child: own session, default signals, cwd, exec."""
    try:
        os.setsid()
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())  # the mask survives exec: none blocked
        cwd = spec.get("cwd") or "/"
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)
        argv = spec["argv"]
        os.execvpe(argv[0], argv, spec["env"])
    except FileNotFoundError:
        msg = f'exec: "{spec["argv"][0]}": executable file not found in $PATH'
    except PermissionError:
        msg = f'exec: "{spec["argv"][0]}": permission denied'
    except Exception as exc:  # noqa: BLE001 - reported as the container's start error
        msg = f"exec {spec['argv'][0]}: {exc}"
    try:
        _write_status(status_fd, {"start_error": msg})
    finally:
        os._exit(START_ERROR_EXIT)


def _run_init(spec: dict, status_fd: int, launcher_alive: int) -> None:
    """pid 1 of the container's PID namespace."""
    code = 1
    try:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if select.select([launcher_alive], [], [], 0)[0]:
            os._exit(1)  # EOF: the launcher died before the death signal was armed
        os.close(launcher_alive)
        child: list[int] = []

        def forward(signum: int, _frame: object) -> None:
            try:
                os.kill(child[0], signum)
            except ProcessLookupError:
                pass

        for sig in FORWARDED:
            signal.signal(sig, forward)
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except LaunchError:
            pass  # the host /proc still works, only with host pids
        pid = os.fork()
        if pid == 0:
            _exec_command(spec, status_fd)
        child.append(pid)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # what came meanwhile goes to the command now
        while True:
            try:
                reaped, wait_status = os.waitpid(-1, 0)
            except ChildProcessError:
                code, sig_ = 1, None
                break
            if reaped == pid:
                code, sig_ = _exit_code(wait_status)
                break
        _write_status(status_fd, {"exit_code": code, "signal": sig_})
    except BaseException as exc:  # noqa: BLE001 - must always leave a status behind
        try:
            _write_status(status_fd, {"start_error": f"container init: {exc}"})
        finally:
            os._exit(START_ERROR_EXIT)
    os._exit(code)


def _read_child(proc_fd: int, init_pid: int) -> str | None:
    """init's only child (the command) as a host pid, read through the host's procfs."""
    rel = f"{init_pid}/task/{init_pid}/children"
    try:
        fd = os.open(rel, os.O_RDONLY, dir_fd=proc_fd)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096).decode().split()
    finally:
        os.close(fd)
    return data[0] if data else None


def _write_pid_file(pid_file: str, pid: str) -> None:
    tmp = pid_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(pid + "\n")
    os.replace(tmp, pid_file)


def main(argv: list[str]) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    with open(argv[1]) as f:
        spec = json.load(f)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if spec.get("parent_pid") and os.getppid() != spec["parent_pid"]:
        os._exit(137)  # the agent is already gone
    status_fd = os.open(spec["status_file"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        # The host's procfs, kept open: init mounts the container's own /proc over it.
        proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        if spec.get("netns"):
            fd = os.open(spec["netns"], os.O_RDONLY)
            try:
                _check(_libc.setns(fd, CLONE_NEWNET), f"setns {spec['netns']}")
            finally:
                os.close(fd)
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWPID), "unshare")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        hostname = spec.get("hostname")
        if hostname:
            name = hostname.encode()
            _check(_libc.sethostname(name, len(name)), "sethostname")
        for m in spec.get("mounts") or []:
            _bind(m["source"], m["target"], bool(m.get("readonly")))
    except (LaunchError, OSError) as exc:
        _write_status(status_fd, {"start_error": str(exc)})
        os._exit(START_ERROR_EXIT)

    alive_r, alive_w = os.pipe()  # init reads EOF once the launcher is gone
    init_pid = os.fork()
    if init_pid == 0:
        os.close(alive_w)
        _run_init(spec, status_fd, alive_r)
    os.close(alive_r)
    init: list[int] = [init_pid]

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(init[0], signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    pid_file = spec.get("pid_file")
    wait_status = None
    deadline = time.monotonic() + 10
    while pid_file and time.monotonic() < deadline:
        done, st = os.waitpid(init_pid, os.WNOHANG)
        if done:
            wait_status = st
            break
        pid = _read_child(proc_fd, init_pid)
        if pid:
            _write_pid_file(pid_file, pid)
            break
        time.sleep(0.005)
    while wait_status is None:
        try:
            _, wait_status = os.waitpid(init_pid, 0)
        except ChildProcessError:
            os._exit(1)
    code, sig = _exit_code(wait_status)
    if sig is not None:
        _write_status(status_fd, {"exit_code": code, "signal": sig, "killed": True})
    os._exit(code)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        print(f"ltj launcher: {e}", file=sys.stderr)
        os._exit(START_ERROR_EXIT if not isinstance(e, OSError) or e.errno != errno.EINTR else 1)
