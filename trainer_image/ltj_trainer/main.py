"""One training process (one rank): ``python -m ltj_trainer.main`` / ``ltj-trainer-worker``.

config -> seed -> datamodule + model -> Trainer -> fit(ckpt_path from the resume policy) ->
test with the best checkpoint -> termination summary. ``ltj-train`` (launch.py) starts one of
these per local process through torchrun.

Exit codes: 0 done; 2 bad configuration (before any distributed work); 1 training error;
143 stopped by SIGTERM after saving a resumable checkpoint.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
from typing import Any, Mapping, Sequence

from ltj_api import events, summary
from ltj_api.trainer import CONFIG_PATH, ENV_ATTEMPT, ENV_CONFIG, EXIT_ERROR, EXIT_INVALID_CONFIG, EXIT_OK, EXIT_SIGTERM
from ltj_api.trainer import within
from ltj_trainer import config as config_mod
from ltj_trainer import noise, registry, runstate
from ltj_trainer.config import ConfigError, TrainerConfig
from ltj_trainer.signals import SigtermFlag

log = logging.getLogger("ltj_trainer")


def setup_logging(rank: int) -> None:
    """INFO on global rank 0 only; other ranks report warnings and errors. Without what
    :mod:`ltj_trainer.noise` drops."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s"))
    noise.install(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, "") or default)
    except ValueError:
        return default


# Lightning's and torch's base classes take ``*args, **kwargs`` or nothing: they say nothing about
# what a subclass that stops there accepts.
FRAMEWORK_PACKAGES = frozenset({"lightning", "pytorch_lightning", "torch", "builtins"})


def accepted_params(cls: type) -> tuple[set[str], bool]:
    """Keyword names a class's constructor accepts, following ``**kwargs`` up the MRO, and whether
    that is all of them (False when a ``**kwargs`` reaches the framework's base classes: the class
    may consume any name itself)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.partition(".")[0] in FRAMEWORK_PACKAGES:
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names, True
    return names, False


def instantiate(cls: type, user_args: Mapping[str, Any], injected: Mapping[str, Any], field: str) -> Any:
    """``cls(**user_args)`` plus those injected values the constructor names and the user left out."""
    accepted, _ = accepted_params(cls)
    kwargs = {k: v for k, v in injected.items() if k in accepted and k not in user_args}
    kwargs.update(user_args)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(field, f"{cls.__name__}: {e}") from e


def check_args(cfg: TrainerConfig) -> tuple[type, type]:
    """The job's datamodule and model classes, once ``data_args`` and ``model_args`` name only
    arguments their constructors take: the config check that needs the classes but reads no data
    and builds no model (``ltj-train --check``)."""
    dm_cls = _checked_class(registry.data_class, cfg.data_class, "data_class", cfg.data_args, "data_args")
    model_cls = _checked_class(registry.model_class, cfg.model_class, "model_class", cfg.model_args, "model_args")
    return dm_cls, model_cls


def _checked_class(resolve: Any, name: str, class_field: str, args: Mapping[str, Any], args_field: str) -> type:
    try:
        cls = resolve(name)
    except registry.RegistryError as e:
        raise ConfigError(class_field, str(e)) from e
    accepted, complete = accepted_params(cls)
    unknown = sorted(set(args) - accepted) if complete else []
    if unknown:
        raise ConfigError(f"{args_field}.{unknown[0]}",
                          f"not an argument of {name!r} ({cls.__name__} takes: {', '.join(sorted(accepted))})")
    return cls


def build_modules(cfg: TrainerConfig) -> tuple[Any, Any]:
    dm_cls, model_cls = check_args(cfg)
    dm = instantiate(
        dm_cls,
        cfg.data_args,
        {"batch_size": cfg.batch_size, "num_workers": cfg.num_workers, "root_dir": cfg.default_root_dir},
        "data_args",
    )
    described: dict[str, Any] = {}
    data_spec = getattr(dm, "data_spec", None)
    if callable(data_spec):
        try:
            spec = data_spec()
        except (OSError, ValueError) as e:
            raise ConfigError("data_args", str(e)) from e
        described = {"input_shape": tuple(spec.input_shape), "num_classes": int(spec.num_classes)}
    model = instantiate(model_cls, cfg.model_args, described, "model_args")
    return dm, model


def resolve_resume(cfg: TrainerConfig) -> str | None:
    """The ``ckpt_path`` for fit: "last" (Lightning picks the newest last*.ckpt / sigterm.ckpt and
    trains from scratch when there is none), the previous best checkpoint, a path, or None."""
    if cfg.resume == "none":
        return None
    if cfg.resume == "last":
        return "last"
    if cfg.resume == "best":
        best = None
        for ev in events.read_all(cfg.events_path):
            if ev.type == events.CHECKPOINT and ev.get("best_path"):
                best = ev.get("best_path")
        if best and not _own(str(best), cfg):
            log.warning("resume=best: the recorded best %s", config_mod.outside_message(str(best), cfg.default_root_dir))
        elif best and os.path.isfile(best):
            return str(best)
        log.info("resume=best: no best checkpoint recorded yet, resuming from the last one if any")
        return "last"
    if not os.path.isfile(cfg.resume):
        raise ConfigError("resume", f"checkpoint not found: {cfg.resume}")
    if not _own(cfg.resume, cfg):
        raise ConfigError("resume", config_mod.outside_message(os.path.realpath(cfg.resume), cfg.default_root_dir))
    return cfg.resume


def _own(path: str, cfg: TrainerConfig) -> bool:
    """Whether ``path`` really is in this job's directory: symlinks resolved, since another job sharing
    the volume could plant one that points into its own directory."""
    return within(os.path.realpath(path), os.path.realpath(cfg.default_root_dir))


class Run:
    def __init__(self, cfg: TrainerConfig, env: Mapping[str, str]):
        self.cfg = cfg
        self.env = env
        self.sigterm = SigtermFlag()
        self.recorder: Any = None
        self.state = runstate.RunState()
        self.rank = 0
        self.local_rank = 0

    def last_seq(self) -> int:
        if self.recorder is not None and self.recorder.active:
            return self.recorder.last_seq
        return events.last_seq(self.cfg.events_path)

    def finish(self, code: int, *, error: str | None = None, interrupted: str | None = None) -> int:
        if self.local_rank == 0:  # one termination message per pod
            s = self.state
            summary.write(
                self.cfg.termination_log,
                summary.build(
                    best_checkpoint=s.best_path,
                    best_score=s.best_score,
                    monitor=self.cfg.monitor,
                    epochs=s.epochs,
                    early_stopped=s.stopped_early if s.fit_done else None,
                    test_metrics=s.test_metrics,
                    last_seq=self.last_seq(),
                    exit_code=code if code else None,
                    error=error,
                    interrupted=interrupted,
                ),
            )
        return code

    def save_state(self, state: runstate.RunState) -> None:
        self.state = state
        if self.rank == 0:
            runstate.write(self.cfg.default_root_dir, state)

    def execute(self) -> int:
        from ltj_trainer.trainer_factory import DistEnv

        cfg = self.cfg
        self.sigterm.install()
        try:
            dist = DistEnv.from_env(self.env, cfg)
        except ConfigError as e:
            log.error("%s", e)
            return self.finish(EXIT_INVALID_CONFIG, error=str(e))
        self.rank, self.local_rank = dist.rank, dist.local_rank
        try:
            self.state = runstate.read(cfg.default_root_dir)
        except RuntimeError as e:
            log.error("%s", e)
            return self.finish(EXIT_ERROR, error=str(e))
        if self.state.trains_on(cfg.max_epochs):
            log.info("this run trained %d epoch(s) (%s); max_epochs is %d now: training on from its last checkpoint",
                     self.state.epochs, runstate.path_in(cfg.default_root_dir), cfg.max_epochs)
            self.state = self.state.training_on()
        elif self.state.fit_done and (self.state.test_done or not cfg.test_after_fit):
            log.info("this run already finished (%s); nothing to do: %s", runstate.path_in(cfg.default_root_dir),
                     self.state.how_to_train_again())
            return self.finish(EXIT_OK)
        try:
            return self._train(dist)
        finally:
            _destroy_process_group()

    def _train(self, dist: Any) -> int:
        import lightning.pytorch as pl
        import torch
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from ltj_trainer.callbacks import EventRecorder, fit_outcome, scalar_metrics
        from ltj_trainer.trainer_factory import build_trainer, plan

        cfg = self.cfg
        # lightning/__init__ gives its logger a console handler of its own; ours (root) suffices.
        logging.getLogger("lightning").handlers.clear()
        attempt = _env_int(self.env, ENV_ATTEMPT, 0)
        try:
            trainer_plan = plan(cfg, dist, torch.cuda.is_available())
            os.makedirs(cfg.checkpoint_dir, exist_ok=True)
            writer = events.Writer(cfg.events_path) if dist.rank == 0 else None
            self.recorder = EventRecorder(writer, cfg.monitor, trainer_plan.started_fields(cfg, attempt))
            for note in trainer_plan.notes:
                log.info("%s", note)
            if trainer_plan.sync_batchnorm_note:
                log.info("%s", trainer_plan.sync_batchnorm_note)
            pl.seed_everything(cfg.seed, workers=True)
            dm, model = build_modules(cfg)
            ckpt_path = resolve_resume(cfg)
        except ConfigError as e:
            log.error("%s", e)
            return self.finish(EXIT_INVALID_CONFIG, error=str(e))
        except Exception as e:  # e.g. the volume is not writable, a plugin's constructor failed
            return self.failed(e)

        try:
            trainer = build_trainer(cfg, trainer_plan, self.recorder, attempt=attempt, sigterm_flag=self.sigterm)
            fit_ran = not self.state.fit_done
            if fit_ran:
                log.info(
                    "fit: %s on %s, %d node(s) x %d process(es), precision %s, resume %s",
                    cfg.model_class, cfg.data_class, trainer_plan.num_nodes, trainer_plan.devices,
                    trainer_plan.precision, ckpt_path,
                )
                trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
                out = fit_outcome(trainer)
                log.info(
                    "fit finished: %d epoch(s), best %s=%s at %s, stopped early: %s",
                    out.epochs, cfg.monitor, out.best_score, out.best_path, out.stopped_early,
                )
                self.save_state(
                    self.state.with_fit(
                        best_path=out.best_path, best_score=out.best_score, epochs=out.epochs, stopped_early=out.stopped_early
                    )
                )
            if self.sigterm.is_set():
                return self.finish(EXIT_SIGTERM, interrupted="SIGTERM")
            if cfg.test_after_fit and not self.state.test_done:
                test_ckpt = self._test_checkpoint(fit_ran)
                log.info("test with %s", test_ckpt or "the final weights")
                results = trainer.test(model, datamodule=dm, ckpt_path=test_ckpt)
                metrics = scalar_metrics(results[0]) if results else {}
                self.recorder.emit(events.TEST, metrics=metrics, ckpt_path=test_ckpt)
                self.save_state(self.state.with_test(metrics))
        except SIGTERMException:
            log.warning("stopped by SIGTERM; the next start resumes from the saved checkpoint")
            return self.finish(EXIT_SIGTERM, interrupted="SIGTERM")
        except Exception as e:
            return self.failed(e)
        return self.finish(EXIT_OK)

    def failed(self, e: Exception) -> int:
        """A training error: traceback to the log, the message to the event log and summary
        (which the operator shows), exit 1."""
        log.exception("training failed")
        message = f"{type(e).__name__}: {e}"
        if self.recorder is not None:
            self.recorder.emit(events.ERROR, message=message[:8000], exception=type(e).__name__)
        return self.finish(EXIT_ERROR, error=message)

    def _test_checkpoint(self, fit_ran: bool) -> str | None:
        best = self.state.best_path
        if best and os.path.isfile(best):
            return best
        last = os.path.join(self.cfg.checkpoint_dir, "last.ckpt")
        if os.path.isfile(last):
            log.warning("best checkpoint %s is missing; testing %s", best, last)
            return last
        if not fit_ran:
            raise RuntimeError(f"fit finished earlier but neither {best} nor {last} exists: nothing to test")
        return None  # fit ran here without saving (e.g. save_top_k 0, no validation): its weights are in memory


def _destroy_process_group() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ltj-trainer-worker", description="One Lightning training process (a rank).")
    p.add_argument("--config", help=f"config file (default: ${ENV_CONFIG} or {CONFIG_PATH})")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env = dict(os.environ)
    setup_logging(_env_int(env, "RANK", 0) if env.get("TORCHELASTIC_RUN_ID") else _env_int(env, "LOCAL_RANK", 0))
    try:
        cfg = config_mod.load(args.config, env, known_models=registry.model_names(), known_data=registry.data_names())
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_INVALID_CONFIG
    return Run(cfg, env).execute()


if __name__ == "__main__":
    sys.exit(main())
