"""Helpers for the trainer tests: clean child environments, configs, real `ltj-train` processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import psutil
import yaml

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
LTJ_TRAIN = str(BIN / "ltj-train")  # the console script the image's ENTRYPOINT runs

# A child must see only the distributed variables the test sets: a stray LOCAL_RANK or
# TORCHELASTIC_RUN_ID changes which cluster environment Lightning detects.
_DIST_VARS = {
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "NODE_RANK",
    "MASTER_ADDR", "MASTER_PORT", "STANDALONE_PORT",
}


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _DIST_VARS and not k.startswith(("PET_", "TORCHELASTIC_", "LTJ_", "SLURM_"))
    }
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def write_config(path: Path, **settings: Any) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


def digits_config(tmp: Path, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model_class": "digits_cnn",
        "data_class": "digits",
        "batch_size": 64,
        "max_epochs": 6,
        "default_root_dir": str(tmp / "output"),
        "termination_log": str(tmp / "termination-log"),
        "ddp_timeout_seconds": 120,
        "log_every_n_steps": 5,
    }
    cfg.update(overrides)
    return cfg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TrainProcess:
    """One `ltj-train` process (a pod's container), its output in a file."""

    def __init__(self, config: Path, log: Path, env: Mapping[str, str] | None = None):
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(
            [LTJ_TRAIN, "--config", str(config)], stdout=self._out, stderr=subprocess.STDOUT,
            env=child_env(env), cwd=str(REPO),
        )

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_tree(signal.SIGKILL)
            raise AssertionError(f"ltj-train did not finish in {timeout}s; log tail:\n{self.tail()}") from None
        finally:
            self._out.close()

    def kill_tree(self, sig: int) -> None:
        """Like a container kill: the launcher and every worker (torchrun puts workers in their
        own sessions, so a process-group kill would miss them)."""
        try:
            procs = [psutil.Process(self.proc.pid)]
            procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass

    def tail(self, n: int = 6000) -> str:
        return self.log.read_bytes()[-n:].decode(errors="replace")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, proc: TrainProcess | None = None) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"ltj-train exited ({proc.proc.returncode}) before {what}; log:\n{proc.tail()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def callback_state(ckpt: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """A callback's saved state from a Lightning checkpoint (keys look like 'ModelCheckpoint{...}')."""
    matches = [v for k, v in ckpt["callbacks"].items() if k.startswith(prefix)]
    assert len(matches) == 1, f"{prefix}: {list(ckpt['callbacks'])}"
    return matches[0]
