"""The spec schema of the CRD walked as data: its fields, a maximal job that sets every one of them, and
boundary cases generated from its keywords (minimum, maximum, exclusiveMinimum, enum, pattern, minLength,
maxLength, type). tests/unit/test_api_declaration.py holds the operator's parser and the trainer's config to
these cases; tests/integration/test_api_declaration.py holds the API server to the parser on the same cases.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Iterator

import yaml

from kubetest import CRD_DIR

Path = tuple[str | int, ...]  # ("spec", "podTemplate", "tolerations", 0, "key")

SPEC_SCHEMA: dict[str, Any] = yaml.safe_load((CRD_DIR / "ltj.dev_lightningtrainingjobs.yaml").read_text())[
    "spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

# A job that sets every field of the spec schema to a valid value other than its default, so that leaving any
# one out changes what the parser makes of it. Fields that exclude each other (output.claimName and
# output.volumeClaimTemplate) are split over MAXIMAL's two specs; list items cover the other alternatives.
MAXIMAL_SPEC: dict[str, Any] = {
    "image": "registry.example.com/ml/ltj-trainer:1.0",
    "imagePullPolicy": "IfNotPresent",
    "model": {"name": "digits_cnn", "args": {"hidden": 32}},
    "data": {"name": "synthetic_tabular", "args": {"rows": 100}, "batchSize": 32, "numWorkers": 2},
    "training": {
        "maxEpochs": 5, "precision": "bf16", "valCheckInterval": 0.5, "seed": 7, "testAfterFit": False,
        "resume": "none", "monitor": {"metric": "val_acc", "mode": "max"},
        "earlyStopping": {"enabled": False, "patience": 5, "minDelta": 0.01}, "checkpoint": {"saveTopK": 2},
    },
    "nodes": 2,
    "gpusPerNode": 1,
    "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
    "output": {"volumeClaimTemplate": {"storageClassName": "fast", "accessModes": ["ReadWriteMany"],
                                       "storage": "10Gi"},
               "subPath": "runs/a"},
    "podTemplate": {
        "metadata": {"labels": {"team": "ml"}, "annotations": {"example.com/owner": "ml team"}},
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "gpu", "operator": "Equal", "value": "a100", "effect": "NoSchedule",
                         "tolerationSeconds": 60}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        "priorityClassName": "high",
        "schedulerName": "custom-scheduler",
        "serviceAccountName": "dataset-reader",
        "imagePullSecrets": [{"name": "regcred"}],
        "env": [{"name": "A", "value": "x"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "envFrom": [{"prefix": "APP_", "configMapRef": {"name": "app", "optional": True}},
                    {"secretRef": {"name": "creds", "optional": True}}],
        "volumes": [{"name": "data", "emptyDir": {}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "set", "readOnly": True}],
        "terminationGracePeriodSeconds": 60,
    },
    "runPolicy": {"backoffLimit": 5, "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 600,
                  "cleanPodPolicy": "All", "suspend": True, "retryableExitCodes": [3]},
}
MAXIMAL: tuple[dict[str, Any], ...] = (
    MAXIMAL_SPEC,
    {**MAXIMAL_SPEC, "output": {"claimName": "checkpoints", "subPath": "runs/b"}},
)


def body(spec: dict[str, Any], name: str = "maximal") -> dict[str, Any]:
    return {"apiVersion": "ltj.dev/v1alpha1", "kind": "LightningTrainingJob",
            "metadata": {"name": name, "namespace": "team-a", "uid": "0d0e0a0d-0000-4000-8000-000000000001"},
            "spec": spec}


def fmt(path: Path) -> str:
    """A path as spec.py's errors spell it: spec.podTemplate.tolerations[0].key."""
    return "".join(f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if i else seg) for i, seg in enumerate(path))


def _opaque(schema: dict[str, Any]) -> bool:
    """A node whose insides the schema leaves free (user kwargs, embedded core types, maps): a field as a whole."""
    return bool(schema.get("x-kubernetes-preserve-unknown-fields")) or isinstance(
        schema.get("additionalProperties"), dict)


def declared(schema: dict[str, Any] = SPEC_SCHEMA, path: str = "spec") -> Iterator[str]:
    """Every field path the schema declares, list items as ``[]``."""
    yield path
    if _opaque(schema) and not schema.get("properties"):
        return
    for key, child in (schema.get("properties") or {}).items():
        yield from declared(child, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from declared(schema["items"], f"{path}[]")


def present(value: Any, schema: dict[str, Any] | None = SPEC_SCHEMA, path: str = "spec") -> Iterator[str]:
    """Every field path ``value`` sets, in declared()'s spelling; below an opaque node only declared fields."""
    yield path
    if schema is None or (_opaque(schema) and not schema.get("properties")):
        return
    props = schema.get("properties") or {}
    if isinstance(value, dict):
        for key, child in value.items():
            if key in props or not schema.get("x-kubernetes-preserve-unknown-fields"):
                yield from present(child, props.get(key), f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from present(item, schema.get("items"), f"{path}[]")


def leaves(value: Any, schema: dict[str, Any] = SPEC_SCHEMA, path: Path = ("spec",)) -> Iterator[tuple[Path, dict]]:
    """(path, schema) of each field ``value`` sets that holds no declared fields of its own: scalars, list items
    of scalars and opaque nodes."""
    props = schema.get("properties") or {}
    if isinstance(value, dict) and props:
        for key, child in value.items():
            yield from leaves(child, props[key], (*path, key))
    elif isinstance(value, list) and not _opaque(schema.get("items") or {}):
        for i, item in enumerate(value):
            yield from leaves(item, schema["items"], (*path, i))
    else:
        yield path, schema


def objects(value: Any, schema: dict[str, Any] = SPEC_SCHEMA, path: Path = ("spec",)) -> Iterator[Path]:
    """Each object ``value`` sets whose fields the schema declares and closes (unknown ones are not kept)."""
    props = schema.get("properties") or {}
    if isinstance(value, dict) and props:
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            yield path
        for key, child in value.items():
            if key in props:
                yield from objects(child, props[key], (*path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from objects(item, schema["items"], (*path, i))


def get(spec: dict[str, Any], path: Path) -> Any:
    node: Any = {"spec": spec}
    for seg in path:
        node = node[seg]
    return node


def replaced(spec: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """A copy of ``spec`` with ``value`` at ``path``."""
    root = {"spec": copy.deepcopy(spec)}
    node: Any = root
    for seg in path[:-1]:
        node = node[seg]
    node[path[-1]] = value
    return root["spec"]


def removed(spec: dict[str, Any], path: Path) -> dict[str, Any]:
    """A copy of ``spec`` without the field (or list item) at ``path``."""
    root = {"spec": copy.deepcopy(spec)}
    node: Any = root
    for seg in path[:-1]:
        node = node[seg]
    del node[path[-1]]
    return root["spec"]


# -- boundary cases ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    spec: dict[str, Any]
    path: Path
    value: Any
    # Whether the schema's keywords alone accept the value; CEL rules (leaf.rules) may still refuse it.
    keywords_accept: bool
    rules: bool

    @property
    def id(self) -> str:
        return f"{fmt(self.path)}={self.value!r:.40}"


# Strings to try on every string field: blanks, spaces, a leading '-', braces, paths, NUL.
STRING_CANDIDATES = ("", " ", "a b", "-x", "x{y}", "/abs/x.ckpt", "rel/x", "x\x00y", "ok")
WRONG_TYPE = {"string": 1, "integer": "1", "number": "1", "boolean": "true"}


def keywords_accept(schema: dict[str, Any], value: Any) -> bool:
    """The verdict of the schema's own keywords on one scalar (CEL rules aside)."""
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, (int, str)) and not isinstance(value, bool)
        return ok and (not isinstance(value, str) or "pattern" not in schema or bool(re.search(schema["pattern"],
                                                                                                value)))
    kind = schema.get("type")
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        if not isinstance(value, str):
            return False
        return (schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value))
                and ("enum" not in schema or value in schema["enum"])
                and ("pattern" not in schema or bool(re.search(schema["pattern"], value))))
    if kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int if kind == "integer" else (int, float)):
            return False
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None and (value <= lo if schema.get("exclusiveMinimum") else value < lo):
            return False
        return hi is None or value <= hi
    raise AssertionError(f"not a scalar schema: {schema}")


def _values(schema: dict[str, Any], current: Any) -> list[Any]:
    kind = schema.get("type")
    out: list[Any] = []
    if schema.get("x-kubernetes-int-or-string"):
        return ["1Gi", 1, "not a quantity", "-1", True]
    if kind in ("integer", "number"):
        step = 1 if kind == "integer" else 0.5
        if "minimum" in schema:
            lo = schema["minimum"]
            out += [lo, lo + step] if schema.get("exclusiveMinimum") else [lo - step, lo]
        if "maximum" in schema:
            out += [schema["maximum"], schema["maximum"] + step]
        if kind == "number":
            out += [1, 1.5]  # whole and fractional: valCheckInterval tells them apart
    elif kind == "string":
        out += list(schema.get("enum") or ()) + ["NotAnEnumValue"] + ([schema["default"]] if "default" in schema else [])
        if "maxLength" in schema:
            n = schema["maxLength"]
            out += [(current + "a" * n)[:n], current + "a" * (n + 1 - len(current))]
        if "minLength" in schema:
            out.append("a" * (schema["minLength"] - 1))
        out += STRING_CANDIDATES
    elif kind == "boolean":
        out += [True, False]
    out.append(WRONG_TYPE[kind] if kind in WRONG_TYPE else None)
    unique: list[Any] = []
    for v in out:
        if v is not None and not any(type(v) is type(u) and v == u for u in unique):
            unique.append(v)
    return unique


def _rules(schema: dict[str, Any]) -> list[str]:
    """The node's CEL rules that judge a new object (immutability rules judge only updates)."""
    return [r["rule"] for r in schema.get("x-kubernetes-validations") or () if r["rule"] != "self == oldSelf"]


def _ruled_from_above(path: Path) -> bool:
    """Whether a CEL rule of an enclosing object names the field at ``path`` (e.g. a toleration's value, which
    must be empty when its operator is Exists)."""
    node, key = SPEC_SCHEMA, path[-1] if isinstance(path[-1], str) else path[-2]
    for seg in path[1:-1]:
        node = node["items"] if isinstance(seg, int) else node["properties"][seg]
        if any(re.search(rf"\b{key}\b", rule) for rule in _rules(node)):
            return True
    return False


def cases() -> list[Case]:
    """Boundary and candidate values for every scalar field of the maximal specs, each in an otherwise maximal
    spec (one case per field and value)."""
    out: list[Case] = []
    seen: set[str] = set()
    for spec in MAXIMAL:
        for path, schema in leaves(spec):
            key = fmt(tuple(s if isinstance(s, str) else 0 for s in path))
            if key in seen or schema.get("type") in ("object", "array") or _opaque(schema):
                continue
            seen.add(key)
            rules = bool(_rules(schema)) or _ruled_from_above(path)
            for value in _values(schema, get(spec, path)):
                out.append(Case(replaced(spec, path, value), path, value, keywords_accept(schema, value), rules))
    return out


CASES = cases()
