"""Prometheus metrics of the operator, served by prometheus_client's own HTTP server (LTJ_METRICS_PORT).

Names follow Prometheus conventions: the `ltj_` prefix, counters ending in `_total`, durations in
seconds, and labels of bounded cardinality only (a result, a phase, a namespace; never a job's name or
uid, which churn with every job).

Besides the passes themselves (count by result, duration), the metrics come from what each pass saw of
its job: its phase (`ltj_jobs`, computed at scrape time from the latest pass of every job, so a job the
operator forgets leaves it at once) and the cumulative numbers in its status (gang restarts, and the
relay's event seq and skipped lines in `status.training`). A counter grows by the increase between two
passes of the same job object (uid): what a job did before this process first saw it is not counted,
so an operator restart never counts a job's history twice.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from . import constants as C
from .reconcile import Outcome, _refusal
from .status import parse_time

# Values of the `result` label of ltj_reconcile_total: the pass went through; the API server refused a
# create for good until something changes (quota, admission, a name taken); anything else failed.
RESULTS = ("success", "refused", "error")
# Seconds from a trainer's event to the operator seeing it: sub-second to seconds when the relay keeps up
# (it batches its writes), minutes for the job whose status falls behind.
LAG_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, float("inf"))


@dataclass(frozen=True)
class _Seen:
    """What the latest pass saw of one job; a count is None while the status holds no valid number."""
    uid: str
    namespace: str
    phase: str
    restarts: int | None
    seq: int | None
    skipped: int | None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _increase(before: int | None, after: int | None) -> int:
    """How much a cumulative number grew between two passes (0 when either is unknown or it went down)."""
    return after - before if before is not None and after is not None and after > before else 0


def _later(before: int | None, after: int | None) -> int | None:
    """The number to compare the next pass with: an invalid value does not forget the last valid one."""
    return before if after is None else after


class OperatorMetrics:
    """The registry and every metric in it. Passes are recorded from the event loop's thread; scrapes
    read from the HTTP server's, so the per-job view is guarded by a lock."""

    def __init__(self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time,
                 reporting: Callable[[], bool] = lambda: True):
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self._reporting = reporting  # whether ltj_jobs shows the jobs (asked at each scrape)
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], _Seen] = {}
        r = self.registry
        self.reconciles = Counter("ltj_reconcile_total", "Reconcile passes of jobs, by result (success, refused: "
                                  "the API server refused a create, error: the pass failed and is retried).",
                                  ["result"], registry=r)
        for result in RESULTS:
            self.reconciles.labels(result)  # every result from 0, so rate() sees the first error
        self.reconcile_seconds = Histogram("ltj_reconcile_duration_seconds", "Duration of one reconcile pass.",
                                           registry=r)
        self.gang_restarts = Counter("ltj_gang_restarts_total", "Gang restarts after retryable failures "
                                     "(status.restarts increases the operator saw).", registry=r)
        self.events_applied = Counter("ltj_relay_events_applied_total", "Trainer events the relays applied to "
                                      "status.training (status.training.seq increases the operator saw).",
                                      registry=r)
        self.dropped_lines = Counter("ltj_relay_dropped_lines_total", "Event log lines the relays skipped as torn "
                                     "or invalid (status.training.skippedLines increases the operator saw).",
                                     registry=r)
        self.relay_lag = Histogram("ltj_relay_lag_seconds", "Seconds from a job's last trainer event "
                                   "(status.training.lastEventTime) to the operator's pass that first saw it.",
                                   buckets=LAG_BUCKETS, registry=r)
        r.register(_Jobs(self))
        # What prometheus_client's default registry exports about the process itself.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    # -- passes ------------------------------------------------------------------------------------

    async def reconcile_pass(self, key: tuple[str, str], pass_: Awaitable[Outcome]) -> Outcome:
        """Await one reconcile pass of `key`: count it by result, time it, and record what it saw of the job."""
        at, started = self._clock(), time.perf_counter()
        try:
            outcome = await pass_
        except Exception:
            self.passed("error", time.perf_counter() - started)
            raise
        error = outcome.error
        self.passed("success" if error is None else "refused" if _refusal(error) else "error",
                    time.perf_counter() - started)
        namespace, name = key
        if outcome.gone:
            self.forget(namespace, name)
        elif outcome.body is not None and outcome.decision is not None:
            # The status as read, with what the pass decided for the operator's own fields.
            status = {**(outcome.body.get("status") or {}), **outcome.decision.status}
            self.saw(namespace, name, str((outcome.body.get("metadata") or {}).get("uid") or ""), status, at)
        return outcome

    def passed(self, result: str, seconds: float) -> None:
        self.reconciles.labels(result).inc()
        self.reconcile_seconds.observe(seconds)

    # -- jobs --------------------------------------------------------------------------------------

    def saw(self, namespace: str, name: str, uid: str, status: Mapping[str, Any], at: float) -> None:
        """A pass at `at` (epoch seconds) saw the job `uid` with this status."""
        training = status.get("training")
        if isinstance(training, Mapping):
            seq, skipped = _count(training.get("seq")), _count(training.get("skippedLines"))
        else:  # no training block yet: no event applied, no line skipped
            training, seq, skipped = {}, 0, 0
        phase = status.get("phase")
        now = _Seen(uid=uid, namespace=namespace, phase=phase if isinstance(phase, str) else C.PHASE_PENDING,
                    restarts=_count(status.get("restarts", 0)), seq=seq, skipped=skipped)
        with self._lock:
            before = self._jobs.get((namespace, name))
            if before is not None and before.uid == uid:
                now = _Seen(uid, namespace, now.phase, _later(before.restarts, now.restarts),
                            _later(before.seq, now.seq), _later(before.skipped, now.skipped))
            self._jobs[(namespace, name)] = now
        if before is None or before.uid != uid:
            return  # first sight of this job object: its numbers are the baseline
        self.gang_restarts.inc(_increase(before.restarts, now.restarts))
        self.dropped_lines.inc(_increase(before.skipped, now.skipped))
        applied = _increase(before.seq, now.seq)
        if applied:
            self.events_applied.inc(applied)
            last_event = parse_time(training.get("lastEventTime"))
            if last_event is not None:
                self.relay_lag.observe(max(0.0, at - last_event.timestamp()))

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._jobs.pop((namespace, name), None)

    def phases(self) -> dict[tuple[str, str], int]:
        """Jobs by (namespace, phase): every known phase of each namespace with a job, absent ones as 0
        (none while not reporting)."""
        if not self._reporting():
            return {}
        with self._lock:
            seen = list(self._jobs.values())
        counts = collections.Counter((s.namespace, s.phase) for s in seen)
        out = {(ns, phase): 0 for ns in {s.namespace for s in seen} for phase in C.PHASES}
        out.update(counts)
        return out


class _Jobs(Collector):
    """ltj_jobs, computed at each scrape from the operator's view of its jobs."""

    def __init__(self, metrics: OperatorMetrics):
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for (namespace, phase), count in sorted(self._metrics.phases().items()):
            family.add_metric([namespace, phase], count)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("ltj_jobs", "Jobs the operator reconciles, by namespace and phase.",
                                 labels=["namespace", "phase"])


@dataclass
class MetricsServer:
    """prometheus_client's HTTP server for a registry, in a daemon thread."""
    server: Any
    thread: threading.Thread

    @classmethod
    def start(cls, registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> "MetricsServer":
        server, thread = start_http_server(port, addr=addr, registry=registry)
        return cls(server, thread)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
