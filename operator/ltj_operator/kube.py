"""The thin I/O layer: a few idempotent Kubernetes calls on plain dicts.

It speaks JSON over the `kubernetes` client's authenticated REST transport (in-cluster config or
KUBECONFIG) instead of the typed API classes, so manifests travel exactly as rendered (no model
round-trip that could drop fields the client's models do not know, such as native sidecars).
Creates tolerate 409 (already there), deletes tolerate 404 (already gone) and guard with the uid
so a newer object with the same name is never deleted by mistake. An existing child (claim, account,
Role, binding, Service, policy) is used only when the job controls it (`ensure`): the operator never
adopts someone else's object (a user's, or a deleted namesake's that garbage collection has not
removed yet).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote

from . import constants as C
from . import kueue
from .apierror import ApiError
from .podview import PodView, observe_pod

log = logging.getLogger(__name__)

Manifest = dict[str, Any]
# What an ownership check reads of an object: its metadata alone.
PARTIAL_METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class StaleWrite(ApiError):
    """A fenced status write found the job's attempt or restarts changed since the pass read them
    (another writer moved them): nothing was written; the job is read again and decided anew."""


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
    ("v1", "PersistentVolumeClaim"): _Kind("/api/v1", "persistentvolumeclaims"),
    ("v1", "ServiceAccount"): _Kind("/api/v1", "serviceaccounts"),
    ("v1", "Secret"): _Kind("/api/v1", "secrets"),
    ("rbac.authorization.k8s.io/v1", "Role"): _Kind("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): _Kind("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    ("networking.k8s.io/v1", "NetworkPolicy"): _Kind("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("coordination.k8s.io/v1", "Lease"): _Kind("/apis/coordination.k8s.io/v1", "leases"),
    (C.API_VERSION, C.KIND): _Kind(f"/apis/{C.API_VERSION}", C.PLURAL),
    (C.KUEUE_API, "Workload"): _Kind(f"/apis/{C.KUEUE_API}", C.KUEUE_WORKLOADS),
    # Cluster-scoped (Kube.get_cluster, Kube.list_cluster).
    (C.KUEUE_API, "ResourceFlavor"): _Kind(f"/apis/{C.KUEUE_API}", "resourceflavors"),
    (C.KUEUE_API, "WorkloadPriorityClass"): _Kind(f"/apis/{C.KUEUE_API}", "workloadpriorityclasses"),
    ("scheduling.k8s.io/v1", "PriorityClass"): _Kind("/apis/scheduling.k8s.io/v1", "priorityclasses"),
}


def _collection(api_version: str, kind: str, namespace: str) -> str:
    k = _KINDS[(api_version, kind)]
    return f"{k.group_path}/namespaces/{quote(namespace, safe='')}/{k.plural}"


def _item(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{_collection(api_version, kind, namespace)}/{quote(name, safe='')}"


def _rv(obj: Mapping[str, Any]) -> int | None:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return None


def _newer(rv: int | None, than: int | None) -> bool:
    """Whether a version with resourceVersion `rv` may replace one with `than` (unknown: yes)."""
    return rv is None or than is None or rv >= than


@dataclass(frozen=True)
class _CachedPod:
    rv: int | None
    view: PodView


class ObjectCache:
    """The newest version the API server showed of each active job and of the views of its pods: fed
    by watch events, by reads and by the job as our status writes return it (thread-safe: events arrive
    on the event loop, reads in worker threads). It holds what was seen, nothing of the controller's
    own bookkeeping: the pods a pass created or deleted are the controller's expectations until the
    watch shows them (see expectations.Expectations).

    A job's body is served from here within `max_age` of the last time the API server showed it (a
    GET, a status patch's response, or a watch event); a job's pod list within max_age of the last
    LIST of them (single pod events keep it current but cannot prove that no pod is missing). After
    that the reconciler reads the API server again and the cache is corrected. So a watch event kopf
    never delivers (it does not report objects deleted while a watch was down) cannot mislead the
    operator for longer than max_age, while the passes that events trigger in between cost no reads.
    Finished jobs and their pods are not kept (their passes are rare: a thousand finished jobs cost no
    memory here); pods are kept as PodViews, not bodies.
    """

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic):
        self.max_age = max_age
        self.clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], tuple[Manifest, float]] = {}  # key -> (body, verified at)
        self._pods: dict[tuple[str, str], dict[str, _CachedPod]] = {}  # (ns, job) -> pod name -> view
        self._pods_verified: dict[tuple[str, str], float] = {}
        self._deleted: dict[str, float] = {}  # uids of deleted pods (a list taken before must not revive one)
        self._claims: dict[tuple[str, str], tuple[tuple[str, ...], float]] = {}
        self._apis: dict[str, tuple[bool, float]] = {}  # group/version -> (served, verified at)

    # -- claims (access modes of a bound claim do not change; several jobs often share one claim) --
    def claim_modes(self, namespace: str, name: str) -> tuple[str, ...] | None:
        with self._lock:
            entry = self._claims.get((namespace, name))
            if entry is None or self.clock() - entry[1] > self.max_age:
                return None
            return entry[0]

    def put_claim_modes(self, namespace: str, name: str, modes: tuple[str, ...]) -> None:
        with self._lock:
            self._claims[(namespace, name)] = (modes, self.clock())

    # -- APIs served (one discovery answer serves every job; an API comes and goes with its CRDs) --
    def served(self, group_version: str) -> bool | None:
        with self._lock:
            entry = self._apis.get(group_version)
            if entry is None or self.clock() - entry[1] > self.max_age:
                return None
            return entry[0]

    def put_served(self, group_version: str, served: bool) -> None:
        with self._lock:
            self._apis[group_version] = (served, self.clock())

    # -- active jobs none of whose pods has been seen --
    def without_pods(self, namespace: str, name: str) -> bool:
        key = (namespace, name)
        with self._lock:
            return key in self._jobs and not self._pods.get(key)

    # -- jobs --
    def job(self, namespace: str, name: str) -> Manifest | None:
        with self._lock:
            entry = self._jobs.get((namespace, name))
            if entry is None or self.clock() - entry[1] > self.max_age:
                return None
            return entry[0]

    def put_job(self, body: Mapping[str, Any]) -> bool:
        """A job's body as the API server just showed it (a read, a write's response or a watch event).
        False when it is the very version already kept: the watch event echoing our own status write,
        whose response the cache already holds, carries no news for the job."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        finished = (body.get("status") or {}).get("phase") in C.TERMINAL_PHASES
        with self._lock:
            entry = self._jobs.get(key)
            if finished or meta.get("deletionTimestamp"):
                self._forget(key)
                return True
            rv = _rv(body)
            if entry is None or _newer(rv, _rv(entry[0])):
                self._jobs[key] = (dict(body), self.clock())
            return entry is None or rv is None or rv != _rv(entry[0])

    def forget_job(self, namespace: str, name: str) -> None:
        with self._lock:
            self._forget((namespace, name))

    def _forget(self, key: tuple[str, str]) -> None:
        self._jobs.pop(key, None)
        self._pods.pop(key, None)
        self._pods_verified.pop(key, None)

    # -- pods --
    def pods(self, namespace: str, job_name: str) -> tuple[PodView, ...] | None:
        key = (namespace, job_name)
        with self._lock:
            verified = self._pods_verified.get(key)
            if verified is None or self.clock() - verified > self.max_age:
                return None
            return tuple(p.view for p in self._pods.get(key, {}).values())

    def put_pods(self, namespace: str, job_name: str, items: Sequence[Mapping[str, Any]], list_rv: int | None) -> None:
        """The result of a LIST of the job's pods: authoritative as of list_rv."""
        key = (namespace, job_name)
        with self._lock:
            fresh = {str((p.get("metadata") or {}).get("name")): _CachedPod(_rv(p), observe_pod(p)) for p in items
                     if str((p.get("metadata") or {}).get("uid") or "") not in self._deleted}
            # Keep what events brought in after the list was taken.
            for name, cached in self._pods.get(key, {}).items():
                if list_rv is not None and cached.rv is not None and cached.rv > list_rv:
                    if name not in fresh or _newer(cached.rv, fresh[name].rv):
                        fresh[name] = cached
            self._pods[key] = fresh
            self._pods_verified[key] = self.clock()

    def put_pod(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        job_name = (meta.get("labels") or {}).get(C.LABEL_JOB_NAME)
        if not job_name:
            return
        key, name = (str(meta.get("namespace") or ""), str(job_name)), str(meta.get("name") or "")
        rv = _rv(body)
        with self._lock:
            if str(meta.get("uid") or "") in self._deleted:
                return
            if key not in self._jobs and key not in self._pods_verified:
                return  # a finished job's (or one not seen yet): its next pass lists them
            pods = self._pods.setdefault(key, {})
            current = pods.get(name)
            if current is None or _newer(rv, current.rv):
                pods[name] = _CachedPod(rv, observe_pod(body))

    def forget_pod(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        job_name = (meta.get("labels") or {}).get(C.LABEL_JOB_NAME)
        uid = str(meta.get("uid") or "")
        now = self.clock()
        with self._lock:
            if uid:
                self._deleted[uid] = now
                # Tombstones need only outlive late events, lists taken before the deletion and the
                # controller's expectations (which expire after max_age).
                if len(self._deleted) > 1000:
                    for old in [u for u, t in self._deleted.items() if now - t > 10 * self.max_age]:
                        del self._deleted[old]
            pods = self._pods.get((str(meta.get("namespace") or ""), str(job_name or "")))
            name = str(meta.get("name") or "")
            if pods is not None and name in pods and (not uid or pods[name].view.uid == uid):
                del pods[name]

    def deleted(self, uid: str) -> bool:
        """Whether the watch has shown the pod with this uid deleted (lately: see forget_pod)."""
        with self._lock:
            return uid in self._deleted

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs) + sum(len(p) for p in self._pods.values())


class Kube:
    """Synchronous calls; the reconciler runs them in a worker thread. With an ObjectCache, job and
    pod reads are served from it while it is fresh (see ObjectCache)."""

    def __init__(self, api_client: Any, timeout: float = 30.0, field_manager: str = C.MANAGED_BY,
                 cache: ObjectCache | None = None, fanout: int = 8):
        self.api = api_client
        self.timeout = timeout
        self.field_manager = field_manager
        self.cache = cache
        self._fanout = ThreadPoolExecutor(max_workers=max(fanout, 1), thread_name_prefix="ltj-io")

    @classmethod
    def from_environment(cls, cache: ObjectCache | None = None, workers: int = 4) -> "Kube":
        from kubernetes import client, config  # imported here: unit tests of pure modules need no client

        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            # KUBECONFIG read now: the client's own default is frozen when `kubernetes` is first imported.
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                    client_configuration=configuration)
        fanout = 2 * max(workers, 4)
        # A kept-alive connection for every thread that may call at once: beyond the pool's size urllib3
        # opens (TLS handshake) and discards a connection per request.
        configuration.connection_pool_maxsize = workers + fanout
        return cls(client.ApiClient(configuration), cache=cache, fanout=fanout)

    def all(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        """Runs independent calls at once (one round trip for a pass's writes instead of one each);
        their results in order. All of them finish before the first error, if any, is raised."""
        if len(calls) <= 1:
            return [call() for call in calls]
        futures = [self._fanout.submit(call) for call in calls]
        results: list[Any] = []
        error: BaseException | None = None
        for future in futures:
            try:
                results.append(future.result())
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the others finished
                error = error or exc
                results.append(None)
        if error is not None:
            raise error
        return results

    def close(self) -> None:
        self._fanout.shutdown(wait=False, cancel_futures=True)

    # -- transport --
    def request(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (), body: Any = None,
                content_type: str = "application/json", accept: str = "application/json") -> Any:
        headers = {"Accept": accept}
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
        if self.cache is not None:
            cached = self.cache.job(namespace, name)
            if cached is not None:
                return cached
        try:
            body = self.request("GET", _item(C.API_VERSION, C.KIND, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                if self.cache is not None:
                    self.cache.forget_job(namespace, name)
                return None
            raise
        if self.cache is not None and body is not None:
            self.cache.put_job(body)
        return body

    def patch_job_status(self, namespace: str, name: str, status_patch: Mapping[str, Any],
                         fence: Mapping[str, Any]) -> Manifest:
        """Sets some status fields (lists such as conditions are replaced whole; None removes a field; the
        relay's `training` is never part of the operator's patches, so it is left alone), only if the
        status still holds `fence` (field -> value the pass read, None: absent). One JSON patch: `test`
        ops on the fence, then the fields, so a writer that read an older attempt or restart count (a
        deposed leader, a stale cache) can never move them backwards. The relay's writes do not touch
        the fence, so they never make the operator's writes conflict. StaleWrite when the fence fails."""
        ops: list[dict[str, Any]] = [{"op": "test", "path": f"/status/{key}", "value": value}
                                     for key, value in fence.items()]
        # `add` replaces a member that exists; a null one is pruned by the API server (non-nullable schema).
        ops += [{"op": "add", "path": f"/status/{key}", "value": value} for key, value in status_patch.items()]
        path = _item(C.API_VERSION, C.KIND, namespace, name)
        try:
            body = self.request("PATCH", path + "/status", body=ops, content_type="application/json-patch+json")
        except ApiError as exc:
            # A failed `test` op is a bare 422 (no detail says which op failed): the job read again tells.
            if exc.status != 422:
                raise
            current = self.request("GET", path)
            status = (current or {}).get("status") or {}
            moved = {key: status.get(key) for key, value in fence.items() if status.get(key) != value}
            if not moved:
                raise
            if self.cache is not None and current is not None:
                self.cache.put_job(current)  # the next pass decides from this
            raise StaleWrite(exc.status, "StaleWrite", f"the job's status changed since it was read: now {moved}, "
                                                       f"read {dict(fence)}") from None
        if self.cache is not None and body is not None:
            self.cache.put_job(body)  # its watch event then echoes a version already kept: no news
        return body

    def delete_job(self, namespace: str, name: str, uid: str) -> bool:
        return self._delete(_item(C.API_VERSION, C.KIND, namespace, name), uid, propagation="Background")

    # -- children --
    def list_pods(self, namespace: str, job_name: str) -> list[Manifest]:
        selector = f"{C.LABEL_JOB_NAME}={job_name},{C.LABEL_MANAGED_BY}={C.MANAGED_BY}"
        query = [("labelSelector", selector)]
        if self.cache is not None:
            # resourceVersion=0: served from the API server's watch cache at once, where a consistent
            # list first waits for that cache to catch up with etcd. What such a list may lack or still
            # show (pods created or deleted an instant ago) the ObjectCache keeps from the watch when it
            # merges the list, and the controller's expectations hold from its own writes.
            query.append(("resourceVersion", "0"))
        data = self.request("GET", _collection("v1", "Pod", namespace), query=query)
        items = list((data or {}).get("items") or [])
        if self.cache is not None:
            self.cache.put_pods(namespace, job_name, items, _rv(data or {}))
        return items

    def pod_views(self, namespace: str, job_name: str) -> tuple[PodView, ...]:
        """What the reconciler needs of the job's pods: from the cache while fresh, else listed."""
        if self.cache is not None:
            cached = self.cache.pods(namespace, job_name)
            if cached is not None:
                return cached
        return tuple(observe_pod(p) for p in self.list_pods(namespace, job_name))

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        try:
            return self.request("GET", _item(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def get_cluster(self, api_version: str, kind: str, name: str) -> Manifest | None:
        """A cluster-scoped object, None when it does not exist."""
        k = _KINDS[(api_version, kind)]
        try:
            return self.request("GET", f"{k.group_path}/{k.plural}/{quote(name, safe='')}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list_cluster(self, api_version: str, kind: str) -> list[Manifest]:
        k = _KINDS[(api_version, kind)]
        return list((self.request("GET", f"{k.group_path}/{k.plural}") or {}).get("items") or [])

    def finish_workload(self, namespace: str, name: str, reason: str, message: str,
                        current: Manifest | None = None) -> bool:
        """Condition Finished=True on a Workload's status, as jobframework's workload.Finish sets it (which
        makes Kueue release its quota); False when it is finished already or gone."""
        def finished(current: Manifest) -> dict[str, Any] | None:
            read = (current.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Finished" and c.get("status") == "True" for c in read):
                return None
            finished = {"type": "Finished", "status": "True", "reason": reason, "message": message[:32768],
                        "lastTransitionTime": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "observedGeneration": (current.get("metadata") or {}).get("generation") or 0}
            return {"conditions": [*(c for c in read if c.get("type") != "Finished"), finished]}

        return self._patch_workload_status(namespace, name, finished, current)

    def clear_admission(self, namespace: str, name: str, current: Manifest | None = None) -> bool:
        """An evicted Workload's admission cleared (kueue.cleared_admission), which releases its quota and
        queues it again; False when it holds none any more or is gone."""
        return self._patch_workload_status(
            namespace, name, lambda read: kueue.cleared_admission(read, dt.datetime.now(dt.timezone.utc)), current)

    def set_pods_ready(self, namespace: str, name: str, ready: bool, current: Manifest | None = None) -> bool:
        """A Workload's PodsReady condition for a gang that is (not) wholly ready (kueue.pods_ready_patch);
        False when it has that condition already or is gone."""
        return self._patch_workload_status(
            namespace, name, lambda read: kueue.pods_ready_patch(read, ready, dt.datetime.now(dt.timezone.utc)), current)

    def _patch_workload_status(self, namespace: str, name: str, change: Callable[[Manifest], Mapping[str, Any] | None],
                               current: Manifest | None = None) -> bool:
        """A merge patch of a Workload's status, ``change`` of the Workload as read (None: nothing to do),
        conditional on that read's resourceVersion. ``current`` is the pass's read, tried first: Kueue
        often writes a Workload right after the operator read it, and then (409) it is read again and the
        patch tried once more; a second conflict fails the pass, which is retried. A merge patch replaces
        the conditions list whole, so ``change`` sends all of them."""
        path = _item(C.KUEUE_API, "Workload", namespace, name)
        if current is not None:
            try:
                return self._patch_status_of(path, current, change)
            except ApiError as exc:
                if exc.status != 409:
                    raise
        try:
            current = self.request("GET", path) or {}
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return self._patch_status_of(path, current, change)

    def _patch_status_of(self, path: str, read: Manifest, change: Callable[[Manifest], Mapping[str, Any] | None]
                         ) -> bool:
        status = change(read)
        if status is None:
            return False
        self.request("PATCH", path + "/status", content_type="application/merge-patch+json",
                     body={"metadata": {"resourceVersion": (read.get("metadata") or {}).get("resourceVersion")},
                           "status": dict(status)})
        return True

    def create(self, manifest: Manifest) -> Manifest | None:
        """Create unless it exists: the object as created, None when it existed."""
        meta = manifest["metadata"]
        try:
            return self.request("POST", _collection(manifest["apiVersion"], manifest["kind"], meta["namespace"]),
                                body=manifest)
        except ApiError as exc:
            if exc.status == 409:
                return None
            raise

    def replace(self, manifest: Manifest) -> Manifest:
        """PUT of an object read before: conditional on its metadata.resourceVersion (409 when it changed)."""
        meta = manifest["metadata"]
        return self.request("PUT", _item(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]),
                            body=manifest)

    def ensure(self, manifest: Manifest) -> bool:
        """Create one of the job's children unless it exists; True when this call created it. After a 409,
        NotOwned unless the object in the way is controlled by the manifest's controller (the job): its
        pods would otherwise use someone else's account, Role, binding, Service, policy or volume. Only
        the object's metadata is read."""
        if self.create(manifest) is not None:
            return True
        meta = manifest["metadata"]
        kind, name = manifest["kind"], meta["name"]
        try:
            current = self.request("GET", _item(manifest["apiVersion"], kind, meta["namespace"], name),
                                   accept=PARTIAL_METADATA)
        except ApiError as exc:
            if exc.status != 404:
                raise
            # Deleted between our create and get (garbage collection of a namesake): try the pass again.
            raise ApiError(409, "Conflict", f"{kind} {name} vanished while being created") from None
        ours, theirs = controller_of(manifest), controller_of(current)
        if ours is None or theirs is None or theirs.get("uid") != ours.get("uid"):
            raise NotOwned(kind, name, theirs)
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

    def serves(self, group_version: str) -> bool:
        """Whether the API server serves ``group_version`` (``group/version``), by discovery."""
        if self.cache is not None:
            cached = self.cache.served(group_version)
            if cached is not None:
                return cached
        try:
            self.request("GET", f"/apis/{group_version}")
            served = True
        except ApiError as exc:
            if exc.status != 404:
                raise
            served = False
        if self.cache is not None:
            self.cache.put_served(group_version, served)
        return served

    def claim_access_modes(self, namespace: str, name: str) -> tuple[str, ...] | None:
        if self.cache is not None:
            cached = self.cache.claim_modes(namespace, name)
            if cached is not None:
                return cached
        pvc = self.get("v1", "PersistentVolumeClaim", namespace, name)
        if pvc is None:
            return None
        # A bound claim reports what the volume really offers; before binding, what was asked.
        bound = (pvc.get("status") or {}).get("accessModes")
        modes = tuple(str(m) for m in (bound or (pvc.get("spec") or {}).get("accessModes") or []))
        if self.cache is not None and bound:
            self.cache.put_claim_modes(namespace, name, modes)
        return modes
