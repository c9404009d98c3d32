"""The thin I/O layer: a few idempotent Kubernetes calls on plain dicts.

It speaks JSON over the `kubernetes` client's authenticated REST transport (in-cluster config or
KUBECONFIG) instead of the typed API classes, so manifests travel exactly as rendered (no model
round-trip that could drop fields the client's models do not know, such as native sidecars).
Creates tolerate 409 (already there), deletes tolerate 404 (already gone) and guard with the uid
so a newer object with the same name is never deleted by mistake. An existing ConfigMap or claim
with a child's name is used only when the job controls it: the operator never rewrites or mounts
someone else's object (a user's, or a deleted namesake's that garbage collection has not removed yet).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from . import constants as C

log = logging.getLogger(__name__)

Manifest = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotOwned(ApiError):
    """An object with a child's name exists but is not controlled by the job: left alone, reported."""

    def __init__(self, kind: str, name: str, controller: Mapping[str, Any] | None):
        who = (f"{controller.get('kind')} {controller.get('name')} (uid {controller.get('uid')})"
               if controller else "none")
        super().__init__(409, "AlreadyExists", f"{kind} {name} exists and is not controlled by this job "
                                               f"(its controller: {who}); delete it or rename the job")


def controller_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


@dataclass(frozen=True)
class _Kind:
    group_path: str  # /api/v1 or /apis/<group>/<version>
    plural: str


_KINDS: dict[tuple[str, str], _Kind] = {
    ("v1", "Pod"): _Kind("/api/v1", "pods"),
    ("v1", "Service"): _Kind("/api/v1", "services"),
    ("v1", "ConfigMap"): _Kind("/api/v1", "configmaps"),
    ("v1", "PersistentVolumeClaim"): _Kind("/api/v1", "persistentvolumeclaims"),
    ("v1", "ServiceAccount"): _Kind("/api/v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io/v1", "Role"): _Kind("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): _Kind("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    (C.API_VERSION, C.KIND): _Kind(f"/apis/{C.API_VERSION}", C.PLURAL),
}


def _collection(api_version: str, kind: str, namespace: str) -> str:
    k = _KINDS[(api_version, kind)]
    return f"{k.group_path}/namespaces/{quote(namespace, safe='')}/{k.plural}"


def _item(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{_collection(api_version, kind, namespace)}/{quote(name, safe='')}"


class Kube:
    """Synchronous calls; the reconciler runs them in a worker thread."""

    def __init__(self, api_client: Any, timeout: float = 30.0, field_manager: str = C.MANAGED_BY):
        self.api = api_client
        self.timeout = timeout
        self.field_manager = field_manager

    @classmethod
    def from_environment(cls) -> "Kube":
        from kubernetes import client, config  # imported here: unit tests of pure modules need no client

        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            # KUBECONFIG read now: the client's own default is frozen when `kubernetes` is first imported.
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                    client_configuration=configuration)
        return cls(client.ApiClient(configuration))

    # -- transport --
    def request(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (), body: Any = None,
                content_type: str = "application/json") -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = list(query)
        if method in ("POST", "PUT", "PATCH"):
            params.append(("fieldManager", self.field_manager))
        serialized = self.api.param_serialize(method=method, resource_path=path, query_params=params,
                                              header_params=headers, body=body, auth_settings=["BearerToken"])
        response = self.api.call_api(*serialized, _request_timeout=self.timeout)
        response.read()
        data = response.data or b""
        if not 200 <= response.status <= 299:
            reason, message = response.reason or "", data.decode(errors="replace")[:2000]
            try:
                parsed = json.loads(data)
                reason = parsed.get("reason") or reason
                message = parsed.get("message") or message
            except ValueError:
                pass
            raise ApiError(response.status, str(reason), str(message))
        return json.loads(data) if data else None

    # -- the job --
    def get_job(self, namespace: str, name: str) -> Manifest | None:
        try:
            return self.request("GET", _item(C.API_VERSION, C.KIND, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def patch_job_status(self, namespace: str, name: str, status_patch: Mapping[str, Any]) -> Manifest:
        """JSON merge patch of some status fields (lists such as conditions are replaced whole; the
        relay's `training` is never part of the operator's patches, so it is left alone)."""
        return self.request("PATCH", _item(C.API_VERSION, C.KIND, namespace, name) + "/status",
                            body={"status": dict(status_patch)}, content_type="application/merge-patch+json")

    def delete_job(self, namespace: str, name: str, uid: str) -> bool:
        return self._delete(_item(C.API_VERSION, C.KIND, namespace, name), uid, propagation="Background")

    # -- children --
    def list_pods(self, namespace: str, job_name: str) -> list[Manifest]:
        selector = f"{C.LABEL_JOB_NAME}={job_name},{C.LABEL_MANAGED_BY}={C.MANAGED_BY}"
        data = self.request("GET", _collection("v1", "Pod", namespace), query=[("labelSelector", selector)])
        return list((data or {}).get("items") or [])

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        try:
            return self.request("GET", _item(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, manifest: Manifest) -> bool:
        """Create unless it exists; True when this call created it."""
        meta = manifest["metadata"]
        try:
            self.request("POST", _collection(manifest["apiVersion"], manifest["kind"], meta["namespace"]),
                         body=manifest)
            return True
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise

    @staticmethod
    def _controlled(manifest: Manifest, current: Manifest | None) -> Manifest:
        """After a 409: the object in the way, if the job (the manifest's controller) controls it."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if current is None:
            # Deleted between our create and get (garbage collection of a namesake): try the pass again.
            raise ApiError(409, "Conflict", f"{kind} {name} vanished while being created")
        ours, theirs = controller_of(manifest), controller_of(current)
        if ours is None or theirs is None or theirs.get("uid") != ours.get("uid"):
            raise NotOwned(kind, name, theirs)
        return current

    def ensure_config_map(self, manifest: Manifest) -> bool:
        """Create, or bring the data of an existing one up to date (spec edits apply to the next
        attempt). True when something was written. NotOwned when the job does not control it."""
        if self.create(manifest):
            return True
        meta = manifest["metadata"]
        current = self._controlled(manifest, self.get("v1", "ConfigMap", meta["namespace"], meta["name"]))
        if current.get("data") == manifest.get("data"):
            return False
        self.request("PATCH", _item("v1", "ConfigMap", meta["namespace"], meta["name"]),
                     body={"data": manifest["data"]}, content_type="application/merge-patch+json")
        return True

    def ensure_claim(self, manifest: Manifest) -> bool:
        """Create the job's output claim unless it exists; True when this call created it. NotOwned when
        an existing claim of that name is not the job's (its pods would write into someone else's volume)."""
        if self.create(manifest):
            return True
        meta = manifest["metadata"]
        self._controlled(manifest, self.get("v1", "PersistentVolumeClaim", meta["namespace"], meta["name"]))
        return False

    def delete_pod(self, namespace: str, name: str, uid: str) -> bool:
        return self._delete(_item("v1", "Pod", namespace, name), uid)

    def _delete(self, path: str, uid: str, propagation: str | None = None) -> bool:
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            body["preconditions"] = {"uid": uid}
        if propagation:
            body["propagationPolicy"] = propagation
        try:
            self.request("DELETE", path, body=body)
            return True
        except ApiError as exc:
            # 404: already gone; 409: the uid precondition failed, i.e. a newer namesake exists.
            if exc.status in (404, 409):
                return False
            raise

    def claim_access_modes(self, namespace: str, name: str) -> tuple[str, ...] | None:
        pvc = self.get("v1", "PersistentVolumeClaim", namespace, name)
        if pvc is None:
            return None
        # A bound claim reports what the volume really offers; before binding, what was asked.
        modes = (pvc.get("status") or {}).get("accessModes") or (pvc.get("spec") or {}).get("accessModes") or []
        return tuple(str(m) for m in modes)
