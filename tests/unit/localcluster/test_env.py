from __future__ import annotations

import base64
from decimal import Decimal

import pytest

from ltj_localcluster.env import (
    EnvConfigError,
    PodFacts,
    build_env,
    expand_argv,
    field_ref_value,
    format_map,
    referenced_objects,
    service_env_vars,
)
from ltj_localcluster.expansion import expand, mapping_for
from ltj_localcluster.quantity import QuantityError, divide_ceil, parse_quantity

pytestmark = pytest.mark.unit

FACTS = PodFacts(pod_ip="10.250.1.7", host_ip="127.0.0.1", node_allocatable={"cpu": Decimal(8), "memory": Decimal(16 * 2**30)})


def pod(**spec: object) -> dict:
    return {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u-1",
            "labels": {"b": "2", "a": "1"},
            "annotations": {"note": 'say "hi"'},
        },
        "spec": {"nodeName": "ltj-node-0", "serviceAccountName": "sa", **spec},
    }


@pytest.mark.parametrize(
    ("text", "env", "want"),
    [
        ("$(A)-$(B)", {"A": "x"}, "x-$(B)"),
        ("$$(A)", {"A": "x"}, "$(A)"),
        ("$$", {}, "$"),
        ("a$", {}, "a$"),
        ("$(A", {"A": "x"}, "$(A"),
        ("$A", {"A": "x"}, "$A"),
        ("$()", {"": "e"}, "e"),
        ("pre$(A)post$(A)", {"A": "1"}, "pre1post1"),
    ],
)
def test_expansion_follows_kubelet_rules(text: str, env: dict, want: str) -> None:
    assert expand(text, mapping_for(env)) == want


def test_quantities() -> None:
    assert parse_quantity("500m") == Decimal("0.5")
    assert parse_quantity("16Gi") == 16 * 2**30
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("2k") == 2000
    assert divide_ceil(Decimal("0.5"), Decimal(1)) == 1
    with pytest.raises(QuantityError):
        parse_quantity("12 apples")


def test_env_order_precedence_expansion_and_service_vars() -> None:
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}, {"secretRef": {"name": "sec"}}],
        "env": [
            {"name": "A", "value": "a"},
            {"name": "B", "value": "$(A)-$(CM_k)-$(KUBERNETES_SERVICE_HOST)-$(LATER)"},
            {"name": "LATER", "value": "l"},
            {"name": "PASS", "value": "override"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": "999"},
        ],
    }
    env = build_env(
        pod(),
        container,
        config_maps={"cm": {"data": {"k": "v"}}},
        secrets={"sec": {"data": {"PASS": base64.b64encode(b"pw").decode(), "TOKEN": base64.b64encode(b"t").decode()}}},
        service_env=service_env_vars("10.250.1.1", 6443),
        facts=FACTS,
    )
    d = dict(env)
    assert d["CM_k"] == "v"
    assert d["B"] == "a-v-10.250.1.1-$(LATER)"  # only earlier names expand
    assert d["PASS"] == "override" and d["TOKEN"] == "t"
    assert d["KUBERNETES_SERVICE_PORT"] == "999"  # defined by the container: no duplicate
    assert [k for k, _ in env].count("KUBERNETES_SERVICE_PORT") == 1
    assert d["KUBERNETES_SERVICE_HOST"] == "10.250.1.1"
    names = [k for k, _ in env]
    assert names.index("A") < names.index("KUBERNETES_SERVICE_HOST")  # service vars come last


def test_downward_api_fields() -> None:
    p = pod()
    c = {
        "name": "c",
        "resources": {"limits": {"cpu": "1500m"}, "requests": {"memory": "1Gi"}},
        "env": [
            {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['a']"}}},
            {"name": "AN", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HIP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "CPUM", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
            {"name": "MEMLIM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Gi"}}},
            {"name": "MEMREQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory", "divisor": "1Mi"}}},
        ],
    }
    p["spec"]["containers"] = [c]
    d = dict(build_env(p, c, config_maps={}, secrets={}, service_env={}, facts=FACTS))
    assert d == {
        "N": "p",
        "NS": "ns",
        "UID": "u-1",
        "L": "1",
        "AN": 'say "hi"',
        "NODE": "ltj-node-0",
        "SA": "sa",
        "IP": "10.250.1.7",
        "HIP": "127.0.0.1",
        "CPU": "2",
        "CPUM": "1500",
        "MEMLIM": "16",  # no limit: the node's allocatable
        "MEMREQ": "1024",
    }


def test_labels_render_sorted_and_quoted() -> None:
    assert format_map({"b": "2", "a": 'x"y'}) == 'a="x\\"y"\nb="2"'
    assert field_ref_value(pod(), "metadata.labels", FACTS) == 'a="1"\nb="2"'


@pytest.mark.parametrize(
    ("env", "cms", "secrets", "message"),
    [
        ([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}], {"nope": None}, {}, 'configmap "nope" not found'),
        ([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}], {"cm": {"data": {}}}, {}, "couldn't find key k in ConfigMap ns/cm"),
        ([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}], {}, {"s": None}, 'secret "s" not found'),
    ],
)
def test_missing_references_are_config_errors(env: list, cms: dict, secrets: dict, message: str) -> None:
    with pytest.raises(EnvConfigError, match=message):
        build_env(pod(), {"name": "c", "env": env}, config_maps=cms, secrets=secrets, service_env={}, facts=FACTS)


def test_optional_references_are_skipped() -> None:
    env = [
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s", "key": "missing", "optional": True}}},
    ]
    got = build_env(pod(), {"name": "c", "env": env, "envFrom": [{"configMapRef": {"name": "nope", "optional": True}}]},
                    config_maps={"nope": None}, secrets={"s": {"data": {}}}, service_env={}, facts=FACTS)
    assert got == []


def test_argv_expansion_and_references() -> None:
    assert expand_argv(["run", "$(A)", "$$(A)", "$(MISSING)"], [("A", "1")]) == ["run", "1", "$(A)", "$(MISSING)"]
    c = {
        "envFrom": [{"configMapRef": {"name": "a"}}, {"secretRef": {"name": "b"}}],
        "env": [{"name": "x", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
                {"name": "y", "valueFrom": {"secretKeyRef": {"name": "d", "key": "k"}}}],
    }
    assert referenced_objects(c) == ({"a", "c"}, {"b", "d"})
