"""Helpers for the trainer tests (and benchmarks/gpu_throughput.py): clean child environments,
configs, real `ltj-train` processes started as the operator's pods, and checks of a finished run's
checkpoints, event log and the status the relay folds from it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import psutil
import pytest
import yaml

from kubetest import wait_for
from ltj_operator import training
from ltj_api import events

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
    """One `ltj-train` process (a pod's container), or another training command (``argv``), its
    output in a file."""

    def __init__(self, config: Path, log: Path, env: Mapping[str, str] | None = None,
                 argv: Sequence[str] | None = None):
        self.log = log
        self._out = open(log, "wb")
        cmd = list(argv) if argv else [LTJ_TRAIN, "--config", str(config)]
        self.name = Path(cmd[0]).name
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, env=child_env(env),
                                     cwd=str(REPO))

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_tree(signal.SIGKILL)
            raise AssertionError(f"{self.name} did not finish in {timeout}s; log tail:\n{self.tail()}") from None
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


def wait_while_running(proc: TrainProcess, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Waits for `predicate` while `proc` runs; fails at once, with its log, should it exit first."""
    def check() -> Any:
        value = predicate()
        if not value and proc.proc.poll() is not None:
            raise AssertionError(f"{proc.name} exited ({proc.proc.returncode}) before {what}; log:\n{proc.tail()}")
        return value

    return wait_for(check, timeout, what, interval=0.05)


def callback_state(ckpt: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """A callback's saved state from a Lightning checkpoint (keys look like 'ModelCheckpoint{...}')."""
    matches = [v for k, v in ckpt["callbacks"].items() if k.startswith(prefix)]
    assert len(matches) == 1, f"{prefix}: {list(ckpt['callbacks'])}"
    return matches[0]


def load_ckpt(path: str | Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def read_events(root: Path) -> list[events.Event]:
    return events.read_all(root / "events.jsonl")


def of_type(evs: list[events.Event], type_: str) -> list[events.Event]:
    return [e for e in evs if e.type == type_]


def ckpt_files(root: Path) -> set[str]:
    return {str(p) for p in (root / "checkpoints").glob("*.ckpt")}


def last_checkpoint_saved(root: Path, min_epoch: int = 0) -> Callable[[], bool]:
    """A predicate to wait for: last.ckpt of epoch >= min_epoch is on disk and in the event log."""
    return lambda: any(e.type == "checkpoint" and e.get("kind") == "last" and e.get("epoch") >= min_epoch
                       for e in read_events(root))


# -- pods ------------------------------------------------------------------------------------------


def pod_env(nodes: int, procs_per_node: int, rank: int, port: int) -> dict[str, str]:
    """The distributed env the operator injects into pod `rank` of a `nodes` x `procs_per_node` job
    (ltj_api.trainer; test_trainer_gpu_path holds it to the operator's render), with loopback standing in
    for pod 0's name under the headless Service."""
    return {
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(nodes * procs_per_node),
        "RANK": str(rank), "PET_NNODES": str(nodes), "PET_NPROC_PER_NODE": str(procs_per_node),
        "PET_NODE_RANK": str(rank), "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port),
        "LTJ_JOB_NAME": "ddp", "LTJ_ATTEMPT": "0",
    }


def gpu_env(pod: int, pods: int, gpus_per_pod: int, gpu_count: int) -> dict[str, str]:
    """The GPUs the device plugin would give pod `pod` of `pods` (`gpus_per_pod` each) on a machine
    with `gpu_count`: its own where there are enough, else the machine's GPUs round robin.

    NCCL refuses two ranks of one host on one GPU ("Duplicate GPU detected"). Where pods share
    GPUs, each pod therefore gets its own NCCL_HOSTID, which makes the pods different hosts to NCCL
    as pods on different nodes are; NCCL then talks over sockets on loopback, not shared memory."""
    first = pod * gpus_per_pod
    env = {"CUDA_VISIBLE_DEVICES": ",".join(str((first + k) % gpu_count) for k in range(gpus_per_pod))}
    if pods * gpus_per_pod > gpu_count:
        env.update(NCCL_HOSTID=f"ltj-pod-{pod}", NCCL_SOCKET_IFNAME="lo", NCCL_IB_DISABLE="1")
    return env


def start_pods(cfg: Path, tmp: Path, nodes: int = 2, procs_per_node: int = 1,
               env: Callable[[int], Mapping[str, str]] | None = None, prefix: str = "node") -> list[TrainProcess]:
    """One `ltj-train` per pod of a `nodes`-node job, sharing the output directory; `env(i)` adds
    to pod i's environment (e.g. its GPUs, or LTJ_ATTEMPT for a restarted gang)."""
    port = free_port()
    procs = []
    for i in range(nodes):
        pod = {**pod_env(nodes, procs_per_node, i, port), "LTJ_TERMINATION_LOG": str(tmp / f"term-{i}"),
               **(env(i) if env else {})}
        procs.append(TrainProcess(cfg, tmp / f"{prefix}-{i}.txt", env=pod))
    return procs


# -- checks of a run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigtermRun:
    saved: events.Event  # the checkpoint event of kind "sigterm"
    state: dict[str, Any]  # sigterm.ckpt as Lightning saved it
    resumed: list[events.Event]  # the events of the run that resumed from it


def sigterm_then_resume(cfg: Path, tmp: Path, timeout: float, env: Mapping[str, str] | None = None) -> SigtermRun:
    """SIGTERM to the container's PID 1 (what the kubelet sends) once the first epoch is saved:
    the trainer must exit 143 with a resumable sigterm.ckpt, and the next attempt must continue
    from it and finish."""
    settings = yaml.safe_load(cfg.read_text())
    root = Path(settings["default_root_dir"])
    proc = TrainProcess(cfg, tmp / "run1.txt", env=env)
    wait_while_running(proc, last_checkpoint_saved(root), timeout, "the first checkpoint")
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143, proc.tail()

    sigterm_ckpt = root / "checkpoints" / "sigterm.ckpt"
    assert sigterm_ckpt.is_file()
    evs = read_events(root)
    saved = [e for e in evs if e.type == "checkpoint" and e.get("kind") == "sigterm"]
    assert [e.get("path") for e in saved] == [str(sigterm_ckpt)]
    state = load_ckpt(sigterm_ckpt)
    assert state["global_step"] == saved[0].get("step") > 0
    assert not of_type(evs, "error") and not of_type(evs, "fit_end")
    term = json.loads(Path(settings["termination_log"]).read_text())
    assert (term["interrupted"], term["exit_code"], term["last_seq"]) == ("SIGTERM", 143, evs[-1].seq)

    resumed = TrainProcess(cfg, tmp / "run2.txt", env={**(env or {}), "LTJ_ATTEMPT": "1"})
    assert resumed.wait(timeout) == 0, resumed.tail()
    after = read_events(root)[len(evs):]
    assert after[0].type == "started" and after[0].get("resumed_from") == str(sigterm_ckpt)
    steps_after = [v.get("step") for v in of_type(after, "validation")]
    assert steps_after and min(steps_after) > saved[0].get("step")  # continued, not restarted
    assert not sigterm_ckpt.exists()  # removed once a fit completes normally
    return SigtermRun(saved[0], state, after)


def status_matches_lightning(root: Path, *, world_size: int, attempt: int) -> dict[str, Any]:
    """Folds the run's event log the way the relay does and checks status.training against what
    Lightning itself saved in last.ckpt; returns the status."""
    status = training.to_status(training.fold(read_events(root)), time.time())
    crd = yaml.safe_load((REPO / "crds" / "ltj.dev_lightningtrainingjobs.yaml").read_text())
    known = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
        "training"]["properties"]
    assert set(status) <= set(known), f"the API server would drop {set(status) - set(known)}"

    last_path = root / "checkpoints" / "last.ckpt"
    last = load_ckpt(last_path)
    mc = callback_state(last, "ModelCheckpoint")
    assert status["finished"] is True and "error" not in status
    assert (status["epoch"], status["step"]) == (last["epoch"], last["global_step"])
    assert (status["worldSize"], status["attempt"]) == (world_size, attempt)
    assert status["bestCheckpoint"] == mc["best_model_path"]
    assert status["bestScore"] == pytest.approx(float(mc["best_model_score"]))
    assert status["lastCheckpoint"] == str(last_path)
    assert {t["path"] for t in status["topK"]} == set(mc["best_k_models"])
    assert set(status["testMetrics"]) == {"test_loss", "test_acc"}
    assert set(status["metrics"]) >= {"val_loss", "val_acc"}
    return status
