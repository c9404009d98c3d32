"""Parse and validate a LightningTrainingJob once into frozen, typed objects.

The CRD's schema and CEL rules reject bad resources at admission; this module checks the same (and
a little more) again, because the operator must not trust that the installed CRD is current, and
so that everything downstream works on typed values with defaults applied. Every error names the
field path, e.g. ``spec.training.monitor.metric: must be set when spec.training.earlyStopping.enabled
is true``. All errors of a spec are reported together.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from ltj_api import trainer as contract

from . import constants as C

# --- frozen user data ------------------------------------------------------------------------


def freeze(value: Any) -> Any:
    """A read-only deep copy of JSON-like data (mappings -> MappingProxyType, lists -> tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain dicts and lists again (for manifests and YAML)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


_EMPTY: Mapping[str, Any] = MappingProxyType({})

# --- the typed spec --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    name: str
    args: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True)
class DataSpec:
    name: str = "digits"
    args: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    batch_size: int = 64
    num_workers: int = 0


@dataclass(frozen=True)
class MonitorSpec:
    metric: str = "val_loss"
    mode: str = "min"


@dataclass(frozen=True)
class EarlyStoppingSpec:
    enabled: bool = True
    patience: int = 3
    min_delta: float = 0.0


@dataclass(frozen=True)
class CheckpointSpec:
    save_top_k: int = 3


@dataclass(frozen=True)
class TrainingSpec:
    max_epochs: int = 10
    precision: str = "fp32"
    val_check_interval: float | int = 1.0
    seed: int = 42
    test_after_fit: bool = True
    resume: str = "last"
    monitor: MonitorSpec = MonitorSpec()
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()


@dataclass(frozen=True)
class ResourcesSpec:
    requests: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    limits: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True)
class VolumeClaimTemplate:
    storage: str
    access_modes: tuple[str, ...]
    storage_class_name: str | None = None


@dataclass(frozen=True)
class OutputSpec:
    claim_name: str | None
    volume_claim_template: VolumeClaimTemplate | None
    sub_path: str

    def claim(self, job_name: str) -> str:
        """The PVC the job's pods mount."""
        return self.claim_name if self.claim_name is not None else output_claim_name(job_name)


@dataclass(frozen=True)
class PodTemplateSpec:
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    node_selector: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] | None = None
    priority_class_name: str | None = None
    scheduler_name: str | None = None
    # Every rank runs as this account when set (workload identity); else rank 0 as the relay's, the others
    # as the job's token-less trainer account.
    service_account_name: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    env: tuple[Mapping[str, Any], ...] = ()
    env_from: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()
    termination_grace_period_seconds: int | None = None


@dataclass(frozen=True)
class RunPolicy:
    backoff_limit: int = 3
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    clean_pod_policy: str = C.CLEAN_POD_POLICY_RUNNING
    suspend: bool = False
    retryable_exit_codes: frozenset[int] = frozenset()


@dataclass(frozen=True)
class JobSpec:
    model: ModelSpec
    output: OutputSpec
    image: str | None = None
    image_pull_policy: str | None = None
    data: DataSpec = DataSpec()
    training: TrainingSpec = TrainingSpec()
    nodes: int = 1
    gpus_per_node: int = 0
    resources: ResourcesSpec = ResourcesSpec()
    pod_template: PodTemplateSpec = PodTemplateSpec()
    run_policy: RunPolicy = RunPolicy()
    # Things that are accepted but worth telling the user (e.g. an env var the operator overrides).
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def procs_per_node(self) -> int:
        return max(1, self.gpus_per_node)

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node


@dataclass(frozen=True)
class JobMeta:
    name: str
    namespace: str
    uid: str
    generation: int = 1
    # The Kueue LocalQueue its label names (an empty value names none, as for Kueue).
    queue: str | None = None
    # The WorkloadPriorityClass its kueue.x-k8s.io/priority-class label names.
    priority_class: str | None = None


@dataclass(frozen=True)
class Job:
    meta: JobMeta
    spec: JobSpec


class SpecError(ValueError):
    """One or more invalid fields; each message starts with the field path."""

    def __init__(self, errors: Iterable[str]):
        self.errors = tuple(errors)
        super().__init__("; ".join(self.errors))


# --- derived names ---------------------------------------------------------------------------


def pod_name(job_name: str, rank: int) -> str:
    return f"{job_name}-node-{rank}"


def output_claim_name(job_name: str) -> str:
    return f"{job_name}-output"


def relay_name(job_name: str) -> str:
    return f"{job_name}-relay"


def relay_token_name(job_name: str) -> str:
    """The Secret holding the relay's token when rank 0 runs as the user's account."""
    return f"{job_name}-relay-token"


def trainer_account_name(job_name: str) -> str:
    return f"{job_name}-trainer"


# --- syntax ----------------------------------------------------------------------------------

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_REGISTERED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[munk])?$")
# Kubernetes' qualified name (label and annotation keys, taint keys, resource names): an optional DNS
# subdomain prefix of at most 253 characters, then a name of at most 63.
_QUALIFIED_NAME = re.compile(r"^((?=[^/]{1,253}/)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                             r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

PRECISIONS = ("fp16", "bf16", "fp32")
MODES = ("min", "max")
RESUME_KEYWORDS = ("last", "best", "none")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
# model.args and data.args ride in every pod's trainer-config annotation (all annotations: 256 KiB).
MAX_ARGS_BYTES = 64 * 1024
ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
TOLERATION_OPERATORS = ("Exists", "Equal")
TOLERATION_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")


def _fmt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Fields:
    """Typed access to one mapping of the spec, recording errors with their full path."""

    def __init__(self, errors: list[str], path: str, value: Any, known: Iterable[str]):
        self.errors = errors
        self.path = path
        self.ok = isinstance(value, Mapping)
        self.data: Mapping[str, Any] = value if self.ok else {}
        if not self.ok and value is not None:
            errors.append(f"{path}: must be an object, got {_fmt(value)}")
        known_set = set(known)
        for key in self.data:
            if key not in known_set:
                errors.append(f"{self.at(key)}: unknown field")

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def error(self, key: str, message: str) -> None:
        self.errors.append(f"{self.at(key)}: {message}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def sub(self, key: str, known: Iterable[str]) -> "_Fields":
        return _Fields(self.errors, self.at(key), self.data.get(key), known)

    def string(self, key: str, default: str | None = None, *, required: bool = False, max_len: int = 253,
               pattern: re.Pattern[str] | None = None, pattern_help: str = "", allow_empty: bool = False,
               choices: tuple[str, ...] | None = None) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.error(key, "must be set")
            return default
        if not isinstance(value, str):
            self.error(key, f"must be a string, got {_fmt(value)}")
            return default
        if choices is not None:
            if value not in choices:
                shown = ", ".join(c or '""' for c in choices)
                self.error(key, f"must be one of {shown}, got {_fmt(value)}")
                return default
            return value
        if not value and not allow_empty:
            self.error(key, "must not be empty")
            return default
        if len(value) > max_len:
            self.error(key, f"must be at most {max_len} characters, got {len(value)}")
            return default
        if value and pattern is not None and not pattern.match(value):
            self.error(key, f"{_fmt(value)} {pattern_help or 'has an invalid format'}")
            return default
        return value

    def integer(self, key: str, default: int | None, *, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        value = self.data.get(key)
        if value is None:
            return default
        # YAML/JSON may hand us 3.0 for 3; bool is an int in Python but never a count.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"must be an integer, got {_fmt(value)}")
            return default
        return self._bounded(key, value, default, minimum, maximum)

    def number(self, key: str, default: float | None, *, minimum: float | None = None,
               maximum: float | None = None, exclusive_minimum: bool = False) -> float | int | None:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.error(key, f"must be a number, got {_fmt(value)}")
            return default
        if exclusive_minimum and minimum is not None and value <= minimum:
            self.error(key, f"must be > {minimum:g}, got {_fmt(value)}")
            return default
        return self._bounded(key, value, default, None if exclusive_minimum else minimum, maximum)

    def _bounded(self, key: str, value: Any, default: Any, minimum: Any, maximum: Any) -> Any:
        if minimum is not None and value < minimum:
            self.error(key, f"must be >= {minimum}, got {_fmt(value)}")
            return default
        if maximum is not None and value > maximum:
            self.error(key, f"must be <= {maximum}, got {_fmt(value)}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(key, f"must be true or false, got {_fmt(value)}")
            return default
        return value

    def mapping(self, key: str, *, identifier_keys: bool = False, max_bytes: int | None = None) -> Mapping[str, Any]:
        value = self._object(key)
        if identifier_keys:
            bad = [k for k in value if not isinstance(k, str) or not k.isidentifier()]
            if bad:
                self.errors.append(f"{self.at(key)}.{bad[0]}: keys must be Python identifiers (they become "
                                   "keyword arguments)")
                return _EMPTY
        if max_bytes is not None:
            size = len(json.dumps(value, separators=(",", ":"), default=str).encode())
            if size > max_bytes:
                self.error(key, f"too large: {size} bytes as JSON, at most {max_bytes} (it travels in the trainer "
                                "config, a pod annotation; put large inputs in a file on a volume)")
                return _EMPTY
        return freeze(value)

    def _object(self, key: str) -> Mapping[str, Any]:
        value = self.data.get(key)
        if value is None:
            return _EMPTY
        if not isinstance(value, Mapping):
            self.error(key, f"must be an object, got {_fmt(value)}")
            return _EMPTY
        return value

    def checked_map(self, key: str, entry: Callable[[Any, Any], tuple[str | None, str]]) -> Mapping[str, str]:
        """An object whose entries entry(k, v) checks: (value, "") to keep, (None, why) to report."""
        value = self._object(key)
        out: dict[str, str] = {}
        for k, v in value.items():
            kept, problem = entry(k, v)
            if kept is None:
                self.errors.append(f"{self.at(key)}[{k}]: {problem}")
            else:
                out[k] = kept
        return MappingProxyType(out)

    def string_map(self, key: str, *, key_pattern: re.Pattern[str] | None = None,
                   value_pattern: re.Pattern[str] | None = None, value_max: int | None = None,
                   what: str = "key") -> Mapping[str, str]:
        def entry(k: Any, v: Any) -> tuple[str | None, str]:
            if not isinstance(k, str) or (key_pattern is not None and (not key_pattern.match(k) or len(k) > 316)):
                return None, f"{_fmt(k)} is not a valid {what}"
            if not isinstance(v, str):
                return None, f"must be a string, got {_fmt(v)}"
            if value_max is not None and len(v) > value_max:
                return None, f"must be at most {value_max} characters"
            if value_pattern is not None and not value_pattern.match(v):
                return None, f"{_fmt(v)} is not a valid value"
            return v, ""

        return self.checked_map(key, entry)

    def items(self, key: str, max_items: int = 64) -> list[tuple[str, Any]]:
        """(path, item) for each entry of a list field."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, (list, tuple)):
            self.error(key, f"must be a list, got {_fmt(value)}")
            return []
        if len(value) > max_items:
            self.error(key, f"must have at most {max_items} items, got {len(value)}")
            return []
        return [(f"{self.at(key)}[{i}]", item) for i, item in enumerate(value)]


# --- parsing ---------------------------------------------------------------------------------


def parse_job(body: Mapping[str, Any]) -> Job:
    """The whole resource: metadata checks (name length and syntax) plus the spec."""
    meta = body.get("metadata") or {}
    name = meta.get("name") or ""
    errors: list[str] = []
    if not isinstance(name, str) or not _DNS1035_LABEL.match(name):
        errors.append(f"metadata.name: {_fmt(name)} must be a DNS label (lowercase letters, digits and '-', "
                      "starting with a letter) because it names the job's Service and pod hostnames")
    elif len(name) > C.MAX_JOB_NAME_LENGTH:
        errors.append(f"metadata.name: must be at most {C.MAX_JOB_NAME_LENGTH} characters so that "
                      f"'<name>-node-<index>' stays a valid DNS label, got {len(name)}")
    try:
        spec = parse_spec(body.get("spec"), job_name=name if isinstance(name, str) else "",
                          job_uid=str(meta.get("uid") or ""))
    except SpecError as exc:
        raise SpecError(errors + list(exc.errors)) from None
    if errors:
        raise SpecError(errors)
    generation = meta.get("generation")
    labels = meta.get("labels")
    queue, priority = ((labels.get(C.LABEL_KUEUE_QUEUE), labels.get(C.LABEL_KUEUE_PRIORITY_CLASS))
                       if isinstance(labels, Mapping) else (None, None))
    return Job(
        meta=JobMeta(name=name, namespace=str(meta.get("namespace") or "default"), uid=str(meta.get("uid") or ""),
                     generation=generation if isinstance(generation, int) else 1,
                     queue=queue if isinstance(queue, str) and queue else None,
                     priority_class=priority if isinstance(priority, str) and priority else None),
        spec=spec,
    )


_SPEC_FIELDS = ("image", "imagePullPolicy", "model", "data", "training", "nodes", "gpusPerNode", "resources",
                "output", "podTemplate", "runPolicy")


def parse_spec(spec: Any, *, job_name: str, job_uid: str = "") -> JobSpec:
    """The spec; with ``job_uid`` (a job the API server has created) a checkpoint path must be in the
    job's own directory."""
    errors: list[str] = []
    warnings: list[str] = []
    if spec is None:
        raise SpecError(["spec: must be set"])
    f = _Fields(errors, "spec", spec, _SPEC_FIELDS)
    if not f.ok:
        raise SpecError(errors)

    image = f.string("image", max_len=512, pattern=re.compile(r"^\S+$"), pattern_help="must not contain spaces")
    pull_policy = f.string("imagePullPolicy", choices=PULL_POLICIES)
    nodes = f.integer("nodes", 1, minimum=1, maximum=C.MAX_NODES)
    gpus = f.integer("gpusPerNode", 0, minimum=0, maximum=C.MAX_GPUS_PER_NODE)
    assert nodes is not None and gpus is not None

    model = _parse_model(f)
    data = _parse_data(f)
    try:
        own_dir = contract.job_dir(job_name, job_uid) if job_uid else None
    except ValueError:  # a bad name: parse_job reports it
        own_dir = None
    training = _parse_training(f, own_dir)
    resources = _parse_resources(f)
    output = _parse_output(f, job_name=job_name, nodes=nodes)
    pod_template = _parse_pod_template(f, warnings, job_name)
    run_policy = _parse_run_policy(f)

    if errors or model is None or output is None:
        raise SpecError(errors)
    return JobSpec(
        image=image, image_pull_policy=pull_policy, model=model, data=data, training=training, nodes=nodes,
        gpus_per_node=gpus, resources=resources, output=output, pod_template=pod_template, run_policy=run_policy,
        warnings=tuple(warnings),
    )


def _parse_model(f: _Fields) -> ModelSpec | None:
    if not f.has("model"):
        f.error("model", "must be set")
        return None
    m = f.sub("model", ("name", "args"))
    name = m.string("name", required=True, max_len=63, pattern=_REGISTERED_NAME,
                    pattern_help="must be a registered name (letters, digits, '_', '.', '-')")
    args = m.mapping("args", identifier_keys=True, max_bytes=MAX_ARGS_BYTES)
    return ModelSpec(name=name, args=args) if name is not None else None


def _parse_data(f: _Fields) -> DataSpec:
    d = f.sub("data", ("name", "args", "batchSize", "numWorkers"))
    default = DataSpec()
    return DataSpec(
        name=d.string("name", default.name, max_len=63, pattern=_REGISTERED_NAME,
                      pattern_help="must be a registered name (letters, digits, '_', '.', '-')") or default.name,
        args=d.mapping("args", identifier_keys=True, max_bytes=MAX_ARGS_BYTES),
        batch_size=d.integer("batchSize", default.batch_size, minimum=1, maximum=1 << 20) or default.batch_size,
        num_workers=_int(d.integer("numWorkers", default.num_workers, minimum=0, maximum=256)),
    )


def _int(value: int | None) -> int:
    assert value is not None
    return value


def _parse_training(f: _Fields, own_dir: str | None) -> TrainingSpec:
    t = f.sub("training", ("maxEpochs", "precision", "valCheckInterval", "seed", "testAfterFit", "resume",
                           "monitor", "earlyStopping", "checkpoint"))
    d = TrainingSpec()
    mon = t.sub("monitor", ("metric", "mode"))
    metric_raw = mon.data.get("metric")
    metric = mon.string("metric", d.monitor.metric, max_len=253, allow_empty=True)
    mode = mon.string("mode", d.monitor.mode, choices=MODES)
    es = t.sub("earlyStopping", ("enabled", "patience", "minDelta"))
    enabled = es.boolean("enabled", d.early_stopping.enabled)
    if isinstance(metric_raw, str) and not metric_raw.strip():
        if enabled:
            t.errors.append("spec.training.monitor.metric: must be set when spec.training.earlyStopping.enabled is "
                            "true")
        else:
            t.errors.append("spec.training.monitor.metric: must not be empty (it also selects the best checkpoints)")
        metric = None
    elif isinstance(metric, str) and ("{" in metric or "}" in metric):
        # The trainer puts the metric into a checkpoint filename template.
        mon.error("metric", f"must not contain braces, got {_fmt(metric)}")
    ck = t.sub("checkpoint", ("saveTopK",))

    vci = t.number("valCheckInterval", d.val_check_interval, minimum=0.0, exclusive_minimum=True)
    assert vci is not None
    if vci > 1 and not float(vci).is_integer():
        t.error("valCheckInterval", f"must be a fraction of an epoch in (0, 1] or a whole number of batches, got {vci}")
        vci = d.val_check_interval
    elif vci > 1:
        vci = int(vci)  # a number of training batches (Lightning's int form)
    else:
        vci = float(vci)

    resume = t.string("resume", d.resume, max_len=4096)
    if resume is not None and resume not in RESUME_KEYWORDS and not resume.startswith("/"):
        t.error("resume", f"must be last, best, none or an absolute checkpoint path, got {_fmt(resume)}")
        resume = d.resume
    if resume is not None and "\x00" in resume:
        t.error("resume", "must not contain NUL characters")
        resume = d.resume
    if resume is not None and resume.startswith("/") and own_dir is not None and not contract.within(resume, own_dir):
        # A checkpoint is a pickle: loading one another job wrote (jobs may share a claim) would run its code.
        t.error("resume", f"must be a checkpoint in this job's own directory {own_dir}/ (a checkpoint is a pickle: "
                          f"loading another job's would run its code), got {_fmt(resume)}")
        resume = d.resume

    save_top_k = _int(ck.integer("saveTopK", d.checkpoint.save_top_k, minimum=-1, maximum=1000))
    if save_top_k == 0 and resume == "best":
        t.error("resume", "best needs spec.training.checkpoint.saveTopK != 0 (no best checkpoint is kept otherwise)")
    return TrainingSpec(
        max_epochs=_int(t.integer("maxEpochs", d.max_epochs, minimum=1, maximum=1_000_000)),
        precision=t.string("precision", d.precision, choices=PRECISIONS) or d.precision,
        val_check_interval=vci,
        seed=_int(t.integer("seed", d.seed, minimum=0, maximum=2**32 - 1)),
        test_after_fit=t.boolean("testAfterFit", d.test_after_fit),
        resume=resume or d.resume,
        monitor=MonitorSpec(metric=metric if metric is not None else d.monitor.metric, mode=mode or d.monitor.mode),
        early_stopping=EarlyStoppingSpec(
            enabled=enabled,
            patience=_int(es.integer("patience", d.early_stopping.patience, minimum=0, maximum=100_000)),
            min_delta=float(es.number("minDelta", d.early_stopping.min_delta, minimum=0.0) or 0.0),
        ),
        checkpoint=CheckpointSpec(save_top_k=save_top_k),
    )


def _quantity_map(r: _Fields, key: str) -> Mapping[str, str]:
    def entry(name: Any, qty: Any) -> tuple[str | None, str]:
        if not isinstance(name, str) or not _QUALIFIED_NAME.match(name):
            return None, f"{_fmt(name)} is not a valid resource name"
        if name == C.GPU_RESOURCE:
            return None, "set by spec.gpusPerNode; remove it from spec.resources"
        text = repr(qty) if isinstance(qty, float) else str(qty)
        if isinstance(qty, bool) or not isinstance(qty, (str, int, float)) or not _QUANTITY.match(text):
            return None, f"must be a quantity such as '2', '500m' or '4Gi', got {_fmt(qty)}"
        return text, ""

    return r.checked_map(key, entry)


def _parse_resources(f: _Fields) -> ResourcesSpec:
    r = f.sub("resources", ("requests", "limits"))
    return ResourcesSpec(requests=_quantity_map(r, "requests"), limits=_quantity_map(r, "limits"))


def _sub_path(o: _Fields, job_name: str) -> str:
    value = o.data.get("subPath")
    if value is None:
        return job_name
    if not isinstance(value, str):
        o.error("subPath", f"must be a string, got {_fmt(value)}")
        return job_name
    if len(value) > 1024:
        o.error("subPath", "must be at most 1024 characters")
        return job_name
    if value.startswith("/") or ".." in value.split("/"):
        o.error("subPath", f"must be a relative path without '..', got {_fmt(value)}")
        return job_name
    return value


def _parse_output(f: _Fields, *, job_name: str, nodes: int) -> OutputSpec | None:
    if not f.has("output"):
        f.error("output", "must be set (the job's checkpoints and events live on this volume)")
        return None
    o = f.sub("output", ("claimName", "volumeClaimTemplate", "subPath"))
    has_claim, has_template = o.has("claimName"), o.has("volumeClaimTemplate")
    if has_claim == has_template:
        o.errors.append("spec.output: exactly one of spec.output.claimName and spec.output.volumeClaimTemplate "
                        "must be set")
        return None
    sub_path = _sub_path(o, job_name)
    if has_claim:
        claim = o.string("claimName", max_len=253, pattern=_DNS1123_SUBDOMAIN,
                         pattern_help="is not a valid PersistentVolumeClaim name")
        return OutputSpec(claim_name=claim, volume_claim_template=None, sub_path=sub_path) if claim else None
    v = o.sub("volumeClaimTemplate", ("storageClassName", "accessModes", "storage"))
    storage = v.data.get("storage")
    storage_text: str | None = None
    if storage is None:
        v.error("storage", "must be set (the size of the claim, e.g. 10Gi)")
    elif isinstance(storage, bool) or not isinstance(storage, (str, int)) or not _QUANTITY.match(str(storage)):
        v.error("storage", f"must be a quantity such as '10Gi', got {_fmt(storage)}")
    else:
        storage_text = str(storage)
    storage_class = v.string("storageClassName", max_len=253, allow_empty=True, pattern=_DNS1123_SUBDOMAIN,
                             pattern_help="is not a valid StorageClass name")
    modes: list[str] = []
    for path, item in v.items("accessModes", max_items=4):
        if item not in ACCESS_MODES:
            v.errors.append(f"{path}: must be one of {', '.join(ACCESS_MODES)}, got {_fmt(item)}")
        elif item in modes:
            v.errors.append(f"{path}: duplicate access mode {item}")
        else:
            modes.append(item)
    if v.has("accessModes") and not v.data["accessModes"] and isinstance(v.data["accessModes"], list):
        v.error("accessModes", "must not be empty")
    if not modes:
        # Every rank reads the checkpoint on resume, so several nodes need a shared volume.
        modes = ["ReadWriteMany"] if nodes > 1 else ["ReadWriteOnce"]
    if storage_text is None:
        return None
    return OutputSpec(claim_name=None, sub_path=sub_path,
                      volume_claim_template=VolumeClaimTemplate(storage=storage_text, access_modes=tuple(modes),
                                                                storage_class_name=storage_class))


_POD_TEMPLATE_FIELDS = ("metadata", "nodeSelector", "tolerations", "affinity", "priorityClassName", "schedulerName",
                        "serviceAccountName", "imagePullSecrets", "env", "envFrom", "volumes", "volumeMounts",
                        "terminationGracePeriodSeconds")


def _parse_pod_template(f: _Fields, warnings: list[str], job_name: str) -> PodTemplateSpec:
    p = f.sub("podTemplate", _POD_TEMPLATE_FIELDS)
    md = p.sub("metadata", ("labels", "annotations"))
    labels = md.string_map("labels", key_pattern=_QUALIFIED_NAME, value_pattern=_LABEL_VALUE, value_max=63,
                           what="label key")
    annotations = md.string_map("annotations", key_pattern=_QUALIFIED_NAME, what="annotation key")
    node_selector = p.string_map("nodeSelector", key_pattern=_QUALIFIED_NAME, value_pattern=_LABEL_VALUE,
                                 value_max=63, what="label key")
    affinity = p.mapping("affinity") if p.has("affinity") else None
    volumes = _parse_volumes(p)
    volume_names = {v["name"] for v in volumes}
    return PodTemplateSpec(
        labels=labels,
        annotations=annotations,
        node_selector=node_selector,
        tolerations=_parse_tolerations(p),
        affinity=affinity,
        priority_class_name=p.string("priorityClassName", max_len=253, pattern=_DNS1123_SUBDOMAIN,
                                     pattern_help="is not a valid PriorityClass name"),
        scheduler_name=p.string("schedulerName", max_len=253, allow_empty=True),  # "": the default, as in a pod
        service_account_name=_service_account_name(p, job_name),
        image_pull_secrets=_parse_pull_secrets(p),
        env=_parse_env(p, warnings),
        env_from=_parse_env_from(p),
        volumes=volumes,
        volume_mounts=_parse_volume_mounts(p, volume_names),
        termination_grace_period_seconds=p.integer("terminationGracePeriodSeconds", None, minimum=0,
                                                   maximum=7 * 86400),
    )


def _service_account_name(p: _Fields, job_name: str) -> str | None:
    name = p.string("serviceAccountName", max_len=253, pattern=_DNS1123_SUBDOMAIN,
                    pattern_help="is not a valid ServiceAccount name")
    if name in (relay_name(job_name), trainer_account_name(job_name)):
        # The relay's account may write the job's status; the trainer's is the operator's to shape.
        p.error("serviceAccountName", f"{_fmt(name)} is an account the operator makes for this job; name your own")
        return None
    return name


def _item_fields(errors: list[str], path: str, item: Any, known: Iterable[str]) -> _Fields | None:
    fields = _Fields(errors, path, item, known)
    if item is None:
        errors.append(f"{path}: must be an object, got None")
    return fields if fields.ok else None


def _parse_tolerations(p: _Fields) -> tuple[Mapping[str, Any], ...]:
    out = []
    for path, item in p.items("tolerations"):
        t = _item_fields(p.errors, path, item, ("key", "operator", "value", "effect", "tolerationSeconds"))
        if t is None:
            continue
        op = t.string("operator", "Equal", choices=TOLERATION_OPERATORS)
        key = t.string("key", max_len=316, pattern=_QUALIFIED_NAME, pattern_help="is not a valid taint key")
        value = t.string("value", max_len=63, allow_empty=True)
        if op == "Exists" and value:
            t.error("value", "must be empty when operator is Exists")
        if op == "Equal" and not key:
            t.error("key", "must be set when operator is Equal")
        t.string("effect", choices=TOLERATION_EFFECTS)
        t.integer("tolerationSeconds", None)
        out.append(freeze(item))
    return tuple(out)


def _parse_pull_secrets(p: _Fields) -> tuple[str, ...]:
    out: list[str] = []
    for path, item in p.items("imagePullSecrets"):
        s = _item_fields(p.errors, path, item, ("name",))
        if s is None:
            continue
        name = s.string("name", required=True, pattern=_DNS1123_SUBDOMAIN, pattern_help="is not a valid Secret name")
        if name:
            out.append(name)
    return tuple(out)


def _parse_env(p: _Fields, warnings: list[str]) -> tuple[Mapping[str, Any], ...]:
    out = []
    seen: set[str] = set()
    for path, item in p.items("env", max_items=256):
        e = _item_fields(p.errors, path, item, ("name", "value", "valueFrom"))
        if e is None:
            continue
        name = e.string("name", required=True, max_len=253, pattern=_ENV_NAME,
                        pattern_help="is not a valid environment variable name")
        e.string("value", allow_empty=True, max_len=1 << 20)
        if e.has("valueFrom"):
            e.mapping("valueFrom")
            if e.has("value"):
                e.error("valueFrom", "must not be set together with value")
        if name is None:
            continue
        if name in seen:
            e.error("name", f"duplicate environment variable {name}")
            continue
        seen.add(name)
        if name in C.DISTRIBUTED_ENV:
            warnings.append(f"{path}.name: {name} is set by the operator; the value in the spec is ignored")
            continue
        out.append(freeze(item))
    return tuple(out)


def _parse_env_from(p: _Fields) -> tuple[Mapping[str, Any], ...]:
    out = []
    for path, item in p.items("envFrom"):
        e = _item_fields(p.errors, path, item, ("prefix", "configMapRef", "secretRef"))
        if e is None:
            continue
        e.string("prefix", max_len=253, pattern=_ENV_NAME, pattern_help="is not a valid environment variable prefix")
        refs = [k for k in ("configMapRef", "secretRef") if e.has(k)]
        if len(refs) != 1:
            e.errors.append(f"{path}: exactly one of configMapRef and secretRef must be set")
            continue
        ref = e.sub(refs[0], ("name", "optional"))
        ref.string("name", required=True, pattern=_DNS1123_SUBDOMAIN, pattern_help="is not a valid object name")
        ref.boolean("optional", False)
        out.append(freeze(item))
    return tuple(out)


def _parse_volumes(p: _Fields) -> tuple[Mapping[str, Any], ...]:
    out = []
    seen: set[str] = set()
    for path, item in p.items("volumes"):
        if not isinstance(item, Mapping):
            p.errors.append(f"{path}: must be an object, got {_fmt(item)}")
            continue
        # A core/v1 Volume: only the name is ours to check; the API server validates the source.
        name = item.get("name")
        if not isinstance(name, str) or not _DNS1123_LABEL.match(name) or len(name) > 63:
            p.errors.append(f"{path}.name: {_fmt(name)} is not a valid volume name")
            continue
        if name in C.RESERVED_VOLUME_NAMES:
            p.errors.append(f"{path}.name: {name} is reserved for the operator's own volumes")
            continue
        if name in seen:
            p.errors.append(f"{path}.name: duplicate volume {name}")
            continue
        if len(item) < 2:
            p.errors.append(f"{path}: needs a volume source besides its name (e.g. persistentVolumeClaim)")
            continue
        seen.add(name)
        out.append(freeze(item))
    return tuple(out)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _parse_volume_mounts(p: _Fields, volume_names: set[str]) -> tuple[Mapping[str, Any], ...]:
    out = []
    seen: set[str] = set()
    for path, item in p.items("volumeMounts"):
        m = _item_fields(p.errors, path, item, ("name", "mountPath", "subPath", "readOnly"))
        if m is None:
            continue
        name = m.string("name", required=True, max_len=63)
        mount_path = m.string("mountPath", required=True, max_len=4096)
        m.string("subPath", max_len=1024, allow_empty=True)
        m.boolean("readOnly", False)
        if name is not None and name not in volume_names:
            m.error("name", f"{name} is not one of spec.podTemplate.volumes")
            continue
        if mount_path is None:
            continue
        if not mount_path.startswith("/"):
            m.error("mountPath", f"must be an absolute path, got {_fmt(mount_path)}")
            continue
        normalized = mount_path.rstrip("/") or "/"
        if any(_under(normalized, reserved) for reserved in C.RESERVED_MOUNT_PATHS) or normalized == "/":
            m.error("mountPath", f"{mount_path} would hide the operator's mounts "
                                 f"({', '.join(sorted(C.RESERVED_MOUNT_PATHS))})")
            continue
        if normalized in seen:
            m.error("mountPath", f"duplicate mount path {mount_path}")
            continue
        seen.add(normalized)
        out.append(freeze(item))
    return tuple(out)


def _parse_run_policy(f: _Fields) -> RunPolicy:
    r = f.sub("runPolicy", ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "cleanPodPolicy",
                            "suspend", "retryableExitCodes"))
    d = RunPolicy()
    codes: set[int] = set()
    for path, item in r.items("retryableExitCodes", max_items=255):
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 255:
            r.errors.append(f"{path}: must be an exit code between 1 and 255, got {_fmt(item)}")
        elif item == C.EXIT_INVALID_CONFIG:
            r.errors.append(f"{path}: exit code 2 means an invalid trainer configuration and is never retried")
        elif item in codes:
            r.errors.append(f"{path}: duplicate exit code {item}")
        else:
            codes.add(item)
    return RunPolicy(
        backoff_limit=_int(r.integer("backoffLimit", d.backoff_limit, minimum=0, maximum=1000)),
        active_deadline_seconds=r.integer("activeDeadlineSeconds", None, minimum=1),
        ttl_seconds_after_finished=r.integer("ttlSecondsAfterFinished", None, minimum=0),
        clean_pod_policy=r.string("cleanPodPolicy", d.clean_pod_policy, choices=C.CLEAN_POD_POLICIES)
        or d.clean_pod_policy,
        suspend=r.boolean("suspend", d.suspend),
        retryable_exit_codes=frozenset(codes),
    )


def parse_or_error(body: Mapping[str, Any]) -> tuple[Job | None, str | None]:
    """(job, None) or (None, message): the reconciler turns a message into a Failed condition."""
    try:
        return parse_job(body), None
    except SpecError as exc:
        return None, str(exc)


def on_spec(job: Job, spec: Any, generation: int) -> Job | None:
    """`job` as of another spec of it (of `generation`), or None when that one does not parse."""
    try:
        parsed = parse_spec(spec, job_name=job.meta.name, job_uid=job.meta.uid)
    except SpecError:
        return None
    return Job(meta=replace(job.meta, generation=generation), spec=parsed)


def applied_job(body: Mapping[str, Any]) -> Job | None:
    """The job as of the last spec the operator applied (status.appliedSpec, of generation
    status.appliedGeneration: only the operator writes them), or None when there is none that parses."""
    status = body.get("status") or {}
    spec, generation = status.get("appliedSpec"), status.get("appliedGeneration")
    if not isinstance(spec, Mapping) or not isinstance(generation, int) or isinstance(generation, bool):
        return None
    job, _ = parse_or_error({**body, "metadata": {**(body.get("metadata") or {}), "generation": generation},
                             "spec": spec})
    return job

