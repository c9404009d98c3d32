"""The CRD (crds/ltj.dev_lightningtrainingjobs.yaml): structural, described, consistent with spec.py and the
contracts, and the samples use only declared fields (the API server would silently prune others)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from ltj_operator import constants as C
from ltj_operator import spec as specmod
from ltj_operator.spec import parse_job
from unit.operator.operator_helpers import job_body

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
CRD_PATH = ROOT / "crds" / "ltj.dev_lightningtrainingjobs.yaml"
SAMPLES = sorted((ROOT / "crds" / "samples").glob("*.yaml"))

# Free-form on purpose: user kwargs, and embedded core types validated by the API server on the pods.
PRESERVE_UNKNOWN_ALLOWED = {
    "spec.model.args", "spec.data.args", "spec.podTemplate.affinity", "spec.podTemplate.env[].valueFrom",
    "spec.podTemplate.volumes[]",
    # A copy of a spec the API server admitted and the operator parsed (it reads it with the same parser).
    "status.appliedSpec",
}


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    (v,) = crd["spec"]["versions"]
    return v


@pytest.fixture(scope="module")
def schema(version: dict[str, Any]) -> dict[str, Any]:
    return version["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_names_scope_and_subresources(crd: dict[str, Any], version: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == C.CRD_NAME
    spec = crd["spec"]
    assert spec["group"] == C.GROUP and spec["scope"] == "Namespaced"
    names = spec["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (C.KIND, C.PLURAL, C.SINGULAR)
    assert names["shortNames"] == [C.SHORT_NAME]
    assert version["name"] == C.VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_every_field_is_typed_and_described(schema: dict[str, Any]) -> None:
    missing = []
    for path, node in walk(schema):
        if path == "metadata":
            continue  # the API server owns ObjectMeta's schema; only name rules may be added (CEL at the root)
        if not node.get("description", "").strip():
            missing.append(f"{path or '<root>'}: description")
        if "type" not in node and not node.get("x-kubernetes-int-or-string"):
            missing.append(f"{path}: type")
        if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
            missing.append(f"{path}: anyOf is only structural with x-kubernetes-int-or-string")
    assert not missing, missing


def test_preserve_unknown_fields_only_where_intended(schema: dict[str, Any]) -> None:
    found = {path for path, node in walk(schema) if node.get("x-kubernetes-preserve-unknown-fields")}
    assert found == PRESERVE_UNKNOWN_ALLOWED


def test_status_schema_covers_contract_3(schema: dict[str, Any]) -> None:
    status = schema["properties"]["status"]["properties"]
    for key in ("phase", "conditions", "observedGeneration", "startTime", "completionTime", "restarts", "attempt",
                "readyNodes", "nodes", "failure", "resumeFrom"):
        assert key in status, key
    assert status["phase"]["enum"] == list(C.PHASES)
    assert set(status["failure"]["properties"]) == {"pod", "rank", "exitCode", "reason", "message", "detail"}
    training = status["training"]["properties"]
    for key in ("seq", "epoch", "step", "maxEpochs", "progress", "etaSeconds", "metrics", "monitor", "mode",
                "bestScore", "bestCheckpoint", "lastCheckpoint", "topK", "earlyStopped", "testMetrics", "finished",
                "skippedLines", "updateTime"):
        assert key in training, key
    assert set(training["topK"]["items"]["properties"]) >= {"path", "score", "epoch", "step"}
    assert set(training["earlyStopped"]["properties"]) >= {"epoch", "reason", "bestScore"}
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}
    # Everything decide() writes is declared (undeclared status fields would be pruned).
    from ltj_operator.status import OPERATOR_FIELDS
    assert set(OPERATOR_FIELDS) <= set(status)


def test_printer_columns_per_contract(version: dict[str, Any]) -> None:
    columns = [(c["name"], c["jsonPath"], c["type"]) for c in version["additionalPrinterColumns"]
               if not c.get("priority")]
    assert columns == [
        ("Phase", ".status.phase", "string"),
        ("Nodes", ".spec.nodes", "integer"),
        ("Epoch", ".status.training.display.epoch", "string"),
        ("Best", ".status.training.display.best", "string"),
        ("Best Checkpoint", ".status.training.display.bestCheckpoint", "string"),
        ("Restarts", ".status.restarts", "integer"),
        ("Age", ".metadata.creationTimestamp", "date"),
    ]
    assert all(c.get("description") for c in version["additionalPrinterColumns"])


def test_every_printer_column_reads_a_declared_field(schema: dict[str, Any], version: dict[str, Any]) -> None:
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".metadata."):
            continue  # ObjectMeta is the API server's
        node = schema
        for name in column["jsonPath"].lstrip(".").split("."):
            node = node["properties"][name]
        assert node["type"] == column["type"], column


def test_a_new_job_reads_as_pending_before_its_first_record(schema: dict[str, Any]) -> None:
    """The operator records a job's status once its gang's pods exist; until then the API server shows the
    status schema's default (applied on every read), so the Phase column is never empty."""
    status = schema["properties"]["status"]
    assert status["default"] == {"phase": C.PHASE_PENDING}
    assert validate(status, status["default"], "status") == []
    assert apply_defaults(schema, {"spec": {}})["status"] == {"phase": C.PHASE_PENDING}


def _rules(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(path, rule) for path, node in walk(schema) for rule in node.get("x-kubernetes-validations", [])]


_CEL_IDENT = re.compile(r"(?<![.\w'])([A-Za-z_]\w*)(?=\s*[(.\s=!<>)&|,\]]|$)")
_CEL_KNOWN = {"self", "oldSelf", "has", "size", "int", "double", "in", "true", "false", "all", "exists", "p", "m",
              "n", "v", "c", "k", "format"}


def test_cel_rules_are_plausible(schema: dict[str, Any]) -> None:
    for path, rule in _rules(schema):
        text = rule["rule"]
        assert rule.get("message"), f"{path}: every rule needs a human message"
        assert text.count("(") == text.count(")") and text.count("[") == text.count("]"), text
        assert text.count("'") % 2 == 0, text
        assert "self" in text, text
        stripped = re.sub(r"'[^']*'", "''", text)
        idents = set(_CEL_IDENT.findall(stripped))
        # Anything else must be a field access (after a dot), which the regex excludes.
        assert idents <= _CEL_KNOWN, f"{path}: unexpected identifiers {idents - _CEL_KNOWN} in {text}"


def test_required_cel_rules_exist(schema: dict[str, Any]) -> None:
    rules = {(path, rule["rule"]) for path, rule in _rules(schema)}
    for field in ("spec.nodes", "spec.gpusPerNode", "spec.model", "spec.data", "spec.output"):
        assert (field, "self == oldSelf") in rules, f"{field} must be immutable"
    texts = {r for _, r in rules}
    assert any("size(self.metadata.name) <= 49" in r for r in texts)
    assert any("self.metadata.name.matches" in r for r in texts)
    assert any("has(self.claimName) != has(self.volumeClaimTemplate)" in r for r in texts)
    assert any("earlyStopping.enabled" in r and "monitor.metric" in r for r in texts)
    assert any("['last', 'best', 'none']" in r and "startsWith('/')" in r for r in texts)
    # Transition rules sit only on fields that always exist (defaults) or are required.
    spec_props = schema["properties"]["spec"]
    for field in ("nodes", "gpusPerNode", "data"):
        assert "default" in spec_props["properties"][field]
    assert {"model", "output"} <= set(spec_props["required"])


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it (defaults of absent fields, recursively)."""
    if not isinstance(value, dict) or "properties" not in node:
        return value
    out = dict(value)
    for name, child in node["properties"].items():
        if name not in out and "default" in child:
            out[name] = child["default"]
        if name in out:
            out[name] = apply_defaults(child, out[name])
    return out


def test_crd_defaults_match_the_operators_defaults(schema: dict[str, Any]) -> None:
    body = job_body(nodes=None)
    defaulted = {**body, "spec": apply_defaults(schema["properties"]["spec"], body["spec"])}
    assert defaulted["spec"]["training"]["monitor"]["metric"] == "val_loss"  # nested defaults materialize
    assert parse_job(defaulted) == parse_job(body)


def test_enums_match_the_operator(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    t = spec["training"]["properties"]
    assert tuple(t["precision"]["enum"]) == specmod.PRECISIONS
    assert tuple(t["monitor"]["properties"]["mode"]["enum"]) == specmod.MODES
    assert tuple(spec["runPolicy"]["properties"]["cleanPodPolicy"]["enum"]) == C.CLEAN_POD_POLICIES
    assert tuple(spec["imagePullPolicy"]["enum"]) == specmod.PULL_POLICIES
    access = spec["output"]["properties"]["volumeClaimTemplate"]["properties"]["accessModes"]["items"]["enum"]
    assert tuple(access) == specmod.ACCESS_MODES
    assert spec["nodes"]["maximum"] == C.MAX_NODES and spec["gpusPerNode"]["maximum"] == C.MAX_GPUS_PER_NODE


def validate(node: dict[str, Any], value: Any, path: str) -> list[str]:
    """A small structural validator: declared fields, types, enums, bounds, patterns, required."""
    errors: list[str] = []
    if node.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errors.append(f"{path}: int or string")
        elif isinstance(value, str) and "pattern" in node and not re.match(node["pattern"], value):
            errors.append(f"{path}: pattern")
        return errors
    kind = node.get("type")
    checks = {"object": dict, "array": list, "string": str, "boolean": bool}
    if kind in checks and not isinstance(value, checks[kind]):
        return [f"{path}: expected {kind}"]
    if kind == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
        return [f"{path}: expected integer"]
    if kind == "number" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        return [f"{path}: expected number"]
    if "enum" in node and value not in node["enum"]:
        errors.append(f"{path}: not in enum")
    if "minimum" in node and value < node["minimum"]:
        errors.append(f"{path}: below minimum")
    if "maximum" in node and value > node["maximum"]:
        errors.append(f"{path}: above maximum")
    if kind == "string":
        if len(value) > node.get("maxLength", 1 << 30) or len(value) < node.get("minLength", 0):
            errors.append(f"{path}: length")
        if "pattern" in node and not re.match(node["pattern"], value):
            errors.append(f"{path}: pattern")
    if kind == "object":
        for name in node.get("required", []):
            if name not in value:
                errors.append(f"{path}.{name}: required")
        props = node.get("properties", {})
        for name, child in value.items():
            if name in props:
                errors.extend(validate(props[name], child, f"{path}.{name}"))
            elif isinstance(node.get("additionalProperties"), dict):
                errors.extend(validate(node["additionalProperties"], child, f"{path}.{name}"))
            elif not node.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{name}: not declared (would be pruned)")
    if kind == "array":
        if len(value) > node.get("maxItems", 1 << 30):
            errors.append(f"{path}: too many items")
        for i, item in enumerate(value):
            errors.extend(validate(node["items"], item, f"{path}[{i}]"))
    return errors


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_samples_fit_the_schema(schema: dict[str, Any], sample: Path) -> None:
    body = yaml.safe_load(sample.read_text())
    assert body["apiVersion"] == C.API_VERSION and body["kind"] == C.KIND
    assert len(body["metadata"]["name"]) <= C.MAX_JOB_NAME_LENGTH
    spec = body["spec"]
    assert validate(schema["properties"]["spec"], spec, "spec") == []
    assert validate(schema["properties"]["spec"], apply_defaults(schema["properties"]["spec"], spec), "spec") == []


def test_validator_catches_what_the_api_server_would_prune(schema: dict[str, Any]) -> None:
    spec = {"model": {"name": "m"}, "output": {"claimName": "c"}, "nodez": 2, "training": {"precision": "fp8"}}
    errors = validate(schema["properties"]["spec"], spec, "spec")
    assert "spec.nodez: not declared (would be pruned)" in errors
    assert "spec.training.precision: not in enum" in errors


def test_contract_condition_types_are_documented(schema: dict[str, Any]) -> None:
    description = schema["properties"]["status"]["properties"]["conditions"]["description"]
    for type_ in C.CONDITION_TYPES:
        assert type_ in description
