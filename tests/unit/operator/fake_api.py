"""An in-memory API server behind Kube's transport, for reconcile's unit tests.

Everything above `Kube.request` is the real thing (the cache, create-if-absent, claim ownership, uid
preconditions); below it: objects by path, 409 on a create of an existing name, JSON merge patches
of the status subresource, deletes with uid preconditions, label-selected lists, and refusals by
resource. Each request is recorded as "VERB resource" (LIST for a collection GET) with the round
trip it went in: one Kube.all, or the request alone.
"""

from __future__ import annotations

import copy
import itertools
import threading
from typing import Any, Callable, Mapping, Sequence

from ltj_operator.kube import ApiError, Kube, ObjectCache, _item
from unit.operator.operator_helpers import merge


class FakeApi(Kube):
    def __init__(self, cache: ObjectCache):
        super().__init__(api_client=None, cache=cache, fanout=8)
        self.objects: dict[str, dict[str, Any]] = {}  # item path -> object
        self.refuse: dict[str, int] = {}  # resource -> HTTP status of the refusal its creates get
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
        self.objects[_item(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])] = stored
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
                content_type: str = "application/json") -> Any:
        parts = path.split("/")
        at = parts.index("namespaces")
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
                return copy.deepcopy(current)
            if method == "PATCH":
                self.objects[item] = merge(current, {**body, "metadata": {"resourceVersion": str(next(self._versions))}})
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
