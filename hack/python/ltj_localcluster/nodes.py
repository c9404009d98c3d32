"""Fake nodes: registration, status heartbeats and Leases in kube-node-lease."""

from __future__ import annotations

import asyncio
import logging
import platform
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from .kubeapi import MERGE_PATCH, STRATEGIC_PATCH, ApiError, KubeApi
from .quantity import parse_quantity

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
LEASE_DURATION = 40
NOT_READY_TAINT = "node.kubernetes.io/not-ready"


@dataclass(frozen=True)
class NodeShape:
    cpu: str
    memory: str
    gpus: int
    pods: int
    ephemeral_storage: str = "100Gi"

    def resources(self) -> dict[str, str]:
        out = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.pods),
            "ephemeral-storage": self.ephemeral_storage,
        }
        if self.gpus > 0:
            out["nvidia.com/gpu"] = str(self.gpus)
        return out

    def allocatable_decimal(self) -> dict[str, Decimal]:
        return {k: parse_quantity(v) for k, v in self.resources().items()}


def now_rfc3339() -> str:
    return datetime.now(tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_labels(name: str, shape: NodeShape) -> dict[str, str]:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch,
        "node.kubernetes.io/instance-type": "ltj-local",
        "ltj.dev/node-agent": "true",
    }
    if shape.gpus > 0:
        labels["nvidia.com/gpu.present"] = "true"
        labels["nvidia.com/gpu.count"] = str(shape.gpus)
    return labels


def node_status(
    name: str,
    shape: NodeShape,
    *,
    address: str,
    kubelet_port: int,
    kubelet_version: str,
    ready: bool,
    boot_id: str,
    previous_conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The node's status as a kubelet would post it (pure, apart from the clock)."""
    now = now_rfc3339()
    prev = {c.get("type"): c for c in previous_conditions or []}

    def cond(ctype: str, status: str, reason: str, message: str) -> dict[str, Any]:
        old = prev.get(ctype)
        return {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == status else now,
        }

    uname = platform.uname()
    return {
        "capacity": shape.resources(),
        "allocatable": shape.resources(),
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "ltj-node-agent is posting ready status")
            if ready
            else cond("Ready", "False", "KubeletNotReady", "ltj-node-agent stopped"),
        ],
        "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex,
            "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            "bootID": boot_id,
            "kernelVersion": uname.release,
            "osImage": "ltj local node (processes on the host)",
            "containerRuntimeVersion": f"ltj-node-agent://{AGENT_VERSION}",
            "kubeletVersion": kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": node_labels(name, shape)["kubernetes.io/arch"],
        },
    }


class NodeManager:
    def __init__(
        self,
        api: KubeApi,
        names: list[str],
        shape: NodeShape,
        *,
        address: str,
        kubelet_port: int,
        kubelet_version: str,
        lease_interval: float = 10.0,
        status_interval: float = 30.0,
    ) -> None:
        self.api = api
        self.names = names
        self.shape = shape
        self.address = address
        self.kubelet_port = kubelet_port
        self.kubelet_version = kubelet_version
        self.lease_interval = lease_interval
        self.status_interval = status_interval
        self.boot_id = str(uuid.uuid4())
        self._conditions: dict[str, list[dict[str, Any]]] = {}
        self._uids: dict[str, str] = {}

    async def register(self) -> None:
        for name in self.names:
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": node_labels(name, self.shape),
                    "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
                },
                "spec": {},
                "status": self._status(name, ready=True),
            }
            try:
                node = await self.api.create("/api/v1/nodes", body)
                log.info("registered node %s", name)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                node = await self.api.patch(
                    f"/api/v1/nodes/{name}", {"metadata": {"labels": body["metadata"]["labels"]}}, MERGE_PATCH
                )
                log.info("node %s already exists; taking it over", name)
            self._uids[name] = node["metadata"]["uid"]
            await self.post_status(name, ready=True)
            await self.renew_lease(name)

    def _status(self, name: str, ready: bool) -> dict[str, Any]:
        status = node_status(
            name,
            self.shape,
            address=self.address,
            kubelet_port=self.kubelet_port,
            kubelet_version=self.kubelet_version,
            ready=ready,
            boot_id=self.boot_id,
            previous_conditions=self._conditions.get(name),
        )
        self._conditions[name] = status["conditions"]
        return status

    async def post_status(self, name: str, ready: bool) -> None:
        await self.api.patch(f"/api/v1/nodes/{name}/status", {"status": self._status(name, ready)}, STRATEGIC_PATCH)

    async def renew_lease(self, name: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION, "renewTime": now_micro()}
        try:
            await self.api.patch(path, {"spec": spec}, MERGE_PATCH)
        except ApiError as exc:
            if exc.status != 404:
                raise
            owner = [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": self._uids[name]}] if name in self._uids else []
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": owner},
                "spec": spec,
            }
            try:
                await self.api.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body)
            except ApiError as exc2:
                if exc2.status != 409:
                    raise

    async def heartbeat_forever(self) -> None:
        last_status = time.monotonic()
        while True:
            await asyncio.sleep(self.lease_interval)
            post = time.monotonic() - last_status >= self.status_interval
            for name in self.names:
                try:
                    await self.renew_lease(name)
                    if post:
                        await self.post_status(name, ready=True)
                except ApiError as exc:
                    if exc.status == 404 and "nodes" in str(exc):
                        log.warning("node %s vanished; registering it again", name)
                        await self.register()
                    else:
                        log.warning("heartbeat for %s failed: %s", name, exc)
                except Exception as exc:  # noqa: BLE001 - keep beating through outages
                    log.warning("heartbeat for %s failed: %s", name, exc)
            if post:
                last_status = time.monotonic()

    async def wait_schedulable(self, timeout: float) -> bool:
        """Until the node lifecycle controller has lifted the not-ready taints."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = []
            for name in self.names:
                node = await self.api.get_or_none(f"/api/v1/nodes/{name}")
                taints = (node or {}).get("spec", {}).get("taints") or []
                if node is None or any(t.get("key") == NOT_READY_TAINT for t in taints):
                    pending.append(name)
            if not pending:
                return True
            await asyncio.sleep(0.5)
        return False

    async def shutdown(self, delete: bool) -> None:
        for name in self.names:
            try:
                if delete:
                    await self.api.delete(f"/api/v1/nodes/{name}")
                else:
                    await self.post_status(name, ready=False)
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                log.warning("could not %s node %s: %s", "delete" if delete else "mark NotReady", name, exc)

