"""Dynamic provisioner for StorageClass `ltj-local`: a hostPath PV per claim under <state>/volumes.

Every fake node is this one host, so a hostPath volume is shared by all pods (ReadWriteMany works).
KCM's PV controller binds the claim to the PV we create (claimRef is pre-set); when a Released PV
with reclaim policy Delete appears, we delete its directory and the PV.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .kubeapi import ApiError, Informer, KubeApi

log = logging.getLogger(__name__)

CLASS_NAME = "ltj-local"
PROVISIONER = "ltj.dev/local"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


def storage_class(default: bool) -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": CLASS_NAME,
            "annotations": {DEFAULT_CLASS_ANNOTATION: "true"} if default else {},
            "labels": {"app.kubernetes.io/managed-by": "ltj-node-agent"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": True,
    }


def pv_name_for(pvc: Mapping[str, Any]) -> str:
    return f"pvc-{pvc['metadata']['uid']}"


def wants_provisioning(pvc: Mapping[str, Any], class_name: str = CLASS_NAME) -> bool:
    spec = pvc.get("spec", {})
    meta = pvc.get("metadata", {})
    if meta.get("deletionTimestamp") or spec.get("volumeName"):
        return False
    if pvc.get("status", {}).get("phase") not in (None, "Pending"):
        return False
    if spec.get("dataSource") or spec.get("dataSourceRef"):
        return False
    ann = meta.get("annotations") or {}
    by_annotation = PROVISIONER in (
        ann.get("volume.kubernetes.io/storage-provisioner"),
        ann.get("volume.beta.kubernetes.io/storage-provisioner"),
    )
    return spec.get("storageClassName") == class_name or by_annotation


def persistent_volume(pvc: Mapping[str, Any], path: Path, reclaim_policy: str = "Delete") -> dict[str, Any]:
    """The PV for a claim (pure): capacity = request, the claim's access modes, claimRef set."""
    meta = pvc["metadata"]
    spec = pvc.get("spec", {})
    request = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    if not request:
        raise ValueError(f"persistentvolumeclaim {meta.get('namespace')}/{meta.get('name')}: spec.resources.requests.storage is required")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name_for(pvc), "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": request},
            "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
            "persistentVolumeReclaimPolicy": reclaim_policy,
            "storageClassName": spec.get("storageClassName") or CLASS_NAME,
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion", ""),
            },
        },
    }


class Provisioner:
    def __init__(self, api: KubeApi, volumes_dir: Path, make_default: bool = True) -> None:
        self.api = api
        self.volumes_dir = volumes_dir
        self.make_default = make_default
        self.reclaim_policy = "Delete"
        self.pvcs = Informer(api, "/api/v1/persistentvolumeclaims", self._on_pvc, name="pvcs")
        self.pvs = Informer(api, "/api/v1/persistentvolumes", self._on_pv, name="pvs")

    async def ensure_storage_class(self) -> None:
        existing = await self.api.get_or_none(f"/apis/storage.k8s.io/v1/storageclasses/{CLASS_NAME}")
        if existing is not None:
            self.reclaim_policy = existing.get("reclaimPolicy", "Delete")
            return
        classes = await self.api.get("/apis/storage.k8s.io/v1/storageclasses")
        has_default = any(
            (c.get("metadata", {}).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"
            for c in classes.get("items") or []
        )
        try:
            await self.api.create("/apis/storage.k8s.io/v1/storageclasses", storage_class(self.make_default and not has_default))
            log.info("created StorageClass %s (provisioner %s)", CLASS_NAME, PROVISIONER)
        except ApiError as exc:
            if exc.status != 409:
                raise

    async def run(self) -> None:
        self.volumes_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.gather(self.pvcs.run(), self.pvs.run())

    async def _on_pvc(self, kind: str, pvc: dict[str, Any]) -> None:
        if kind != "UPSERT" or not wants_provisioning(pvc):
            return
        name = pv_name_for(pvc)
        if f"{name}" in self.pvs.cache:
            return
        path = self.volumes_dir / name
        pv = persistent_volume(pvc, path, self.reclaim_policy)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        try:
            await self.api.create("/api/v1/persistentvolumes", pv)
            log.info(
                "provisioned %s for claim %s/%s at %s",
                name,
                pvc["metadata"]["namespace"],
                pvc["metadata"]["name"],
                path,
            )
        except ApiError as exc:
            if exc.status != 409:
                raise

    def _owned_path(self, pv: Mapping[str, Any]) -> Path | None:
        ann = pv.get("metadata", {}).get("annotations") or {}
        if ann.get(PROVISIONED_BY) != PROVISIONER:
            return None
        raw = pv.get("spec", {}).get("hostPath", {}).get("path")
        if not raw:
            return None
        path = Path(raw).resolve()
        root = self.volumes_dir.resolve()
        if path.parent != root:
            return None  # never delete anything outside our own volumes directory
        return path

    async def _on_pv(self, kind: str, pv: dict[str, Any]) -> None:
        path = self._owned_path(pv)
        if path is None:
            return
        name = pv["metadata"]["name"]
        if kind == "DELETE":
            shutil.rmtree(path, ignore_errors=True)
            return
        released = pv.get("status", {}).get("phase") == "Released"
        if released and pv.get("spec", {}).get("persistentVolumeReclaimPolicy") == "Delete":
            shutil.rmtree(path, ignore_errors=True)
            try:
                await self.api.delete(f"/api/v1/persistentvolumes/{name}")
                log.info("deleted released volume %s (%s)", name, path)
            except ApiError as exc:
                if exc.status != 404:
                    raise
