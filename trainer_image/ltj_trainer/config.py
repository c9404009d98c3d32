"""The trainer configuration: a flat YAML mapping plus ``LTJ_<KEY>`` environment overrides.

Parsed once into a frozen :class:`TrainerConfig`; every error names the offending field
(``config: precision: must be one of fp16, bf16, fp32, got 'fp8'``). Standard library + PyYAML
only, so the launcher validates before torch is imported or any process is started.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping

import yaml

from ltj_api import trainer as api
from ltj_api.trainer import env_key

LOCAL_OUTPUT_DIR = "ltj-output"  # under the working directory, for runs outside a pod

PRECISIONS = ("fp16", "bf16", "fp32")
MODES = ("min", "max")
ACCELERATORS = ("auto", "cpu", "gpu")
RESUME_POLICIES = ("last", "best", "none")


class ConfigError(ValueError):
    """A bad configuration value; ``str()`` is the user-facing message naming the field."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"config: {field_name}: {message}" if field_name else f"config: {message}")


@dataclass(frozen=True)
class TrainerConfig:
    model_class: str
    model_args: Mapping[str, Any] = field(default_factory=dict)
    data_class: str = "digits"
    data_args: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    num_workers: int = 0
    max_epochs: int = 10
    early_stopping: bool = True
    early_stop_metric: str = "val_loss"
    early_stop_patience: int = 3
    early_stop_min_delta: float = 0.0
    mode: str = "min"
    val_check_interval: float | int = 1.0
    precision: str = "fp32"
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    default_root_dir: str = api.OUTPUT_DIR
    seed: int = 42
    save_top_k: int = 3
    test_after_fit: bool = True
    resume: str = "last"
    termination_log: str = api.TERMINATION_LOG
    ddp_timeout_seconds: int = 1800
    log_every_n_steps: int = 10

    @property
    def monitor(self) -> str:
        # EarlyStopping and ModelCheckpoint watch the same metric.
        return self.early_stop_metric

    @property
    def events_path(self) -> str:
        return api.events_path(self.default_root_dir)

    @property
    def checkpoint_dir(self) -> str:
        return api.checkpoints_dir(self.default_root_dir)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


KEYS: tuple[str, ...] = api.CONFIG_KEYS


# ---------------------------------------------------------------------------------------------
# Value parsers: each takes the raw value (YAML-typed, or a string from the environment when
# from_env is True) and returns the typed value or raises ConfigError naming the field.


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(name: str, v: Any, from_env: bool, minimum: int | None = None, maximum: int | None = None) -> int:
    if from_env and isinstance(v, str):
        try:
            v = int(v.strip())
        except ValueError:
            raise ConfigError(name, f"must be an integer, got {v!r}") from None
    if not _is_int(v):
        raise ConfigError(name, f"must be an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ConfigError(name, f"must be <= {maximum}, got {v}")
    return v


def _float(name: str, v: Any, from_env: bool, minimum: float | None = None) -> float:
    if from_env and isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise ConfigError(name, f"must be a number, got {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(name, f"must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ConfigError(name, f"must be finite, got {v}")
    if minimum is not None and v < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {v}")
    return v


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _bool(name: str, v: Any, from_env: bool) -> bool:
    if from_env and isinstance(v, str):
        s = v.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        raise ConfigError(name, f"must be a boolean (true/false), got {v!r}")
    if not isinstance(v, bool):
        raise ConfigError(name, f"must be a boolean (true/false), got {v!r}")
    return v


def _str(name: str, v: Any, from_env: bool) -> str:
    if not isinstance(v, str):
        raise ConfigError(name, f"must be a string, got {v!r}")
    if not v.strip():
        raise ConfigError(name, "must not be empty")
    return v


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any, bool], str]:
    def parse(name: str, v: Any, from_env: bool) -> str:
        if not isinstance(v, str) or v not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {v!r}")
        return v

    return parse


def _mapping(name: str, v: Any, from_env: bool) -> Mapping[str, Any]:
    if from_env and isinstance(v, str):
        try:
            v = yaml.safe_load(v) if v.strip() else {}
        except yaml.YAMLError as e:
            raise ConfigError(name, f"must be a YAML/JSON mapping: {e}") from None
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ConfigError(name, f"must be a mapping, got {type(v).__name__}")
    for k in v:
        if not isinstance(k, str) or not k.isidentifier():
            raise ConfigError(f"{name}.{k}", "keys must be valid Python identifiers (they become keyword arguments)")
    return dict(v)


def _val_check_interval(name: str, v: Any, from_env: bool) -> float | int:
    if from_env and isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise ConfigError(name, f"must be a number, got {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(name, f"must be a number, got {v!r}")
    # A JSON/YAML number loses its int-vs-float distinction on its way through the API server
    # (1.0 arrives as 1), so values <= 1 are fractions of an epoch and larger ones batch counts.
    if 0 < v <= 1:
        return float(v)
    if v > 1 and float(v).is_integer():
        return int(v)
    raise ConfigError(name, f"must be a fraction of an epoch in (0, 1] or a whole number of batches > 1, got {v!r}")


def _resume(name: str, v: Any, from_env: bool) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(name, f"must be one of last, best, none or an absolute checkpoint path, got {v!r}")
    if v in RESUME_POLICIES or os.path.isabs(v):
        return v
    raise ConfigError(name, f"must be one of last, best, none or an absolute checkpoint path, got {v!r}")


def _abs_path(name: str, v: Any, from_env: bool) -> str:
    s = _str(name, v, from_env)
    if not os.path.isabs(s):
        raise ConfigError(name, f"must be an absolute path, got {s!r}")
    return os.path.normpath(s)


def _metric(name: str, v: Any, from_env: bool) -> str:
    s = _str(name, v, from_env)
    if any(c in s for c in "{}"):
        raise ConfigError(name, f"must not contain braces, got {s!r}")
    if len(s) > 253:
        raise ConfigError(name, f"must be at most 253 characters, got {len(s)}")
    return s


_REGISTERED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _registered_name(name: str, v: Any, from_env: bool) -> str:
    s = _str(name, v, from_env)
    if len(s) > 63 or not _REGISTERED_NAME.match(s):
        raise ConfigError(name, f"must be a registered name (at most 63 letters, digits, '_', '.', '-'), got {s!r}")
    return s


# The bounds of the settings a LightningTrainingJob sets are the CRD's, so the trainer refuses a file exactly
# when the operator would refuse the job (tests/unit/test_api_declaration.py holds the three alike).
_PARSERS: dict[str, Callable[[str, Any, bool], Any]] = {
    "model_class": _registered_name,
    "model_args": _mapping,
    "data_class": _registered_name,
    "data_args": _mapping,
    "batch_size": lambda n, v, e: _int(n, v, e, minimum=1, maximum=1 << 20),
    "num_workers": lambda n, v, e: _int(n, v, e, minimum=0, maximum=256),
    "max_epochs": lambda n, v, e: _int(n, v, e, minimum=1, maximum=1_000_000),
    "early_stopping": _bool,
    "early_stop_metric": _metric,
    "early_stop_patience": lambda n, v, e: _int(n, v, e, minimum=0, maximum=100_000),
    "early_stop_min_delta": lambda n, v, e: _float(n, v, e, minimum=0.0),
    "mode": _choice(MODES),
    "val_check_interval": _val_check_interval,
    "precision": _choice(PRECISIONS),
    "accelerator": _choice(ACCELERATORS),
    "devices": lambda n, v, e: _int(n, v, e, minimum=1),
    "num_nodes": lambda n, v, e: _int(n, v, e, minimum=1, maximum=256),
    "default_root_dir": _abs_path,
    "seed": lambda n, v, e: _int(n, v, e, minimum=0, maximum=2**32 - 1),  # numpy's range, seed_everything's
    "save_top_k": lambda n, v, e: _int(n, v, e, minimum=-1, maximum=1000),
    "test_after_fit": _bool,
    "resume": _resume,
    "termination_log": _abs_path,
    "ddp_timeout_seconds": lambda n, v, e: _int(n, v, e, minimum=1),
    "log_every_n_steps": lambda n, v, e: _int(n, v, e, minimum=1),
}
assert set(_PARSERS) == set(KEYS), "every config key needs a parser"


def parse(
    raw: Any,
    env: Mapping[str, str] | None = None,
    *,
    known_models: Collection[str] | None = None,
    known_data: Collection[str] | None = None,
) -> TrainerConfig:
    """Validate a loaded YAML document plus environment overrides into a TrainerConfig.

    ``known_models`` / ``known_data``, when given, are the registered names ``model_class`` and
    ``data_class`` must be among.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError("", f"the file must hold a mapping of settings, got {type(raw).__name__}")
    if "apiVersion" in raw or "kind" in raw:
        raise ConfigError("", "this is a Kubernetes manifest, not the trainer's settings: give ltj-train the flat "
                              "settings (model_class, data_class, max_epochs, ...; docs/trainer.md), which the "
                              "operator renders from a LightningTrainingJob into its pods' ltj.dev/trainer-config")
    unknown = sorted(str(k) for k in raw if k not in _PARSERS)
    if unknown:
        raise ConfigError(unknown[0], f"unknown setting (known: {', '.join(KEYS)})")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        values[key] = _PARSERS[key](key, value, False)
    for key in KEYS:
        name = env_key(key)
        if env is not None and name in env:
            # Environment overrides win; the error names the variable so users find it.
            values[key] = _PARSERS[key](name, env[name], True)
    if "model_class" not in values:
        raise ConfigError("model_class", f"required (set it in the file or {env_key('model_class')})")
    if not (env or {}).get(api.ENV_JOB_NAME):
        # Not in a pod the operator made (a laptop): everything under the working directory, never
        # at the filesystem root or in /dev.
        values.setdefault("default_root_dir", os.path.abspath(LOCAL_OUTPUT_DIR))
        values.setdefault("termination_log", os.path.join(values["default_root_dir"], "termination-log"))
    cfg = TrainerConfig(**values)
    _check_names(cfg, known_models, known_data)
    _check_combinations(cfg)
    return cfg


def _check_names(cfg: TrainerConfig, known_models: Collection[str] | None, known_data: Collection[str] | None) -> None:
    if known_models is not None and cfg.model_class not in known_models:
        raise ConfigError(
            "model_class", f"{cfg.model_class!r} is not a registered model (registered: {', '.join(sorted(known_models))})"
        )
    if known_data is not None and cfg.data_class not in known_data:
        raise ConfigError(
            "data_class", f"{cfg.data_class!r} is not a registered datamodule (registered: {', '.join(sorted(known_data))})"
        )


def _check_combinations(cfg: TrainerConfig) -> None:
    if cfg.save_top_k == 0 and cfg.resume == "best":
        raise ConfigError("resume", "'best' needs save_top_k != 0 (no best checkpoint is kept otherwise)")
    if os.path.isabs(cfg.resume) and not api.within(cfg.resume, cfg.default_root_dir):
        raise ConfigError("resume", outside_message(cfg.resume, cfg.default_root_dir))


def outside_message(path: str, directory: str) -> str:
    return (f"{path} is outside this job's directory {directory}/ (a checkpoint is a pickle: loading one "
            "another job wrote would run that job's code)")


def config_path(argv_path: str | None, env: Mapping[str, str]) -> tuple[str, bool]:
    """The config file path and whether it was asked for explicitly (a missing default is fine)."""
    if argv_path:
        return argv_path, True
    if env.get(api.ENV_CONFIG):
        return env[api.ENV_CONFIG], True
    return api.CONFIG_PATH, False


def load(
    path: str | None,
    env: Mapping[str, str],
    *,
    known_models: Collection[str] | None = None,
    known_data: Collection[str] | None = None,
) -> TrainerConfig:
    """Read the YAML file (``--config`` / ``LTJ_CONFIG`` / the default path) and validate it."""
    resolved, explicit = config_path(path, env)
    try:
        with open(resolved, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if explicit:
            raise ConfigError("", f"file not found: {resolved}") from None
        text = ""  # no file at the default path: everything comes from LTJ_* variables
    except OSError as e:
        raise ConfigError("", f"cannot read {resolved}: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as e:
        raise ConfigError("", f"{resolved} is not valid YAML: {e}") from None
    return parse(raw, env, known_models=known_models, known_data=known_data)
