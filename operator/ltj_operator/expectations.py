"""What the controller did to each job that its cache does not show yet, or never shows.

The cache (kube.ObjectCache) holds only what the API server showed. What a pass did itself is the
controller's to remember, as the Kubernetes Job controller keeps its ControllerExpectations: the pods
a pass created or deleted are expected until the cache shows them (their watch event or a list) or
the cache's max_age passes (its own bound on a lost watch event). Meanwhile the job's pods are seen as
created or deleting, so the next pass neither creates nor deletes them twice and a new job whose
gang is under way no longer awaits its pods. Besides, per job: when its status was last written or
its first gang created (status.PROGRESS_HOLD_SECONDS counts from there).

Thread-safe: passes of different jobs run in several worker threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Iterable

from .kube import ObjectCache
from .podview import PodView

Key = tuple[str, str]


@dataclass
class _Job:
    created: dict[str, tuple[PodView, float]] = field(default_factory=dict)  # pod name -> (view, when)
    deleted: dict[str, float] = field(default_factory=dict)  # pod uid -> when
    written: float | None = None

    def empty(self) -> bool:
        return not (self.created or self.deleted or self.written is not None)


class Expectations:
    def __init__(self, cache: ObjectCache):
        self.cache = cache
        self.ttl = cache.max_age
        self._lock = threading.Lock()
        self._jobs: dict[Key, _Job] = {}

    def _job(self, namespace: str, name: str) -> _Job:
        return self._jobs.setdefault((namespace, name), _Job())

    def _tidy(self, key: Key) -> None:
        job = self._jobs.get(key)
        if job is not None and job.empty():
            del self._jobs[key]

    def _live(self, view: PodView, at: float, now: float) -> bool:
        """A created pod still expected: not expired and not seen deleted."""
        return now - at <= self.ttl and not self.cache.deleted(view.uid)

    # -- pods created or deleted, until the cache shows them --
    def created(self, namespace: str, name: str, pods: Iterable[PodView]) -> None:
        now = self.cache.clock()
        with self._lock:
            job = self._job(namespace, name)
            for pod in pods:
                job.created[pod.name] = (pod, now)

    def deleted(self, namespace: str, name: str, uids: Iterable[str]) -> None:
        now = self.cache.clock()
        with self._lock:
            job = self._job(namespace, name)
            for uid in uids:
                job.deleted[uid] = now

    def pods(self, namespace: str, name: str, seen: tuple[PodView, ...]) -> tuple[PodView, ...]:
        """The job's pods: those the cache shows, those created that it does not show yet, and those
        being deleted marked so. An expectation the cache now meets, or that expired, is dropped."""
        key = (namespace, name)
        now = self.cache.clock()
        with self._lock:
            job = self._jobs.get(key)
            if job is None or not (job.created or job.deleted):
                return seen
            shown = {p.uid: p for p in seen}
            job.created = {n: (v, at) for n, (v, at) in job.created.items()
                           if v.uid not in shown and self._live(v, at, now)}
            names = {p.name for p in seen}
            pods = [*seen, *(v for n, (v, _) in job.created.items() if n not in names)]
            present = {p.uid for p in pods}
            job.deleted = {uid: at for uid, at in job.deleted.items()
                           if uid in present and not (uid in shown and shown[uid].deleting) and now - at <= self.ttl}
            self._tidy(key)
            return tuple(replace(p, deleting=True) if p.uid in job.deleted else p for p in pods)

    def _expects_pods(self, key: Key, now: float) -> bool:
        job = self._jobs.get(key)
        return job is not None and any(self._live(v, at, now) for v, at in job.created.values())

    def awaits_pods(self, namespace: str, name: str) -> bool:
        """The job is active and no pod of it is seen or expected: its next pass is likely to create its gang."""
        if not self.cache.without_pods(namespace, name):
            return False
        with self._lock:
            return not self._expects_pods((namespace, name), self.cache.clock())

    # -- the controller's own --
    def wrote(self, namespace: str, name: str) -> None:
        """The job's status was just written, or its first gang created (its record deferred)."""
        now = self.cache.clock()
        with self._lock:
            self._job(namespace, name).written = now

    def since_write(self, namespace: str, name: str) -> float | None:
        with self._lock:
            job = self._jobs.get((namespace, name))
            written = None if job is None else job.written
        return None if written is None else self.cache.clock() - written

    def finished(self, namespace: str, name: str) -> None:
        """The job finished: only its pods' expectations still matter (cleanPodPolicy deletes some)."""
        with self._lock:
            job = self._jobs.get((namespace, name))
            if job is not None:
                job.written = None
                self._tidy((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        """The job is gone."""
        with self._lock:
            self._jobs.pop((namespace, name), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)
