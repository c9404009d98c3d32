"""Helpers for the chart tests: where the chart is, and picking objects out of rendered output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "ltj-operator"
# Capabilities for rendering: the chart requires >= 1.33 (native sidecars); helm's built-in default
# depends on how it was built, so tests always say which cluster version they render for.
KUBE_VERSION = "1.34.0"
RELEASE = "ltj"
NAMESPACE = "ltj-system"


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None,
         namespace: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None,
        namespace: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''} {namespace or ''}, got {len(found)}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deploy = one(objects, "Deployment")
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    return c


def env_of(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(objects).get("env", [])}
