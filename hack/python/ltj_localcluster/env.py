"""A container's environment, as the kubelet builds it (pure; the caller fetches the objects).

Order and precedence follow kubelet's makeEnvironmentVariables: envFrom in order, then env in
order (later wins), `$(VAR)` in literal values expanded against what is defined so far and the
service variables; service variables are appended unless already defined.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .expansion import expand, mapping_for
from .quantity import divide_ceil, parse_quantity


class EnvConfigError(ValueError):
    """The kubelet's CreateContainerConfigError: a referenced object or key is missing."""


@dataclass(frozen=True)
class PodFacts:
    """Runtime values the downward API can read beyond the pod object itself."""

    pod_ip: str
    host_ip: str
    node_allocatable: Mapping[str, Decimal]


def _labelish(path: str, mapping: Mapping[str, str]) -> str | None:
    m = re.fullmatch(r"metadata\.(?:labels|annotations)\['(.+)'\]", path)
    if m:
        return mapping.get(m.group(1), "")
    return None


def format_map(mapping: Mapping[str, str]) -> str:
    """Labels/annotations as the downward API volume renders them: sorted `key="value"` lines."""
    return "\n".join(f"{k}={json.dumps(mapping[k], ensure_ascii=False)}" for k in sorted(mapping))


def field_ref_value(pod: Mapping[str, Any], path: str, facts: PodFacts) -> str:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    if path == "metadata.name":
        return meta.get("name", "")
    if path == "metadata.namespace":
        return meta.get("namespace", "")
    if path == "metadata.uid":
        return meta.get("uid", "")
    if path == "metadata.labels":
        return format_map(meta.get("labels") or {})
    if path == "metadata.annotations":
        return format_map(meta.get("annotations") or {})
    if path.startswith("metadata.labels["):
        value = _labelish(path, meta.get("labels") or {})
        if value is not None:
            return value
    if path.startswith("metadata.annotations["):
        value = _labelish(path, meta.get("annotations") or {})
        if value is not None:
            return value
    if path == "spec.nodeName":
        return spec.get("nodeName", "")
    if path == "spec.serviceAccountName":
        return spec.get("serviceAccountName", "")
    if path in ("status.podIP", "status.podIPs"):
        return facts.pod_ip
    if path in ("status.hostIP", "status.hostIPs"):
        return facts.host_ip
    raise EnvConfigError(f"unsupported fieldRef fieldPath {path!r}")


def resource_field_value(
    pod: Mapping[str, Any], container_name: str, ref: Mapping[str, Any], facts: PodFacts
) -> str:
    """resourceFieldRef: limits default to the node's allocatable; ceil(value / divisor)."""
    resource = ref.get("resource", "")
    target = ref.get("containerName") or container_name
    containers = [*pod.get("spec", {}).get("initContainers", []), *pod.get("spec", {}).get("containers", [])]
    container = next((c for c in containers if c.get("name") == target), None)
    if container is None:
        raise EnvConfigError(f"resourceFieldRef: container {target!r} not found in pod")
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise EnvConfigError(f"unsupported resourceFieldRef resource {resource!r}")
    values = (container.get("resources") or {}).get(kind) or {}
    if name in values:
        value = parse_quantity(values[name])
    elif kind == "limits":
        value = facts.node_allocatable.get(name, Decimal(0))
    else:
        value = Decimal(0)
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor == 0:
        divisor = Decimal(1)
    return str(divide_ceil(value, divisor))


def _object_data(obj: Mapping[str, Any], secret: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    if secret:
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v).decode("utf-8", errors="replace")
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = v
    else:
        out.update(obj.get("data") or {})
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v).decode("utf-8", errors="replace")
    return out


def build_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    config_maps: Mapping[str, Mapping[str, Any] | None],
    secrets: Mapping[str, Mapping[str, Any] | None],
    service_env: Mapping[str, str],
    facts: PodFacts,
) -> list[tuple[str, str]]:
    """The ordered (name, value) list for the container. Missing objects map to None."""
    ns = pod.get("metadata", {}).get("namespace", "")
    tmp: dict[str, str] = {}

    def source(kind: str, name: str, optional: bool) -> dict[str, str] | None:
        table = config_maps if kind == "ConfigMap" else secrets
        obj = table.get(name)
        if obj is None:
            if optional:
                return None
            raise EnvConfigError(f'{"configmap" if kind == "ConfigMap" else "secret"} "{name}" not found')
        return _object_data(obj, secret=kind == "Secret")

    for i, env_from in enumerate(container.get("envFrom") or []):
        prefix = env_from.get("prefix") or ""
        if "configMapRef" in env_from:
            ref, kind = env_from["configMapRef"], "ConfigMap"
        elif "secretRef" in env_from:
            ref, kind = env_from["secretRef"], "Secret"
        else:
            raise EnvConfigError(f"envFrom[{i}]: needs configMapRef or secretRef")
        data = source(kind, ref.get("name", ""), bool(ref.get("optional")))
        for k, v in (data or {}).items():
            tmp[prefix + k] = v

    mapping = mapping_for(tmp, service_env)
    for env in container.get("env") or []:
        name = env["name"]
        value = env.get("value", "")
        if value:
            tmp[name] = expand(value, mapping)
            continue
        value_from = env.get("valueFrom")
        if not value_from:
            tmp[name] = ""
            continue
        if "fieldRef" in value_from:
            tmp[name] = field_ref_value(pod, value_from["fieldRef"].get("fieldPath", ""), facts)
        elif "resourceFieldRef" in value_from:
            tmp[name] = resource_field_value(pod, container["name"], value_from["resourceFieldRef"], facts)
        elif "configMapKeyRef" in value_from or "secretKeyRef" in value_from:
            kind = "ConfigMap" if "configMapKeyRef" in value_from else "Secret"
            ref = value_from["configMapKeyRef" if kind == "ConfigMap" else "secretKeyRef"]
            optional = bool(ref.get("optional"))
            data = source(kind, ref.get("name", ""), optional)
            if data is None:
                continue
            key = ref.get("key", "")
            if key not in data:
                if optional:
                    continue
                raise EnvConfigError(f"couldn't find key {key} in {kind} {ns}/{ref.get('name', '')}")
            tmp[name] = data[key]
        else:
            raise EnvConfigError(f"env {name}: unsupported valueFrom {sorted(value_from)}")

    result = list(tmp.items())
    result.extend((k, v) for k, v in service_env.items() if k not in tmp)
    return result


def expand_argv(argv: list[str], env: list[tuple[str, str]]) -> list[str]:
    """kubelet's ExpandContainerCommandAndArgs: $(VAR) against the final environment."""
    mapping = mapping_for(dict(env))
    return [expand(a, mapping) for a in argv]


def referenced_objects(container: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """Names of ConfigMaps and Secrets the container's env/envFrom read (to fetch beforehand)."""
    cms: set[str] = set()
    secs: set[str] = set()
    for env_from in container.get("envFrom") or []:
        if "configMapRef" in env_from:
            cms.add(env_from["configMapRef"].get("name", ""))
        if "secretRef" in env_from:
            secs.add(env_from["secretRef"].get("name", ""))
    for env in container.get("env") or []:
        vf = env.get("valueFrom") or {}
        if "configMapKeyRef" in vf:
            cms.add(vf["configMapKeyRef"].get("name", ""))
        if "secretKeyRef" in vf:
            secs.add(vf["secretKeyRef"].get("name", ""))
    return cms, secs


def service_env_vars(host: str, port: int) -> dict[str, str]:
    """The `kubernetes` Service's variables, pointing at the agent's API proxy."""
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": str(port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }
