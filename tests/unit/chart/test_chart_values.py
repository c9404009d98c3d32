"""values.yaml and values.schema.json: every value documented, bad values rejected with a clear message;
the chart's crds/ is a byte-identical copy of the repository's crds/."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from unit.chart.chartlib import CHART, KUBE_VERSION, REPO, container, env_of

pytestmark = pytest.mark.unit

SCHEMA = json.loads((CHART / "values.schema.json").read_text())

# (values, the JSON pointer the error must name, a fragment of the message that says what is wrong)
BAD_VALUES: list[tuple[dict[str, Any], str, str]] = [
    ({"logLevel": "TRACE"}, "/logLevel", "value must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'"),
    ({"logLevel": 10}, "/logLevel", "got number, want string"),
    ({"logFormat": "xml"}, "/logFormat", "value must be one of 'plain', 'full', 'json'"),
    ({"replicaCount": -1}, "/replicaCount", "minimum: got -1, want 0"),
    ({"leaderElection": {"leaseDurationSeconds": 0}}, "/leaderElection/leaseDurationSeconds", "minimum: got 0, want 1"),
    ({"leaderElection": {"renewDeadline": 5}}, "/leaderElection", "additional properties 'renewDeadline' not allowed"),
    ({"replicaCount": "1"}, "/replicaCount", "got string, want integer"),
    ({"watchNamespaces": "team-a"}, "/watchNamespaces", "got string, want array"),
    ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0", "does not match pattern"),
    ({"watchNamespaces": ["team-*"]}, "/watchNamespaces/0", "does not match pattern"),
    ({"watchNamespaces": ["a", "a"]}, "/watchNamespaces", "items at 0 and 1 are equal"),
    ({"watchNamespace": ["a"]}, "", "additional properties 'watchNamespace' not allowed"),
    ({"image": {"repository": "ltj-operator", "pullPolicy": "Sometimes"}}, "/image/pullPolicy",
     "value must be one of 'Always', 'IfNotPresent', 'Never'"),
    ({"image": {"repository": "", "pullPolicy": "Always"}}, "/image/repository", "minLength"),
    ({"image": {"repository": "ltj-operator", "pullPolicy": "Always", "digest": "sha256:xyz"}}, "/image/digest",
     "does not match pattern"),
    ({"image": {"repository": "ltj-operator", "pullPolicy": "Always", "tag": "has space"}}, "/image/tag",
     "does not match pattern"),
    # A tag or digest in the repository would render `repo:tag:appVersion`, an image no node can pull.
    ({"image": {"repository": "ltj-operator:0.1.0", "pullPolicy": "Always"}}, "/image/repository",
     "does not match pattern"),
    ({"image": {"repository": "registry.example.com:5000/ml/ltj-operator:0.1.0", "pullPolicy": "Always"}},
     "/image/repository", "does not match pattern"),
    ({"image": {"repository": f"ltj-operator@sha256:{'a' * 64}", "pullPolicy": "Always"}}, "/image/repository",
     "does not match pattern"),
    ({"defaultTrainerImage": "not an image"}, "/defaultTrainerImage", "does not match pattern"),
    ({"defaultImagePullSecrets": ["regcred"]}, "/defaultImagePullSecrets/0", "got string, want object"),
    ({"defaultImagePullSecrets": [{"name": "Reg_Cred"}]}, "/defaultImagePullSecrets/0/name", "does not match pattern"),
    ({"defaultImagePullSecrets": [{"name": "a"}, {"name": "a"}]}, "/defaultImagePullSecrets",
     "items at 0 and 1 are equal"),
    ({"relayImage": 5}, "/relayImage", "got number, want string"),
    ({"relayImagePullPolicy": "always"}, "/relayImagePullPolicy", "value must be one of"),
    ({"resyncSeconds": 0}, "/resyncSeconds", "minimum: got 0, want 1"),
    ({"workers": 0}, "/workers", "minimum: got 0, want 1"),
    ({"relayTokenExpirationSeconds": 60}, "/relayTokenExpirationSeconds", "minimum: got 60, want 600"),
    ({"stallDetection": {"factor": 1, "minSeconds": 0}}, "/stallDetection/factor", "exclusiveMinimum"),
    ({"healthPort": 80}, "/healthPort", "minimum: got 80, want 1,024"),
    ({"healthPort": "8080"}, "/healthPort", "got string, want integer"),
    ({"metrics": {"port": 80}}, "/metrics/port", "minimum: got 80, want 1,024"),
    ({"metrics": {"enabled": "yes"}}, "/metrics/enabled", "got string, want boolean"),
    ({"metrics": {"serviceMonitor": {"interval": "30"}}}, "/metrics/serviceMonitor/interval", "does not match pattern"),
    ({"metrics": {"serviceMonitor": {"labels": {"release": 1}}}}, "/metrics/serviceMonitor/labels/release",
     "got number, want string"),
    ({"metrics": {"servicemonitor": {"enabled": True}}}, "/metrics",
     "additional properties 'servicemonitor' not allowed"),
    ({"metrics": {"dashboard": {"namespace": "Monitoring"}}}, "/metrics/dashboard/namespace", "anyOf"),
    ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory", "does not match pattern"),
    ({"resources": {"limit": {"memory": "1Gi"}}}, "/resources", "additional properties 'limit' not allowed"),
    ({"securityContext": {"allowPrivilegeEscalation": True, "capabilities": {"drop": ["ALL"]}}},
     "/securityContext/allowPrivilegeEscalation", "value must be false"),
    ({"securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["NET_RAW"]}}},
     "/securityContext/capabilities/drop", "no items match contains schema"),
    ({"podSecurityContext": {"runAsNonRoot": False, "seccompProfile": {"type": "RuntimeDefault"}}},
     "/podSecurityContext/runAsNonRoot", "value must be true"),
    ({"podSecurityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "Unconfined"}}},
     "/podSecurityContext/seccompProfile/type", "value must be one of"),
    ({"serviceAccount": {"create": False}}, "/serviceAccount/name", "minLength: got 0, want 1"),
    ({"serviceAccount": {"create": "yes"}}, "/serviceAccount/create", "got string, want boolean"),
    ({"rbac": {"create": True, "aggregatedRoles": {"create": True, "namePrefix": "LTJ"}}},
     "/rbac/aggregatedRoles/namePrefix", "does not match pattern"),
    ({"extraEnv": [{"name": "LTJ_LOG_LEVEL", "value": "DEBUG"}]}, "/extraEnv/0/name", "'not' failed"),
    # The API server refuses a non-string env value: the release would fail after helm said yes.
    ({"extraEnv": [{"name": "NO_PROXY_WORKERS", "value": 4}]}, "/extraEnv/0/value", "got number, want string"),
    ({"extraEnv": [{"name": "DEBUG", "value": True}]}, "/extraEnv/0/value", "got boolean, want string"),
    ({"extraEnv": [{"name": "A", "vaule": "x"}]}, "/extraEnv/0", "additional properties 'vaule' not allowed"),
    ({"extraEnv": [{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
     "/extraEnv/0", "'not' failed"),
    ({"nodeSelector": {"pool": 1}}, "/nodeSelector/pool", "got number, want string"),
    # The API server refuses a binding with both; helm would install half a release.
    ({"admissionPolicy": {"validationActions": ["Deny", "Warn"]}}, "/admissionPolicy/validationActions",
     "'not' failed"),
    ({"admissionPolicy": {"validationActions": []}}, "/admissionPolicy/validationActions", "minItems"),
    ({"admissionPolicy": {"validationActions": ["Block"]}}, "/admissionPolicy/validationActions/0",
     "value must be one of 'Deny', 'Warn', 'Audit'"),
    # Volume source names go into the policy's CEL: nothing but a field name.
    ({"admissionPolicy": {"safeVolumeSources": ["hostPath']) || true || (["]}}, "/admissionPolicy/safeVolumeSources/0",
     "does not match pattern"),
    ({"admissionPolicy": {"namespaceSelector": {"matchLabel": {"a": "b"}}}}, "/admissionPolicy/namespaceSelector",
     "additional properties 'matchLabel' not allowed"),
]


def schema_error(helm, values_file, values: dict[str, Any]) -> str:
    proc = helm("template", "ltj", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(values_file(values)),
                check=False)
    assert proc.returncode != 0, f"helm accepted bad values {values}:\n{proc.stdout[:2000]}"
    return proc.stderr


@pytest.mark.parametrize("values,pointer,message", BAD_VALUES, ids=[json.dumps(v)[:60] for v, _, _ in BAD_VALUES])
def test_schema_rejects_bad_values_with_a_clear_message(helm, values_file, values, pointer, message):
    err = schema_error(helm, values_file, values)
    assert "values don't meet the specifications of the schema" in err, err
    # The message names the offending value's path and what is wrong with it.
    lines = [ln.strip() for ln in err.splitlines() if ln.strip().startswith(f"- at '{pointer}'")]
    assert lines, f"no error at {pointer!r}:\n{err}"
    assert message in err, err


def test_schema_refuses_every_env_name_the_chart_sets(render, helm, values_file):
    """extraEnv cannot repeat a variable the Deployment already sets (which one would win is up to the
    kubelet, and helm upgrade's patch refuses duplicate names)."""
    names = sorted(env_of(render()))
    assert len(names) > 10
    err = schema_error(helm, values_file, {"extraEnv": [{"name": n, "value": "x"} for n in names]})
    refused = {names[int(m)] for m in re.findall(r"- at '/extraEnv/(\d+)/name': 'not' failed", err)}
    assert refused == set(names), f"not refused: {set(names) - refused}\n{err}"


def test_schema_accepts_registry_ports_and_env_sources(render):
    objects = render({"image": {"repository": "localhost:5000/ltj-operator", "tag": "dev", "pullPolicy": "Never"},
                      "extraEnv": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                   {"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]})
    assert container(objects)["image"] == "localhost:5000/ltj-operator:dev"
    assert env_of(objects)["HTTPS_PROXY"] == "http://proxy:3128"


def test_lint_fails_on_bad_values(helm, values_file):
    path = values_file({"logLevel": "TRACE", "replicaCount": -3})
    proc = helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, "-f", str(path), check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "/logLevel" in out and "/replicaCount" in out, out


def test_set_strings_for_decimals_are_accepted(helm):
    """helm --set passes decimals as strings; the schema accepts them where a decimal makes sense."""
    out = helm("template", "ltj", str(CHART), "--kube-version", KUBE_VERSION, "--set", "stallDetection.factor=1.5",
               "--set", "watchNamespaces={team-a,team-b}").stdout
    assert '"1.5"' in out and "--namespace=team-b" in out
    bad = helm("template", "ltj", str(CHART), "--kube-version", KUBE_VERSION, "--set", "stallDetection.factor=0.5",
               check=False)
    assert bad.returncode != 0 and "/stallDetection/factor" in bad.stderr


def test_defaults_satisfy_the_schema_and_schema_covers_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    props = SCHEMA["properties"]
    assert set(values) == set(props) - {"global"}, "values.yaml and values.schema.json disagree on top-level keys"
    assert set(SCHEMA["required"]) <= set(values)


def _key_lines(node: yaml.Node, schema: dict[str, Any], path: str = "") -> list[tuple[str, int]]:
    """(path, line) of every key whose schema is a documented object property (not free-form maps)."""
    out: list[tuple[str, int]] = []
    if not isinstance(node, yaml.MappingNode):
        return out
    for key, value in node.value:
        sub = (schema.get("properties") or {}).get(key.value)
        if sub is None:
            continue
        if "$ref" in sub:
            sub = SCHEMA["definitions"][sub["$ref"].rsplit("/", 1)[1]]
        child = f"{path}.{key.value}" if path else key.value
        out.append((child, key.start_mark.line))
        if sub.get("additionalProperties") is False:
            out.extend(_key_lines(value, sub, child))
    return out


def test_every_value_is_commented():
    text = (CHART / "values.yaml").read_text()
    lines = text.splitlines()
    keys = _key_lines(yaml.compose(text), SCHEMA)
    assert len(keys) > 30
    undocumented = [p for p, ln in keys if not lines[ln - 1].strip().startswith("#")]
    assert not undocumented, f"values without a comment right above them: {undocumented}"


def test_chart_crds_are_byte_identical_copies():
    source = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    copies = sorted(p.name for p in (CHART / "crds").iterdir())
    assert source, "crds/*.yaml is missing"
    assert copies == source, "charts/ltj-operator/crds must hold exactly the files of crds/*.yaml"
    for name in source:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"charts/ltj-operator/crds/{name} differs from crds/{name}: cp crds/{name} charts/ltj-operator/crds/")


def test_notes_tell_how_to_submit_and_watch_a_job():
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "apply -f crds/samples/cpu-digits-2node.yaml" in notes
    assert "get ltj -w" in notes
    assert "kubectl apply --server-side --force-conflicts -f crds/ltj.dev_lightningtrainingjobs.yaml" in notes
