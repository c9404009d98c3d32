"""``ltj-train``: the trainer image's ENTRYPOINT.

Validates the config (exit 2 before anything starts), turns the PyTorchJob/torchrun environment
the operator injects into a torchrun command, and runs torchrun in this process (so SIGTERM
reaches its agent, which forwards it to the workers and waits for them), one
``python -m ltj_trainer.main`` per local process. Lightning then sees TorchElasticEnvironment.

- Cluster (``PET_NNODES`` / ``PET_MASTER_ADDR`` / ``MASTER_ADDR`` set, more than one node):
  ``--nnodes N --nproc-per-node G --node-rank R --master-addr A --master-port P`` with the
  static rendezvous; R, A, P come from ``PET_*``, else ``RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT``.
- One node, or no cluster environment (a laptop): ``--standalone``.

Exits with the workers' code: a worker's own code 1..127 (lowest rank first) wins over signal
deaths (128+N); SIGTERM to the launcher gives 143 once the workers have stopped.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

from ltj_api import summary
from ltj_api import trainer as api
from ltj_trainer import config as config_mod
from ltj_trainer import registry
from ltj_trainer.config import ConfigError, TrainerConfig
from ltj_trainer.main import check_args

log = logging.getLogger("ltj_trainer.launch")

WORKER_MODULE = "ltj_trainer.main"


@dataclass(frozen=True)
class Layout:
    nnodes: int
    nproc_per_node: int
    node_rank: int
    master_addr: str | None
    master_port: int
    standalone: bool


def _env_int(env: Mapping[str, str], names: Sequence[str], default: int | None) -> tuple[int | None, str]:
    for name in names:
        raw = env.get(name)
        if raw is not None and raw != "":
            try:
                return int(raw), name
            except ValueError:
                raise ConfigError(name, f"environment variable must be an integer, got {raw!r}") from None
    return default, names[0]


def layout(env: Mapping[str, str], cfg: TrainerConfig) -> Layout:
    """Processes and rendezvous for this pod, from the injected environment (pure)."""
    if env.get("PET_NPROC_PER_NODE") == "auto":
        # PyTorchJob's default. torchrun's "auto" is one process per accelerator: the config's devices.
        env = {k: v for k, v in env.items() if k != "PET_NPROC_PER_NODE"}
    nproc, nproc_name = _env_int(env, ["PET_NPROC_PER_NODE"], cfg.devices)
    assert nproc is not None
    if nproc < 1:
        raise ConfigError(nproc_name, f"must be >= 1, got {nproc}")
    master_addr = env.get("PET_MASTER_ADDR") or env.get("MASTER_ADDR") or None
    cluster = bool(env.get("PET_NNODES") or master_addr)
    if not cluster:
        return Layout(1, nproc, 0, None, api.DIST_PORT, standalone=True)

    nnodes, nnodes_name = _env_int(env, ["PET_NNODES"], None)
    if nnodes is None:
        world, _ = _env_int(env, ["WORLD_SIZE"], None)
        nnodes, nnodes_name = (world // nproc if world else cfg.num_nodes), "WORLD_SIZE"
        if world is not None and world % nproc:
            raise ConfigError("WORLD_SIZE", f"{world} is not a multiple of {nproc} processes per node")
    if nnodes < 1:
        raise ConfigError(nnodes_name, f"must be >= 1, got {nnodes}")
    node_rank, rank_name = _env_int(env, ["PET_NODE_RANK", "RANK"], 0)
    assert node_rank is not None
    if not 0 <= node_rank < nnodes:
        raise ConfigError(rank_name, f"node rank {node_rank} is outside 0..{nnodes - 1}")
    port, port_name = _env_int(env, ["PET_MASTER_PORT", "MASTER_PORT"], api.DIST_PORT)
    assert port is not None
    if not 0 < port < 65536:
        raise ConfigError(port_name, f"must be a TCP port, got {port}")
    if nnodes == 1:
        # Nothing to meet: no dependency on the headless Service's DNS name.
        return Layout(1, nproc, 0, None, port, standalone=True)
    if not master_addr:
        raise ConfigError("MASTER_ADDR", f"required for {nnodes} nodes (or PET_MASTER_ADDR)")
    return Layout(nnodes, nproc, node_rank, master_addr, port, standalone=False)


def torchrun_args(lay: Layout, worker_args: Sequence[str]) -> list[str]:
    """torchrun's argv (without the program name) for one pod."""
    if lay.standalone:
        args = ["--standalone", "--nnodes=1", f"--nproc-per-node={lay.nproc_per_node}"]
    else:
        args = [
            f"--nnodes={lay.nnodes}",
            f"--nproc-per-node={lay.nproc_per_node}",
            f"--node-rank={lay.node_rank}",
            f"--master-addr={lay.master_addr}",
            f"--master-port={lay.master_port}",
            "--rdzv-backend=static",
        ]
    return [*args, "--module", WORKER_MODULE, *worker_args]


def exit_code(worker_codes: Mapping[int, int]) -> int:
    """One code for the pod from the failed workers' codes (negative = killed by that signal)."""
    failed = {rank: code for rank, code in worker_codes.items() if code != 0}
    if not failed:
        return 1  # torchrun failed without a worker failure (rendezvous, agent error)
    own = [failed[r] for r in sorted(failed) if 0 < failed[r] < 128]
    if own:
        return own[0]
    return max(128 - code if code < 0 else code for code in failed.values())


def _terminate(signum: int, frame: object) -> None:
    # Before torchrun's agent installs its handlers (and as PID 1, where an unhandled SIGTERM
    # would be ignored): leave with the conventional code.
    raise SystemExit(128 + signum)


def _fail(cfg: TrainerConfig | None, env: Mapping[str, str], code: int, message: str) -> int:
    log.error("%s", message)
    path = cfg.termination_log if cfg else env.get(api.ENV_TERMINATION_LOG) or api.TERMINATION_LOG
    summary.write(path, summary.build(monitor=cfg.monitor if cfg else None, exit_code=code, error=message))
    return code


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ltj-train", description="Launch Lightning training with torchrun.")
    p.add_argument("--config", metavar="PATH",
                   help="the trainer's flat YAML settings (model_class, data_class, ...; docs/trainer.md), not a "
                        f"LightningTrainingJob manifest (default: ${api.ENV_CONFIG} or {api.CONFIG_PATH})")
    p.add_argument("--dry-run", action="store_true", help="print the torchrun command and exit")
    p.add_argument("--check", action="store_true",
                   help="validate the config, including model_args/data_args against the registered classes, "
                        "and exit (reads no data, trains nothing)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    args = parse_args(argv)
    env = dict(os.environ)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [launcher] %(name)s: %(message)s")
    cfg = None
    try:
        cfg = config_mod.load(args.config, env, known_models=registry.model_names(), known_data=registry.data_names())
        lay = layout(env, cfg)
        if args.check:
            check_args(cfg)  # imports Lightning (seconds): only when asked, the workers check again anyway
    except ConfigError as e:
        return _fail(cfg, env, api.EXIT_INVALID_CONFIG, str(e))
    if args.check:
        print(f"config ok: model {cfg.model_class}, data {cfg.data_class}, output {cfg.default_root_dir}")
        return 0

    worker_args = ["--config", args.config] if args.config else []
    tr_args = torchrun_args(lay, worker_args)
    log.info("torchrun %s", shlex.join(tr_args))
    if args.dry_run:
        print("torchrun " + shlex.join(tr_args))
        return 0

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args as torchrun_parse_args
    from torch.distributed.run import run as torchrun_run

    try:
        try:
            torchrun_run(torchrun_parse_args(tr_args))
        finally:
            # The workers are gone and the exit code is decided: a late SIGTERM (the other pods'
            # kubelets, a second signal) must not turn it into a signal death.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ChildFailedError as e:
        codes = {int(rank): int(f.exitcode) for rank, f in e.failures.items()}
        code = exit_code(codes)
        log.info("worker exit codes %s -> exit %d", codes, code)
        return code
    except SignalException as e:
        # The agent already forwarded the signal to the workers and waited for them to stop.
        log.info("received %s; workers stopped", e.sigval.name)
        return 128 + int(e.sigval)
    except Exception as e:  # rendezvous or agent failure: no worker ran to completion
        return _fail(cfg, env, api.EXIT_ERROR, f"torchrun failed: {type(e).__name__}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
