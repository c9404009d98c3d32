"""A pod's volumes as host directories, and the bind mounts each container needs.

Supported: emptyDir (medium Memory -> tmpfs), hostPath, persistentVolumeClaim and ephemeral
(-> the bound PV's hostPath/local directory), configMap, secret, downwardAPI and projected
(serviceAccountToken via the TokenRequest API, configMap, secret, downwardAPI). Anything else is
reported like a kubelet mount failure.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic_writer import PayloadError, write_payload
from .env import EnvConfigError, PodFacts, field_ref_value, resource_field_value
from .expansion import expand, mapping_for
from .kubeapi import ApiError, KubeApi
from .quantity import parse_quantity

log = logging.getLogger(__name__)

DEFAULT_MODE = 0o644
READ_ONLY_KINDS = ("configMap", "secret", "downwardAPI", "projected")


class VolumeError(RuntimeError):
    """A volume cannot be set up (yet); the message is what the kubelet would report."""


@dataclass(frozen=True)
class BindMount:
    source: str
    target: str
    readonly: bool


# ---------------------------------------------------------------- pure payload builders


def object_bytes(obj: Mapping[str, Any], secret: bool) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if secret:
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v)
    else:
        for k, v in (obj.get("data") or {}).items():
            out[k] = v.encode()
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v)
    return out


def key_to_path_payload(
    kind: str,
    name: str,
    data: Mapping[str, bytes] | None,
    items: Sequence[Mapping[str, Any]] | None,
    default_mode: int,
    optional: bool,
) -> dict[str, tuple[bytes, int]]:
    """configMap/secret volume (or projection) files: all keys, or just `items` (key -> path)."""
    if data is None:
        if optional:
            return {}
        raise VolumeError(f'{kind.lower()} "{name}" not found')
    if not items:
        return {k: (v, default_mode) for k, v in data.items()}
    out: dict[str, tuple[bytes, int]] = {}
    for item in items:
        key = item.get("key", "")
        if key not in data:
            if optional:
                continue
            raise VolumeError(f"{kind.lower()} references non-existent config key: {key}")
        out[item["path"]] = (data[key], int(item.get("mode", default_mode)))
    return out


def downward_payload(
    pod: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    facts: PodFacts,
    default_mode: int,
) -> dict[str, tuple[bytes, int]]:
    out: dict[str, tuple[bytes, int]] = {}
    for item in items:
        mode = int(item.get("mode", default_mode))
        try:
            if "fieldRef" in item:
                value = field_ref_value(pod, item["fieldRef"].get("fieldPath", ""), facts)
            elif "resourceFieldRef" in item:
                ref = item["resourceFieldRef"]
                value = resource_field_value(pod, ref.get("containerName", ""), ref, facts)
            else:
                raise VolumeError(f"downwardAPI item {item.get('path')!r}: needs fieldRef or resourceFieldRef")
        except EnvConfigError as exc:
            raise VolumeError(f"downwardAPI item {item.get('path')!r}: {exc}") from exc
        out[item["path"]] = (value.encode(), mode)
    return out


def token_refresh_due(issued_at: float, expires_at: float, now: float) -> bool:
    """The kubelet's rule: refresh after 80% of the lifetime, or after 24 hours."""
    ttl = expires_at - issued_at
    return now >= issued_at + 0.8 * ttl or now >= issued_at + 24 * 3600


def token_request_body(pod: Mapping[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    meta = pod["metadata"]
    spec: dict[str, Any] = {
        "expirationSeconds": int(source.get("expirationSeconds") or 3600),
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
    }
    if source.get("audience"):
        spec["audiences"] = [source["audience"]]
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}


def sort_mounts(mounts: Sequence[BindMount]) -> list[BindMount]:
    """Parents before children (containerd orders mounts by depth)."""
    return sorted(mounts, key=lambda m: len(Path(m.target).parts))


# ---------------------------------------------------------------- I/O


def _parse_rfc3339(text: str) -> float:
    from .logfmt import parse_time_ns

    return parse_time_ns(text) / 1e9


@dataclass
class _Token:
    issued_at: float
    expires_at: float
    token: bytes


class PodVolumes:
    def __init__(self, api: KubeApi, pod: Mapping[str, Any], pod_dir: Path, facts: PodFacts) -> None:
        self.api = api
        self.pod = pod
        self.pod_dir = pod_dir
        self.facts = facts
        self.paths: dict[str, Path] = {}
        self.readonly: dict[str, bool] = {}
        self._tmpfs: list[Path] = []
        self._tokens: dict[tuple[str, int], _Token] = {}

    @property
    def ns(self) -> str:
        return self.pod["metadata"]["namespace"]

    def _vol_dir(self, name: str) -> Path:
        return self.pod_dir / "volumes" / name

    async def setup(self) -> None:
        """Materialize every volume; raises VolumeError naming the first one that cannot be set up."""
        for vol in self.pod.get("spec", {}).get("volumes") or []:
            name = vol["name"]
            try:
                await self._setup_one(vol)
            except VolumeError as exc:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {exc}') from exc
            except (PayloadError, OSError) as exc:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {exc}') from exc

    async def refresh(self, pod: Mapping[str, Any]) -> None:
        """Re-render API-backed volumes (new data, labels, tokens near expiry); errors are logged."""
        self.pod = pod
        for vol in pod.get("spec", {}).get("volumes") or []:
            if any(k in vol for k in READ_ONLY_KINDS) and vol["name"] in self.paths:
                try:
                    await self._setup_one(vol)
                except Exception as exc:  # noqa: BLE001 - keep the last good content; retry next time
                    log.debug("refresh of volume %s of %s/%s: %s", vol["name"], self.ns, pod["metadata"]["name"], exc)

    async def _setup_one(self, vol: Mapping[str, Any]) -> None:
        name = vol["name"]
        if "emptyDir" in vol:
            path = self._vol_dir(name)
            if name not in self.paths:
                path.mkdir(parents=True, exist_ok=True)
                if (vol["emptyDir"] or {}).get("medium") == "Memory":
                    await self._mount_tmpfs(path, (vol["emptyDir"] or {}).get("sizeLimit"))
            self.paths[name] = path
        elif "hostPath" in vol:
            self.paths[name] = self._host_path(vol["hostPath"])
        elif "persistentVolumeClaim" in vol:
            src = vol["persistentVolumeClaim"]
            self.paths[name] = await self._claim_path(src.get("claimName", ""))
            self.readonly[name] = bool(src.get("readOnly"))
        elif "ephemeral" in vol:
            self.paths[name] = await self._claim_path(f"{self.pod['metadata']['name']}-{name}")
        elif "configMap" in vol or "secret" in vol:
            kind = "ConfigMap" if "configMap" in vol else "Secret"
            src = vol["configMap" if kind == "ConfigMap" else "secret"] or {}
            obj_name = src.get("name") if kind == "ConfigMap" else src.get("secretName")
            data = await self._object_data(kind, obj_name or "")
            payload = key_to_path_payload(
                kind, obj_name or "", data, src.get("items"), int(src.get("defaultMode", DEFAULT_MODE)), bool(src.get("optional"))
            )
            self._write(name, payload)
        elif "downwardAPI" in vol:
            src = vol["downwardAPI"] or {}
            self._write(name, downward_payload(self.pod, src.get("items") or [], self.facts, int(src.get("defaultMode", DEFAULT_MODE))))
        elif "projected" in vol:
            self._write(name, await self._projected(name, vol["projected"] or {}))
        else:
            kinds = sorted(k for k in vol if k != "name")
            raise VolumeError(f"volume type {kinds} is not supported by ltj-node-agent")

    def _write(self, name: str, payload: Mapping[str, tuple[bytes, int]]) -> None:
        path = self._vol_dir(name)
        write_payload(path, payload)
        self.paths[name] = path

    def _host_path(self, src: Mapping[str, Any]) -> Path:
        path = Path(src.get("path", ""))
        kind = src.get("type") or ""
        if kind == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        elif kind == "Directory" and not path.is_dir():
            raise VolumeError(f"hostPath type check failed: {path} is not a directory")
        elif kind == "File" and not path.is_file():
            raise VolumeError(f"hostPath type check failed: {path} is not a file")
        elif kind == "Socket" and not path.is_socket():
            raise VolumeError(f"hostPath type check failed: {path} is not a socket file")
        elif not kind and not path.exists():
            path.mkdir(parents=True, exist_ok=True)  # like docker: a missing source becomes a directory
        return path

    async def _claim_path(self, claim: str) -> Path:
        pvc = await self.api.get_or_none(f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims/{claim}")
        if pvc is None:
            raise VolumeError(f'persistentvolumeclaim "{claim}" not found')
        pv_name = pvc.get("spec", {}).get("volumeName")
        if pvc.get("status", {}).get("phase") != "Bound" or not pv_name:
            raise VolumeError(f'persistentvolumeclaim "{claim}" is not bound yet')
        pv = await self.api.get_or_none(f"/api/v1/persistentvolumes/{pv_name}")
        if pv is None:
            raise VolumeError(f'persistentvolume "{pv_name}" not found')
        spec = pv.get("spec", {})
        if "hostPath" in spec:
            return self._host_path(spec["hostPath"])
        if "local" in spec:
            path = Path(spec["local"].get("path", ""))
            if not path.exists():
                raise VolumeError(f"local volume path {path} does not exist")
            return path
        kinds = sorted(k for k in spec if k not in ("accessModes", "capacity", "claimRef", "persistentVolumeReclaimPolicy", "storageClassName", "volumeMode", "nodeAffinity", "mountOptions"))
        raise VolumeError(f'persistentvolume "{pv_name}": source {kinds} is not supported (only hostPath and local)')

    async def _object_data(self, kind: str, name: str) -> dict[str, bytes] | None:
        plural = "configmaps" if kind == "ConfigMap" else "secrets"
        obj = await self.api.get_or_none(f"/api/v1/namespaces/{self.ns}/{plural}/{name}")
        return None if obj is None else object_bytes(obj, secret=kind == "Secret")

    async def _projected(self, vol_name: str, src: Mapping[str, Any]) -> dict[str, tuple[bytes, int]]:
        default_mode = int(src.get("defaultMode", DEFAULT_MODE))
        out: dict[str, tuple[bytes, int]] = {}
        for i, source in enumerate(src.get("sources") or []):
            if "serviceAccountToken" in source:
                sat = source["serviceAccountToken"]
                token = await self._token(vol_name, i, sat)
                out[sat["path"]] = (token, default_mode)
            elif "configMap" in source or "secret" in source:
                kind = "ConfigMap" if "configMap" in source else "Secret"
                s = source["configMap" if kind == "ConfigMap" else "secret"]
                data = await self._object_data(kind, s.get("name", ""))
                out.update(key_to_path_payload(kind, s.get("name", ""), data, s.get("items"), default_mode, bool(s.get("optional"))))
            elif "downwardAPI" in source:
                out.update(downward_payload(self.pod, source["downwardAPI"].get("items") or [], self.facts, default_mode))
            else:
                raise VolumeError(f"projected source {sorted(source)} is not supported")
        return out

    async def _token(self, vol_name: str, index: int, source: Mapping[str, Any]) -> bytes:
        key = (vol_name, index)
        cached = self._tokens.get(key)
        now = time.time()
        if cached and not token_refresh_due(cached.issued_at, cached.expires_at, now):
            return cached.token
        sa = self.pod.get("spec", {}).get("serviceAccountName") or "default"
        try:
            resp = await self.api.create(
                f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", token_request_body(self.pod, source)
            )
        except ApiError as exc:
            if cached:  # keep serving the old token until it can be renewed
                log.warning("token refresh for %s/%s failed: %s", self.ns, self.pod["metadata"]["name"], exc)
                return cached.token
            raise VolumeError(f"failed to fetch token: {exc.message or exc}") from exc
        status = resp.get("status", {})
        expires = _parse_rfc3339(status["expirationTimestamp"]) if status.get("expirationTimestamp") else now + 3600
        self._tokens[key] = _Token(now, expires, status.get("token", "").encode())
        return self._tokens[key].token

    def next_token_refresh(self) -> float | None:
        if not self._tokens:
            return None
        return min(t.issued_at + min(0.8 * (t.expires_at - t.issued_at), 24 * 3600) for t in self._tokens.values())

    async def _mount_tmpfs(self, path: Path, size_limit: str | None) -> None:
        opts = "mode=0777"
        if size_limit:
            opts += f",size={int(parse_quantity(size_limit))}"
        proc = await asyncio.create_subprocess_exec(
            "mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path), stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise VolumeError(f"mount tmpfs at {path}: {err.decode().strip()}")
        self._tmpfs.append(path)

    def mounts_for(self, container: Mapping[str, Any], env: Sequence[tuple[str, str]]) -> list[BindMount]:
        mapping = mapping_for(dict(env))
        kinds = {v["name"]: v for v in self.pod.get("spec", {}).get("volumes") or []}
        mounts: list[BindMount] = []
        for vm in container.get("volumeMounts") or []:
            name = vm["name"]
            if name not in self.paths:
                raise VolumeError(f"volumeMount {name!r}: no such volume in the pod")
            source = self.paths[name]
            sub = vm.get("subPath") or ""
            if vm.get("subPathExpr"):
                sub = expand(vm["subPathExpr"], mapping)
            if sub:
                if sub.startswith("/") or ".." in Path(sub).parts:
                    raise VolumeError(f"volumeMount {name!r}: subPath {sub!r} must be relative without '..'")
                source = source / sub
                if not source.exists() and not source.is_symlink():
                    source.mkdir(parents=True, exist_ok=True)
                source = Path(os.path.realpath(source))
            vol = kinds.get(name, {})
            readonly = bool(vm.get("readOnly")) or self.readonly.get(name, False) or any(k in vol for k in READ_ONLY_KINDS)
            mounts.append(BindMount(str(source), vm["mountPath"], readonly))
        return sort_mounts(mounts)

    async def teardown(self) -> None:
        for path in self._tmpfs:
            proc = await asyncio.create_subprocess_exec("umount", "-l", str(path), stderr=asyncio.subprocess.DEVNULL)
            await proc.wait()
        self._tmpfs.clear()
        shutil.rmtree(self.pod_dir, ignore_errors=True)
