"""An in-memory API server behind Kube's transport, for reconcile's unit tests.

Everything above `Kube.request` is the real thing (the cache, create-if-absent, claim ownership, uid
preconditions); below it: objects by path, 409 on a create of an existing name, status patches (JSON
merge patches, conditional on a resourceVersion they carry, and the operator's fenced JSON patches), PUTs
conditional on the resourceVersion,
deletes with uid preconditions, label-selected lists, metadata-only reads, cluster-scoped objects, and
refusals by resource. Each request is recorded as "VERB resource" (LIST for a collection GET) with the
round trip it went in: one Kube.all, or the request alone.
"""

from __future__ import annotations

import copy
import itertools
import threading
from typing import Any, Callable, Mapping, Sequence

from ltj_operator.kube import _KINDS, PARTIAL_METADATA, ApiError, Kube, ObjectCache, _item
from unit.operator.operator_helpers import merge


class FakeApi(Kube):
    def __init__(self, cache: ObjectCache):
        super().__init__(api_client=None, cache=cache, fanout=8)
        self.objects: dict[str, dict[str, Any]] = {}  # item path -> object
        self.refuse: dict[str, int] = {}  # resource -> HTTP status of the refusal its creates get
        self.served: set[str] = set()  # group/versions that discovery finds beside the ones the operator lists
        self.requests: list[tuple[int, str]] = []  # (round trip, "VERB resource")
        self._lock = threading.Lock()
        self._trips = itertools.count()
        self._versions = itertools.count(100)
        self._local = threading.local()

    # -- the world a test sets up --
    def put(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        stored = merge(dict(obj), {"metadata": {"resourceVersion": str(next(self._versions)),
                                                "uid": meta.get("uid") or f"uid-{meta['name']}"}})
        self.objects[_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])] = stored
        return copy.deepcopy(stored)

    def get_object(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get(_item(api_version, kind, namespace, name)))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for o in self.objects.values() if o["kind"] == kind]

    # -- what a pass did --
    def trips(self) -> list[list[str]]:
        """The requests of each round trip, in order (sorted within one: its calls run at once)."""
        by_trip: dict[int, list[str]] = {}
        for trip, request in self.requests:
            by_trip.setdefault(trip, []).append(request)
        return [sorted(by_trip[t]) for t in sorted(by_trip)]

    def all(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        trip = next(self._trips)

        def tagged(call: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                self._local.trip = trip
                try:
                    return call()
                finally:
                    self._local.trip = None
            return run

        return super().all([tagged(c) for c in calls])

    # -- the transport --
    def request(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (), body: Any = None,
                content_type: str = "application/json", accept: str = "application/json") -> Any:
        parts = path.split("/")
        if "namespaces" not in parts and len(parts) == 4:  # discovery of an API group/version: /apis/<group>/<version>
            self.requests.append((next(self._trips), f"DISCOVER {'/'.join(parts[2:])}"))
            if "/".join(parts[2:]) not in self.served:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return {"kind": "APIResourceList", "groupVersion": "/".join(parts[2:]), "resources": []}
        at = parts.index("namespaces") if "namespaces" in parts else 2  # /apis/<group>/<version>/<resource>...
        resource, rest = parts[at + 2], parts[at + 3:]
        verb = "LIST" if method == "GET" and not rest else method
        trip = getattr(self._local, "trip", None)
        with self._lock:
            self.requests.append((next(self._trips) if trip is None else trip,
                                  f"{verb} {resource}" + ("/" + rest[1] if len(rest) > 1 else "")))
            if verb == "LIST":
                return self._list(path, dict(query))
            if method == "POST":
                return self._create(path, resource, body)
            item = path.removesuffix("/status")
            current = self.objects.get(item)
            if current is None:
                raise ApiError(404, "NotFound", f"{resource} {rest[0]} not found")
            if method == "GET":
                if accept == PARTIAL_METADATA:
                    return {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                            "metadata": copy.deepcopy(current["metadata"])}
                return copy.deepcopy(current)
            if method == "PATCH":
                if content_type == "application/json-patch+json":
                    body = _json_patch(current, body)
                elif (body.get("metadata") or {}).get("resourceVersion") not in (None, current["metadata"]["resourceVersion"]):
                    raise ApiError(409, "Conflict", f"the object has been modified: {resource} {rest[0]}")
                self.objects[item] = merge(current, {**body, "metadata": {"resourceVersion": str(next(self._versions))}})
                return copy.deepcopy(self.objects[item])
            if method == "PUT":
                if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                    raise ApiError(409, "Conflict", f"the object has been modified: {resource} {rest[0]}")
                self.objects[item] = merge(copy.deepcopy(body),
                                           {"metadata": {"resourceVersion": str(next(self._versions))}})
                return copy.deepcopy(self.objects[item])
            uid = ((body or {}).get("preconditions") or {}).get("uid")
            if uid and uid != current["metadata"]["uid"]:
                raise ApiError(409, "Conflict", "the uid precondition failed")
            return self.objects.pop(item)

    def _list(self, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        wanted = dict(term.split("=") for term in query.get("labelSelector", "").split(",") if term)
        items = [copy.deepcopy(o) for p, o in self.objects.items() if p.rsplit("/", 1)[0] == path
                 and (o["metadata"].get("labels") or {}).items() >= wanted.items()]
        return {"metadata": {"resourceVersion": str(next(self._versions))}, "items": items}

    def _create(self, path: str, resource: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
        if resource in self.refuse:
            raise ApiError(self.refuse[resource], "Forbidden", f"{resource} is forbidden: exceeded quota: q")
        item = f"{path}/{manifest['metadata']['name']}"
        if item in self.objects:
            raise ApiError(409, "AlreadyExists", f"{resource} {manifest['metadata']['name']} already exists")
        created = merge(dict(manifest), {"metadata": {"resourceVersion": str(next(self._versions)),
                                                      "uid": f"uid-{resource}-{next(self._versions)}"}})
        self.objects[item] = created
        return copy.deepcopy(created)


def _json_patch(current: Mapping[str, Any], ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The operator's JSON patches of one level below the root (`test`, then `add`), as the merge patch
    they amount to; a failed `test` is refused as the API server does (a bare 422). An
    added null is removed, as the API server prunes a null of a non-nullable field."""
    patch: dict[str, Any] = {}
    for op in ops:
        _, top, key = op["path"].split("/")
        if op["op"] == "test":
            if (current.get(top) or {}).get(key) != op["value"]:
                raise ApiError(422, "Invalid", "the server rejected our request due to an error in our request")
        else:
            assert op["op"] == "add", op
            patch.setdefault(top, {})[key] = op["value"]
    return patch


def _path(api_version: str, kind: str, namespace: str | None, name: str) -> str:
    """Where Kube reads the object: namespaced, or cluster-scoped without a namespace."""
    if namespace is not None:
        return _item(api_version, kind, namespace, name)
    k = _KINDS[(api_version, kind)]
    return f"{k.group_path}/{k.plural}/{name}"
