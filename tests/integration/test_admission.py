"""Admission of LightningTrainingJobs by the real API server: the CRD's schema, CEL rules, defaults and
immutability as users meet them (kubectl's stderr, the API's 422 causes), and the samples.

Every constraint in the CRD's spec schema gets a generated case (walking the schema), every CEL rule a
hand-written case, and a coverage check fails when a rule is added to the CRD without a case here.
No operator runs in this module: only the API server judges.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from kubetest import CRD_DIR, Api, Kube, Refusal
from ltj_operator import constants as C
from ltj_operator.spec import parse_job

pytestmark = pytest.mark.integration

CRD_PATH = CRD_DIR / "ltj.dev_lightningtrainingjobs.yaml"
SAMPLES = sorted((CRD_DIR / "samples").glob("*.yaml"))
ROOT_SCHEMA: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

# The smallest job the API accepts; every case starts from it so that only the case's own error shows.
BASE_SPEC: dict[str, Any] = {"model": {"name": "digits_cnn"}, "output": {"claimName": "checkpoints"}}
# The API server skips CEL rules when the schema already failed; it says so with this cause.
CEL_SKIPPED = "some validation rules were not checked"


def body(spec: dict[str, Any] | None, name: str = "job") -> dict[str, Any]:
    manifest: dict[str, Any] = {"apiVersion": C.API_VERSION, "kind": C.KIND, "metadata": {"name": name}}
    if spec is not None:
        manifest["spec"] = spec
    return manifest


def with_spec(**patch: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE_SPEC)
    spec.update(copy.deepcopy(patch))
    return spec


@pytest.fixture(scope="module")
def ns(kube: Kube) -> Iterator[str]:
    """One namespace for the module: most cases are dry runs, and the rest use distinct job names."""
    name = f"admission-{uuid.uuid4().hex[:5]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def api(kube: Kube) -> Iterator[Api]:
    client = Api(kube.kubeconfig)
    yield client
    client.close()


def refused(result: dict[str, Any] | Refusal) -> Refusal:
    assert isinstance(result, Refusal), f"the API server accepted what it should refuse: {json.dumps(result)[:600]}"
    assert result.status == 422, result
    return result


def accepted(result: dict[str, Any] | Refusal) -> dict[str, Any]:
    assert not isinstance(result, Refusal), f"the API server refused a valid job: {result.message}"
    return result


# -- one generated case per constraint of the spec schema ---------------------------------------------------
@dataclass(frozen=True)
class SchemaCase:
    id: str
    spec: dict[str, Any] | None
    field: str
    message: str


def _field(path: list[str | int]) -> str:
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else seg)
    return out


def _place(path: list[str | int], value: Any) -> dict[str, Any] | None:
    """BASE_SPEC with ``value`` at ``path`` (which starts with "spec"); intermediate objects, one-item lists and
    one-key maps are made up as needed (they may lack required fields: the case's own cause is what counts)."""
    root: dict[str, Any] = {"spec": copy.deepcopy(BASE_SPEC)}
    node: Any = root
    for seg, nxt in zip(path, path[1:]):
        if isinstance(seg, int):
            node = node[0]
            continue
        if seg not in node or not isinstance(node[seg], (dict, list)):
            node[seg] = [{}] if isinstance(nxt, int) else {}
        elif isinstance(nxt, int) and not node[seg]:
            node[seg].append({})
        node = node[seg]
    last = path[-1]
    if isinstance(last, int):
        node[:] = [value]
    else:
        node[last] = value
    return root["spec"]


def _item_value(schema: dict[str, Any], i: int) -> Any:
    if schema.get("enum"):
        return schema["enum"][i % len(schema["enum"])]
    return {"object": {}, "integer": 1 + i % 200, "number": float(i), "boolean": True}.get(schema.get("type", ""),
                                                                                        f"v{i}")


def _not_matching(pattern: str) -> str:
    for candidate in ("-bad {value}", "a{b}", "not a quantity", " "):
        if not re.search(pattern, candidate):
            return candidate
    raise AssertionError(f"no candidate violates {pattern!r}")


def _number(value: float, integer: bool) -> Any:
    return int(value) if integer else value


def schema_cases(schema: dict[str, Any], path: list[str | int]) -> Iterator[SchemaCase]:
    name = _field(path)
    integer = schema.get("type") == "integer"
    if "enum" in schema:
        yield SchemaCase(f"{name}:enum", _place(path, "NotAnEnumValue"), name, 'Unsupported value: "NotAnEnumValue"')
    if "minimum" in schema:
        lo = schema["minimum"]
        if schema.get("exclusiveMinimum"):
            yield SchemaCase(f"{name}:exclusiveMinimum", _place(path, _number(lo, integer)), name,
                             f"should be greater than {lo}")
        else:
            yield SchemaCase(f"{name}:minimum", _place(path, _number(lo - (1 if integer else 0.5), integer)), name,
                             f"should be greater than or equal to {lo}")
    if "maximum" in schema:
        hi = schema["maximum"]
        yield SchemaCase(f"{name}:maximum", _place(path, _number(hi + 1, integer)), name,
                         f"should be less than or equal to {hi}")
    if "minLength" in schema:
        n = schema["minLength"]
        yield SchemaCase(f"{name}:minLength", _place(path, "a" * (n - 1)), name, f"should be at least {n} chars long")
    if "maxLength" in schema:
        n = schema["maxLength"]
        yield SchemaCase(f"{name}:maxLength", _place(path, "a" * (n + 1)), name, f"may not be more than {n} bytes")
    if "pattern" in schema:
        yield SchemaCase(f"{name}:pattern", _place(path, _not_matching(schema["pattern"])), name,
                         f"should match '{schema['pattern']}'")
    if "minItems" in schema:
        n = schema["minItems"]
        yield SchemaCase(f"{name}:minItems", _place(path, [_item_value(schema["items"], i) for i in range(n - 1)]),
                         name, f"should have at least {n} items")
    if "maxItems" in schema:
        n = schema["maxItems"]
        yield SchemaCase(f"{name}:maxItems", _place(path, [_item_value(schema["items"], i) for i in range(n + 1)]),
                         name, f"must have at most {n} items")
    if "maxProperties" in schema:
        n = schema["maxProperties"]
        values = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else {}
        yield SchemaCase(f"{name}:maxProperties",
                         _place(path, {f"k{i}": _item_value(values, i) for i in range(n + 1)}), name,
                         f"must have at most {n} items")
    for key in schema.get("required") or ():
        if not path:
            yield SchemaCase(f"{key}:required", None, key, "Required value")
        elif path == ["spec"]:
            spec = copy.deepcopy(BASE_SPEC)
            spec.pop(key)
            yield SchemaCase(f"{name}.{key}:required", spec, f"{name}.{key}", "Required value")
        else:
            yield SchemaCase(f"{name}.{key}:required", _place(path, {}), f"{name}.{key}", "Required value")
    for key, child in (schema.get("properties") or {}).items():
        if path or key == "spec":  # below the root only spec is ours to test (metadata is the API server's)
            yield from schema_cases(child, [*path, key])
    if isinstance(schema.get("items"), dict):
        yield from schema_cases(schema["items"], [*path, 0])
    if isinstance(schema.get("additionalProperties"), dict):
        yield from schema_cases(schema["additionalProperties"], [*path, "k"])


SCHEMA_CASES = list(schema_cases(ROOT_SCHEMA, []))


def test_the_schema_walk_found_every_kind_of_constraint() -> None:
    # A guard against a walker that silently finds nothing (the parametrized test below would then be empty).
    kinds = {case.id.rsplit(":", 1)[1] for case in SCHEMA_CASES}
    assert kinds >= {"enum", "minimum", "exclusiveMinimum", "maximum", "minLength", "maxLength", "pattern", "minItems",
                     "maxItems", "maxProperties", "required"}
    assert len(SCHEMA_CASES) > 60


@pytest.mark.parametrize("case", SCHEMA_CASES, ids=[c.id for c in SCHEMA_CASES])
def test_schema_constraint_is_enforced(api: Api, ns: str, case: SchemaCase) -> None:
    refusal = refused(api.create(ns, body(case.spec)))
    own = [msg for fld, msg in refusal.causes if fld == case.field]
    assert any(case.message in msg for msg in own), (
        f"expected a cause on {case.field} containing {case.message!r}; got {refusal.causes}")


# -- one case per CEL rule, through kubectl as a user meets it ------------------------------------------------
@dataclass(frozen=True)
class RuleCase:
    id: str
    spec: dict[str, Any]
    field: str  # the field kubectl names; "<nil>" for rules on the whole object
    message: str
    name: str = "job"


RULE_CASES = [
    RuleCase("name-not-a-dns-label", with_spec(), "<nil>", "metadata.name must be a DNS label", name="a.b"),
    RuleCase("name-starts-with-a-digit", with_spec(), "<nil>", "metadata.name must be a DNS label", name="1abc"),
    RuleCase("name-too-long-for-pod-names", with_spec(), "<nil>", "metadata.name must be at most 49 characters",
             name="a" * 50),
    RuleCase("service-account-of-the-jobs-relay", with_spec(podTemplate={"serviceAccountName": "job-relay"}),
             "spec.podTemplate.serviceAccountName",
             "spec.podTemplate.serviceAccountName must not be the job's own <name>-relay or <name>-trainer"),
    RuleCase("service-account-of-the-jobs-trainer", with_spec(podTemplate={"serviceAccountName": "job-trainer"}),
             "spec.podTemplate.serviceAccountName",
             "spec.podTemplate.serviceAccountName must not be the job's own <name>-relay or <name>-trainer"),
    RuleCase("service-account-name-syntax", with_spec(podTemplate={"serviceAccountName": "Dataset_Reader"}),
             "spec.podTemplate.serviceAccountName",
             "spec.podTemplate.serviceAccountName must be a ServiceAccount name (a DNS subdomain)"),
    RuleCase("early-stopping-without-metric",
             with_spec(training={"earlyStopping": {"enabled": True}, "monitor": {"metric": "   "}}),
             "spec.training.monitor.metric",
             "spec.training.monitor.metric must be set when spec.training.earlyStopping.enabled is true"),
    RuleCase("resume-best-without-top-k", with_spec(training={"resume": "best", "checkpoint": {"saveTopK": 0}}),
             "spec.training.resume", "spec.training.resume best needs spec.training.checkpoint.saveTopK != 0"),
    RuleCase("val-check-interval-fractional-above-one", with_spec(training={"valCheckInterval": 1.5}),
             "spec.training.valCheckInterval",
             "spec.training.valCheckInterval must be a fraction in (0, 1] or a whole number of batches"),
    RuleCase("resume-relative-path", with_spec(training={"resume": "checkpoints/last.ckpt"}), "spec.training.resume",
             "spec.training.resume must be last, best, none or an absolute checkpoint path"),
    RuleCase("gpu-in-requests", with_spec(resources={"requests": {"nvidia.com/gpu": 1}}), "spec.resources",
             "spec.resources.requests must not set nvidia.com/gpu; use spec.gpusPerNode"),
    RuleCase("gpu-in-limits", with_spec(resources={"limits": {"nvidia.com/gpu": "2"}}), "spec.resources",
             "spec.resources.limits must not set nvidia.com/gpu; use spec.gpusPerNode"),
    RuleCase("output-claim-and-template",
             with_spec(output={"claimName": "c", "volumeClaimTemplate": {"storage": "1Gi"}}), "spec.output",
             "exactly one of spec.output.claimName and spec.output.volumeClaimTemplate must be set"),
    RuleCase("output-neither", with_spec(output={"subPath": "x"}), "spec.output",
             "exactly one of spec.output.claimName and spec.output.volumeClaimTemplate must be set"),
    RuleCase("subpath-absolute", with_spec(output={"claimName": "c", "subPath": "/abs"}), "spec.output.subPath",
             "spec.output.subPath must be a relative path without '..'"),
    RuleCase("subpath-dotdot", with_spec(output={"claimName": "c", "subPath": "a/../../b"}), "spec.output.subPath",
             "spec.output.subPath must be a relative path without '..'"),
    RuleCase("env-value-and-value-from",
             with_spec(podTemplate={"env": [{"name": "A", "value": "x",
                                             "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}),
             "spec.podTemplate.env[0]", "an env entry sets either value or valueFrom, not both"),
    RuleCase("env-from-both", with_spec(podTemplate={"envFrom": [{"configMapRef": {"name": "a"},
                                                                  "secretRef": {"name": "b"}}]}),
             "spec.podTemplate.envFrom[0]", "an envFrom entry sets exactly one of configMapRef and secretRef"),
    RuleCase("env-from-neither", with_spec(podTemplate={"envFrom": [{"prefix": "X_"}]}),
             "spec.podTemplate.envFrom[0]", "an envFrom entry sets exactly one of configMapRef and secretRef"),
    *[RuleCase(f"reserved-volume-{v}", with_spec(podTemplate={"volumes": [{"name": v, "emptyDir": {}}]}),
               "spec.podTemplate.volumes[0]", "the volume names ltj-config, ltj-output, ltj-shm, ltj-relay-token, "
               "ltj-tmp and ltj-home are reserved") for v in sorted(C.RESERVED_VOLUME_NAMES)],
    *[RuleCase(f"mount-path-{slug}", with_spec(podTemplate={"volumes": [{"name": "data", "emptyDir": {}}],
                                                            "volumeMounts": [{"name": "data", "mountPath": path}]}),
               "spec.podTemplate.volumeMounts[0]",
               "volumeMounts need an absolute mountPath outside /etc/ltj, /output and /dev/shm")
      for slug, path in [("relative", "data"), ("config-dir", "/etc/ltj"), ("under-output", "/output/data"),
                         ("shm", "/dev/shm")]],
    RuleCase("retry-invalid-config", with_spec(runPolicy={"retryableExitCodes": [3, 2]}),
             "spec.runPolicy.retryableExitCodes",
             "exit code 2 means an invalid trainer configuration and is never retried"),
    # What the operator's parser (spec.py) refuses at run time, refused at admission instead.
    *[RuleCase(f"image-{slug}", with_spec(image=image), "spec.image",
               "spec.image must be an image reference without whitespace")
      for slug, image in [("empty", ""), ("blank", " "), ("with-space", "ltj-trainer: 1.0")]],
    RuleCase("blank-metric-without-early-stopping", with_spec(training={"earlyStopping": {"enabled": False},
                                                                        "monitor": {"metric": " "}}),
             "spec.training.monitor.metric", "spec.training.monitor.metric must not be blank"),
    RuleCase("resume-nul", with_spec(training={"resume": "/output/last\x00.ckpt"}), "spec.training.resume",
             "spec.training.resume must not contain NUL characters"),
    *[RuleCase(f"resource-name-in-{which}", with_spec(resources={which: {"cpu cores": "2"}}), f"spec.resources.{which}",
               f"spec.resources.{which} keys must be resource names") for which in ("requests", "limits")],
    RuleCase("claim-name", with_spec(output={"claimName": "Not_A_Claim"}), "spec.output.claimName",
             "spec.output.claimName must be a PersistentVolumeClaim name"),
    RuleCase("storage-class-name", with_spec(output={"volumeClaimTemplate": {"storage": "1Gi",
                                                                             "storageClassName": "Fast SSD"}}),
             "spec.output.volumeClaimTemplate.storageClassName",
             "spec.output.volumeClaimTemplate.storageClassName must be empty or a StorageClass name"),
    RuleCase("label-key", with_spec(podTemplate={"metadata": {"labels": {"cost center": "ml"}}}),
             "spec.podTemplate.metadata.labels", "spec.podTemplate.metadata.labels keys must be label keys"),
    RuleCase("label-value", with_spec(podTemplate={"metadata": {"labels": {"team": "-ml-"}}}),
             "spec.podTemplate.metadata.labels[team]", "spec.podTemplate.metadata.labels values must be label values"),
    RuleCase("annotation-key", with_spec(podTemplate={"metadata": {"annotations": {"example.com/": "x"}}}),
             "spec.podTemplate.metadata.annotations",
             "spec.podTemplate.metadata.annotations keys must be annotation keys"),
    RuleCase("node-selector-key", with_spec(podTemplate={"nodeSelector": {"gpu/type/model": "a100"}}),
             "spec.podTemplate.nodeSelector", "spec.podTemplate.nodeSelector keys must be label keys"),
    RuleCase("node-selector-value", with_spec(podTemplate={"nodeSelector": {"pool": "gpu pool"}}),
             "spec.podTemplate.nodeSelector[pool]", "spec.podTemplate.nodeSelector values must be label values"),
    RuleCase("toleration-exists-with-value",
             with_spec(podTemplate={"tolerations": [{"key": "gpu", "operator": "Exists", "value": "a100"}]}),
             "spec.podTemplate.tolerations[0].value",
             "spec.podTemplate.tolerations[].value must be empty when operator is Exists"),
    RuleCase("toleration-equal-without-key", with_spec(podTemplate={"tolerations": [{"value": "a100"}]}),
             "spec.podTemplate.tolerations[0].key",
             "spec.podTemplate.tolerations[].key must be set when operator is Equal"),
    RuleCase("toleration-key", with_spec(podTemplate={"tolerations": [{"key": "", "operator": "Exists"}]}),
             "spec.podTemplate.tolerations[0].key", "spec.podTemplate.tolerations[].key must be a taint key"),
    RuleCase("priority-class-name", with_spec(podTemplate={"priorityClassName": "High"}),
             "spec.podTemplate.priorityClassName", "spec.podTemplate.priorityClassName must be a PriorityClass name"),
    RuleCase("pull-secret-name", with_spec(podTemplate={"imagePullSecrets": [{"name": "reg cred"}]}),
             "spec.podTemplate.imagePullSecrets[0].name",
             "spec.podTemplate.imagePullSecrets[].name must be a Secret name"),
    RuleCase("env-name", with_spec(podTemplate={"env": [{"name": "1ST", "value": "x"}]}),
             "spec.podTemplate.env[0].name", "spec.podTemplate.env[].name must be a variable name"),
    RuleCase("env-from-prefix", with_spec(podTemplate={"envFrom": [{"prefix": "APP=", "configMapRef": {"name": "c"}}]}),
             "spec.podTemplate.envFrom[0].prefix", "spec.podTemplate.envFrom[].prefix must be a variable name prefix"),
    RuleCase("env-from-config-map-name", with_spec(podTemplate={"envFrom": [{"configMapRef": {"name": "App_Config"}}]}),
             "spec.podTemplate.envFrom[0].configMapRef.name",
             "spec.podTemplate.envFrom[].configMapRef.name must be a ConfigMap name"),
    RuleCase("env-from-secret-name", with_spec(podTemplate={"envFrom": [{"secretRef": {"name": "db/password"}}]}),
             "spec.podTemplate.envFrom[0].secretRef.name",
             "spec.podTemplate.envFrom[].secretRef.name must be a Secret name"),
    RuleCase("volume-name", with_spec(podTemplate={"volumes": [{"name": "Data", "emptyDir": {}}]}),
             "spec.podTemplate.volumes[0].name", "spec.podTemplate.volumes[].name must be a volume name"),
    RuleCase("mount-without-volume", with_spec(podTemplate={
        "volumes": [{"name": "data", "emptyDir": {}}], "volumeMounts": [{"name": "dataset", "mountPath": "/data"}]}),
             "spec.podTemplate.volumeMounts", "spec.podTemplate.volumeMounts[].name must name one of"),
    RuleCase("mount-without-any-volume", with_spec(podTemplate={"volumeMounts": [{"name": "data", "mountPath": "/d"}]}),
             "spec.podTemplate.volumeMounts", "spec.podTemplate.volumeMounts[].name must name one of"),
    *[RuleCase(f"mount-path-root-{slug}", with_spec(podTemplate={
        "volumes": [{"name": "data", "emptyDir": {}}], "volumeMounts": [{"name": "data", "mountPath": path}]}),
               "spec.podTemplate.volumeMounts[0].mountPath", "spec.podTemplate.volumeMounts[].mountPath must not be /")
      for slug, path in [("slash", "/"), ("slashes", "//")]],
    *[RuleCase(f"mount-path-twice-{slug}", with_spec(podTemplate={
        "volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}],
        "volumeMounts": [{"name": "a", "mountPath": "/data"}, {"name": "b", "mountPath": second}]}),
               "spec.podTemplate.volumeMounts", "spec.podTemplate.volumeMounts must not use a mountPath twice")
      for slug, second in [("same", "/data"), ("trailing-slash", "/data/")]],
    # Not CEL: list-type map keys, refused like duplicates in a pod.
    RuleCase("env-twice", with_spec(podTemplate={"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}),
             "spec.podTemplate.env[1]", 'Duplicate value: {"name":"A"}'),
    RuleCase("volume-twice", with_spec(podTemplate={"volumes": [{"name": "data", "emptyDir": {}},
                                                                {"name": "data", "emptyDir": {}}]}),
             "spec.podTemplate.volumes[1]", 'Duplicate value: {"name":"data"}'),
]


@pytest.mark.parametrize("case", RULE_CASES, ids=[c.id for c in RULE_CASES])
def test_cel_rule_rejects_with_its_message(kube: Kube, ns: str, case: RuleCase) -> None:
    proc = kube.kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-",
                        input=yaml.safe_dump(body(case.spec, case.name)), check=False)
    assert proc.returncode != 0, f"accepted: {proc.stdout}"
    assert f"{case.field}: " in proc.stderr and case.message in proc.stderr, proc.stderr
    # The base is schema-valid, so the rule itself rejected the job (not a schema error that skipped CEL).
    assert CEL_SKIPPED not in proc.stderr, proc.stderr


# Rules on the status, which only status writes reach: (id, status patch, field, message).
STATUS_RULE_CASES = [
    ("trainer-status-needs-its-update-time", {"trainerStatus": {"progressPercentage": 10}}, "status.trainerStatus",
     "lastUpdatedTime is required when trainerStatus is present"),
]


@pytest.mark.parametrize("patch,field,message", [c[1:] for c in STATUS_RULE_CASES], ids=[c[0] for c in STATUS_RULE_CASES])
def test_status_cel_rule_rejects_with_its_message(kube: Kube, ns: str, patch: dict[str, Any], field: str,
                                                  message: str) -> None:
    name = "status-rule"
    kube.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(body(with_spec(), name)))
    proc = kube.kubectl("patch", C.PLURAL, name, "-n", ns, "--subresource=status", "--type=merge", "--dry-run=server",
                        "-p", json.dumps({"status": patch}), check=False)
    assert proc.returncode != 0, f"accepted: {proc.stdout}"
    assert f"{field}: " in proc.stderr and message in proc.stderr, proc.stderr


def _rules(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for rule in schema.get("x-kubernetes-validations") or ():
        yield path, rule
    for key, child in (schema.get("properties") or {}).items():
        yield from _rules(child, f"{path}.{key}" if path else key)
    if isinstance(schema.get("items"), dict):
        yield from _rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _rules(schema["additionalProperties"], f"{path}{{}}")


TRANSITION_RULE = "self == oldSelf"


def test_every_cel_rule_of_the_crd_has_a_case() -> None:
    rules = list(_rules(ROOT_SCHEMA))
    assert len(rules) >= 20
    for path, rule in rules:
        if rule["rule"] == TRANSITION_RULE:
            assert path in IMMUTABLE_FIELDS, f"{path}: an immutability rule without an update case"
        else:
            messages = [case.message for case in RULE_CASES] + [c[3] for c in STATUS_RULE_CASES]
            assert any(m in rule["message"] for m in messages), f"{path}: no case for {rule}"


# -- CEL rules accept what they should -------------------------------------------------------------------
ACCEPTED = {
    "service-account-of-the-user": with_spec(podTemplate={"serviceAccountName": "dataset-reader"}),
    "val-check-interval-whole-batches": with_spec(training={"valCheckInterval": 50}),
    "val-check-interval-fraction": with_spec(training={"valCheckInterval": 0.25}),
    "val-check-interval-one": with_spec(training={"valCheckInterval": 1}),
    "resume-absolute-path": with_spec(training={"resume": "/output/checkpoints/last.ckpt"}),
    "resume-best-with-top-k": with_spec(training={"resume": "best", "checkpoint": {"saveTopK": 1}}),
    "resume-none-without-top-k": with_spec(training={"resume": "none", "checkpoint": {"saveTopK": 0}}),
    "subpath-empty-is-the-volume-root": with_spec(output={"claimName": "c", "subPath": ""}),
    "subpath-nested": with_spec(output={"claimName": "c", "subPath": "team/a..b/run-1"}),
    "template-only": with_spec(output={"volumeClaimTemplate": {"storage": "10Gi", "accessModes": ["ReadWriteMany"]}}),
    "largest-gang": with_spec(nodes=256, gpusPerNode=16),
    "cpu-and-memory-resources": with_spec(resources={"requests": {"cpu": "500m", "memory": "1Gi"},
                                                     "limits": {"memory": 2147483648}}),
    "mount-beside-reserved-paths": with_spec(podTemplate={
        "volumes": [{"name": "data", "emptyDir": {}}],
        "volumeMounts": [{"name": "data", "mountPath": "/output2"}, {"name": "data", "mountPath": "/etc/ltjx"}]}),
    "env-value-from": with_spec(podTemplate={"env": [{"name": "POD", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.name"}}}], "envFrom": [{"secretRef": {"name": "s"}}, {"configMapRef": {"name": "c"}}]}),
    "retryable-exit-codes": with_spec(runPolicy={"retryableExitCodes": [1, 3, 255]}),
    "names-labels-and-selectors": with_spec(
        image="registry.example.com:5000/ml/ltj-trainer@sha256:" + "0" * 64,
        output={"volumeClaimTemplate": {"storage": "1Gi", "storageClassName": ""}},
        resources={"requests": {"cpu": "1", "example.com/fpga": 1}},
        podTemplate={"metadata": {"labels": {"example.com/team": "ml", "empty": ""},
                                  "annotations": {"example.com/owner": "ml team"}},
                     "nodeSelector": {"node.kubernetes.io/instance-type": "p4d.24xlarge"},
                     "tolerations": [{"operator": "Exists"}, {"key": "gpu", "value": "a100", "effect": "NoSchedule"}],
                     "priorityClassName": "high.priority", "imagePullSecrets": [{"name": "reg.cred"}],
                     "env": [{"name": "my.setting-1", "value": ""}, {"name": "_B", "value": "x"}],
                     "envFrom": [{"prefix": "APP_", "configMapRef": {"name": "app.config"}}]}),
    "mounts-sharing-a-prefix": with_spec(podTemplate={
        "volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}],
        "volumeMounts": [{"name": "a", "mountPath": "/data"}, {"name": "b", "mountPath": "/data2"},
                         {"name": "a", "mountPath": "/data/sub/"}, {"name": "b", "mountPath": "/da"}]}),
}


@pytest.mark.parametrize("spec", ACCEPTED.values(), ids=list(ACCEPTED))
def test_valid_edge_cases_are_accepted(api: Api, ns: str, spec: dict[str, Any]) -> None:
    accepted(api.create(ns, body(spec)))


def test_longest_valid_name_is_accepted(api: Api, ns: str) -> None:
    name = "a" * C.MAX_JOB_NAME_LENGTH
    accepted(api.create(ns, body(with_spec(), name)))
    assert len(f"{name}-node-{C.MAX_NODES - 1}") <= 63  # the reason for the limit


# -- immutability ----------------------------------------------------------------------------------------------
IMMUTABLE_FIELDS = {"spec.model", "spec.data", "spec.nodes", "spec.gpusPerNode", "spec.output"}
EXISTING = with_spec(nodes=2, data={"name": "digits", "batchSize": 32}, output={"claimName": "c", "subPath": "x"})

IMMUTABLE = {
    "nodes": ({"nodes": 4}, "spec.nodes", "spec.nodes is immutable"),
    "nodes-removed-to-default": ({"nodes": None}, "spec.nodes", "spec.nodes is immutable"),
    "gpus-per-node": ({"gpusPerNode": 1}, "spec.gpusPerNode", "spec.gpusPerNode is immutable"),
    "model-name": ({"model": {"name": "tabular_mlp"}}, "spec.model", "spec.model is immutable"),
    "model-args": ({"model": {"args": {"hidden": 8}}}, "spec.model", "spec.model is immutable"),
    "data-batch-size": ({"data": {"batchSize": 64}}, "spec.data", "spec.data is immutable"),
    "data-name": ({"data": {"name": "csv"}}, "spec.data", "spec.data is immutable"),
    "output-claim": ({"output": {"claimName": "other"}}, "spec.output", "spec.output is immutable"),
    "output-sub-path": ({"output": {"subPath": "y"}}, "spec.output", "spec.output is immutable"),
}
MUTABLE = {
    "training-max-epochs": ({"training": {"maxEpochs": 20}}, ("training", "maxEpochs"), 20),
    "training-precision": ({"training": {"precision": "bf16"}}, ("training", "precision"), "bf16"),
    "suspend": ({"runPolicy": {"suspend": True}}, ("runPolicy", "suspend"), True),
    "backoff-limit": ({"runPolicy": {"backoffLimit": 7}}, ("runPolicy", "backoffLimit"), 7),
    "image": ({"image": "ltj-trainer:other"}, ("image",), "ltj-trainer:other"),
}


@pytest.mark.parametrize("name", list(IMMUTABLE))
def test_immutable_fields_are_refused_on_update(api: Api, ns: str, name: str) -> None:
    patch, field_path, message = IMMUTABLE[name]
    created = accepted(api.create(ns, body(EXISTING, f"immutable-{name}"), dry_run=False))
    refusal = refused(api.merge_patch(ns, f"immutable-{name}", {"spec": patch}))
    assert any(fld == field_path and message in msg for fld, msg in refusal.causes), refusal.causes
    after = accepted(api.get(ns, f"immutable-{name}"))
    assert after["spec"] == created["spec"]
    assert after["metadata"]["generation"] == created["metadata"]["generation"]


@pytest.mark.parametrize("name", list(MUTABLE))
def test_mutable_fields_are_accepted_on_update(api: Api, ns: str, name: str) -> None:
    patch, field_path, value = MUTABLE[name]
    created = accepted(api.create(ns, body(EXISTING, f"mutable-{name}"), dry_run=False))
    updated = accepted(api.merge_patch(ns, f"mutable-{name}", {"spec": patch}))
    got: Any = updated["spec"]
    for key in field_path:
        got = got[key]
    assert got == value
    assert updated["metadata"]["generation"] == created["metadata"]["generation"] + 1


def test_kubectl_names_the_immutable_field(kube: Kube, ns: str) -> None:
    kube.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(body(EXISTING, "kubectl-patch")))
    proc = kube.kubectl("patch", "ltj", "kubectl-patch", "-n", ns, "--type=merge", "-p", '{"spec":{"nodes":3}}',
                        check=False)
    assert proc.returncode != 0
    assert "spec.nodes: Invalid value" in proc.stderr and "spec.nodes is immutable" in proc.stderr, proc.stderr


# -- defaults ---------------------------------------------------------------------------------------------------
DEFAULTED_SPEC = {
    "model": {"name": "digits_cnn"},
    "output": {"claimName": "checkpoints"},
    "nodes": 1,
    "gpusPerNode": 0,
    "data": {"name": "digits", "batchSize": 64, "numWorkers": 0},
    "training": {
        "maxEpochs": 10, "precision": "fp32", "valCheckInterval": 1, "seed": 42, "testAfterFit": True,
        "resume": "last", "monitor": {"metric": "val_loss", "mode": "min"},
        "earlyStopping": {"enabled": True, "patience": 3, "minDelta": 0}, "checkpoint": {"saveTopK": 3},
    },
    "runPolicy": {"backoffLimit": 3, "cleanPodPolicy": "Running", "suspend": False},
}


def test_defaults_are_applied_on_create(kube: Kube, ns: str) -> None:
    kube.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(body(with_spec(), "defaults")))
    stored = kube.get("ltj", "defaults", "-n", ns)
    assert stored["spec"] == DEFAULTED_SPEC
    # The operator reads the same job whether or not the API server filled the defaults in.
    meta = {"name": "defaults", "namespace": ns, "uid": stored["metadata"]["uid"], "generation": 1}
    assert parse_job({"metadata": meta, "spec": stored["spec"]}).spec == parse_job({"metadata": meta,
                                                                                  "spec": with_spec()}).spec


def test_nested_defaults_fill_partial_objects(kube: Kube, ns: str) -> None:
    spec = with_spec(training={"monitor": {"mode": "max"}, "earlyStopping": {"patience": 9}},
                     runPolicy={"cleanPodPolicy": "All"}, data={"name": "csv"})
    kube.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(body(spec, "partial")))
    stored = kube.get("ltj", "partial", "-n", ns)["spec"]
    assert stored["training"]["monitor"] == {"metric": "val_loss", "mode": "max"}
    assert stored["training"]["earlyStopping"] == {"enabled": True, "patience": 9, "minDelta": 0}
    assert stored["training"]["maxEpochs"] == 10 and stored["training"]["precision"] == "fp32"
    assert stored["runPolicy"] == {"backoffLimit": 3, "cleanPodPolicy": "All", "suspend": False}
    assert stored["data"] == {"name": "csv", "batchSize": 64, "numWorkers": 0}


# -- the samples -------------------------------------------------------------------------------------------------
def _leaves(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from _leaves(child, (*path, key))
    elif isinstance(value, list) and value:
        for i, child in enumerate(value):
            yield from _leaves(child, (*path, i))
    else:
        yield path, value


def _lookup(obj: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_is_accepted_unchanged(kube: Kube, ns: str, sample: Path) -> None:
    manifest = yaml.safe_load(sample.read_text())
    manifest["metadata"].pop("namespace", None)  # the GPU sample names its team's namespace
    proc = kube.kubectl("apply", "--dry-run=server", "-n", ns, "-o", "json", "-f", "-",
                        input=yaml.safe_dump(manifest), check=False)
    assert proc.returncode == 0, proc.stderr
    stored = json.loads(proc.stdout)
    # Nothing the user wrote was pruned or rewritten (an undeclared field would silently vanish).
    for path, value in _leaves(manifest["spec"], ("spec",)):
        try:
            got = _lookup(stored, path)
        except (KeyError, IndexError):
            pytest.fail(f"{sample.name}: {'.'.join(map(str, path))} was pruned by the API server")
        assert got == value or (isinstance(value, (int, float)) and float(got) == float(value)), (path, got, value)


def test_sample_file_applies_as_is(kube: Kube, ns: str) -> None:
    proc = kube.kubectl("apply", "--dry-run=server", "-n", ns, "-f", str(CRD_DIR / "samples"
                                                                                 / "cpu-digits-2node.yaml"),
                        check=False)
    assert proc.returncode == 0 and "created (server dry run)" in proc.stdout, proc.stderr
