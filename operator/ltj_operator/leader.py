"""Leader election over a coordination.k8s.io/v1 Lease: one operator acts, the others stand by.

kopf's own peering is not an election (operators of equal priority, such as a Deployment's replicas,
all freeze), so this is client-go's leaderelection algorithm over the API server's Lease:

- A candidate takes the lease when nobody holds it or its holder let it expire: the record has not
  changed for leaseDurationSeconds, measured on this candidate's own monotonic clock from when it saw
  the record change (never from the holder's renewTime: two machines' clocks differ).
- Every take and every renewal is a PUT conditional on the resourceVersion read, so of two
  candidates one wins and the other gets 409 and stays standby.
- The leader renews every retry period and acts only while its last renewal, counted from before
  that request was sent, is younger than the renew deadline, which is shorter than the lease: a
  leader that cannot renew (partitioned, API server down) stops acting before any standby may take
  the lease. A leader that stops cleanly gives the lease up, so a standby takes it at its next try.

Status writes are fenced besides (see Kube.patch_job_status): a deposed leader paused between its
check and its write still cannot move a job's attempt or restarts backwards.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from .kube import ApiError, Kube

log = logging.getLogger(__name__)

LEASE_API_VERSION = "coordination.k8s.io/v1"
# One name for every release: two operators in the same namespace compete for the same lease.
LEASE_NAME = "ltj-operator"


@dataclass(frozen=True)
class Timing:
    duration: float  # a lease nobody renews is free after this long
    renew_deadline: float  # the leader stops acting this long after its last renewal (< duration)
    retry_period: float  # how often candidates try and the leader renews (< renew_deadline)

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.duration:
            raise ValueError(f"lease timing must satisfy 0 < retry period < renew deadline < duration: {self}")


@dataclass(frozen=True)
class _Seen:
    version: str  # the record's resourceVersion
    at: float  # this candidate's clock when it first saw that version


def _micro_time(moment: dt.datetime) -> str:
    """metav1.MicroTime, as the Lease's times are written."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class LeaderElector:
    """One candidate. `step` is one try (blocking I/O, for a worker thread); `leading` is what the
    operator asks before each pass; `run` tries forever on the event loop."""

    def __init__(self, kube: Kube, namespace: str, identity: str, timing: Timing, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], dt.datetime] = _utcnow):
        self.kube = kube
        self.namespace = namespace
        self.identity = identity
        self.timing = timing
        self.clock = clock
        self.wall = wall
        self._seen: _Seen | None = None
        self._renewed: float | None = None  # clock before the request of the last successful take or renewal

    def leading(self) -> bool:
        return self._renewed is not None and self.clock() - self._renewed < self.timing.renew_deadline

    def step(self) -> bool:
        """Take or renew the lease once; whether this candidate holds it now. API errors count as a
        failed try (the deadline, not one error, deposes a leader)."""
        sent = self.clock()
        try:
            current = self.kube.get(LEASE_API_VERSION, "Lease", self.namespace, LEASE_NAME)
            if current is None:
                return self._won(self.kube.create(self._lease(None)), sent)
            spec = current.get("spec") or {}
            version = str((current.get("metadata") or {}).get("resourceVersion"))
            if self._seen is None or self._seen.version != version:
                self._seen = _Seen(version, sent)
            holder = spec.get("holderIdentity") or ""
            duration = spec.get("leaseDurationSeconds") or self.timing.duration
            if holder and holder != self.identity and sent - self._seen.at < duration:
                self._renewed = None  # someone else holds it (we may have been deposed while paused)
                return False
            return self._won(self.kube.replace(self._lease(current)), sent)
        except ApiError as exc:
            if exc.status != 409:  # 409: another candidate's write came first
                log.warning("leader election: lease %s/%s: %s", self.namespace, LEASE_NAME, exc)
            return self.leading()

    def _won(self, lease: dict[str, Any] | None, sent: float) -> bool:
        if lease is None:  # a create that met a lease made meanwhile: try again at the next step
            return self.leading()
        self._seen = _Seen(str(lease["metadata"].get("resourceVersion")), sent)
        self._renewed = sent
        return True

    def _lease(self, current: dict[str, Any] | None) -> dict[str, Any]:
        now = _micro_time(self.wall())
        spec = (current or {}).get("spec") or {}
        renewal = spec.get("holderIdentity") == self.identity
        transitions = spec.get("leaseTransitions") or 0
        return {
            "apiVersion": LEASE_API_VERSION, "kind": "Lease",
            # The read's resourceVersion makes the PUT conditional.
            "metadata": (current or {}).get("metadata") or {"name": LEASE_NAME, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.timing.duration)),
                "acquireTime": spec.get("acquireTime") if renewal else now,
                "renewTime": now,
                "leaseTransitions": transitions if renewal or current is None else transitions + 1,
            },
        }

    def release(self) -> None:
        """Give the lease up (a clean stop), so a standby need not wait for it to expire."""
        if not self.leading():
            return
        self._renewed = None  # stop acting before the lease can change hands
        try:
            current = self.kube.get(LEASE_API_VERSION, "Lease", self.namespace, LEASE_NAME)
            if current is None or (current.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            now = _micro_time(self.wall())
            self.kube.replace({**current, "spec": {**current["spec"], "holderIdentity": None, "leaseDurationSeconds": 1,
                                                   "renewTime": now, "acquireTime": now}})
        except ApiError as exc:
            log.warning("leader election: could not release lease %s/%s: %s", self.namespace, LEASE_NAME, exc)

    async def run(self, on_leading: Callable[[], None]) -> None:
        """Try every retry period; `on_leading` runs on the event loop each time this candidate starts leading."""
        loop = asyncio.get_running_loop()
        was = False
        while True:
            now = await loop.run_in_executor(None, self.step)
            if now and not was:
                log.info("leader election: %s leads (lease %s/%s)", self.identity, self.namespace, LEASE_NAME)
                on_leading()
            elif was and not now:
                log.warning("leader election: %s no longer leads (lease %s/%s): standing by", self.identity,
                            self.namespace, LEASE_NAME)
            was = now
            await asyncio.sleep(self.timing.retry_period)
