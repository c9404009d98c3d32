"""kopf handlers: all registered here, all thin. `python -m kopf run -m ltj_operator.handlers`.

Startup reads and validates the configuration (an invalid setting stops the operator with the
variable's name), serves the Prometheus metrics (metrics.py) and keeps the configuration, the API
client and the work queue in kopf's memo. Watch events of jobs and of the pods they own only poke the
job's key; the work queue runs `reconcile` for it in a worker thread and posts the resulting
Kubernetes Events. With leader election on (several replicas), every replica watches and keeps its
cache warm, but only the holder of the Lease reconciles: a standby's passes end at once, and it pokes
every job it knows when it starts leading.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import kopf

from . import constants as C
from .config import ConfigError, OperatorConfig
from .diffbase import EventsOnlyDiffBaseStorage
from .expectations import Expectations
from .kube import Kube, ObjectCache
from .leader import LeaderElector, Timing
from .metrics import MetricsServer, OperatorMetrics
from .reconcile import reconcile
from .workqueue import WorkQueue

log = logging.getLogger("ltj_operator")

# A finished job changes only through events (its pods finishing or being cleaned up; the TTL comes
# back as a requeue time), so it is resynced this many times less often than an active one: the
# periodic reads of hundreds of finished jobs would otherwise be most of the operator's API traffic.
FINISHED_RESYNC_FACTOR = 10
# Only our pods and Workloads: the API server filters those watches instead of sending every pod or
# Workload of the cluster.
POD_SELECTOR = f"{C.LABEL_MANAGED_BY}={C.MANAGED_BY},{C.LABEL_JOB_NAME}"


def configure_settings(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf settings derived from our configuration (kept apart from startup so tests can check it)."""
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = C.MANAGED_BY
    # kopf's peering freezes replicas of equal priority instead of electing one: our own Lease does (leader.py).
    settings.peering.standalone = True
    # kopf's own bookkeeping (unused by event handlers, but never under kopf.zalando.org on our objects).
    settings.persistence.finalizer = f"{C.GROUP}/kopf-finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=C.GROUP)
    settings.persistence.diffbase_storage = EventsOnlyDiffBaseStorage()
    # Re-establish watches regularly so a silently dropped connection cannot stall the operator.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.execution.max_workers = max(4, config.workers)
    settings.watching.label_selectors["v1", "pods"] = POD_SELECTOR
    settings.watching.label_selectors[C.KUEUE_GROUP, C.KUEUE_WORKLOADS] = POD_SELECTOR


def next_pass_in(outcome: Any, config: OperatorConfig) -> float | None:
    """Seconds until the job's next pass (None: the job is gone)."""
    if outcome.gone:
        return None
    decision = outcome.decision
    finished = decision is not None and decision.status.get("phase") in C.TERMINAL_PHASES
    resync = config.resync_seconds * (FINISHED_RESYNC_FACTOR if finished else 1)
    return resync if outcome.requeue_after is None else min(outcome.requeue_after, resync)


def pass_priority(expectations: Expectations, key: tuple[str, str]) -> int:
    """A waiting pass's rank for a reconcile thread (lower first): jobs waiting for their pods before
    the status of jobs whose pods exist, which only records what already happened."""
    return 0 if expectations.awaits_pods(*key) else 1


def elector(config: OperatorConfig, kube: Kube) -> LeaderElector | None:
    """This process's candidacy for the Lease, or None when election is off (it always acts)."""
    if not config.lease_namespace:
        return None
    timing = Timing(config.lease_duration_seconds, config.lease_renew_deadline_seconds,
                    config.lease_retry_period_seconds)
    # Unique per process, so a restarted pod never mistakes its predecessor's lease for its own.
    identity = f"{os.environ.get('HOSTNAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    # Its own client timeout: a hung request must not outlast the renew deadline.
    return LeaderElector(Kube(kube.api, timeout=timing.renew_deadline, fanout=1), config.lease_namespace, identity,
                         timing)


def _watched(memo: Any, namespace: str | None, **_: Any) -> bool:
    config = getattr(memo, "config", None)
    return config is None or config.watches(namespace)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster token, else KUBECONFIG as it is now (kopf's default login goes through the kubernetes
    client, whose KUBECONFIG default is frozen when the library is first imported)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup(errors=kopf.ErrorsMode.PERMANENT)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    try:
        config = OperatorConfig.from_env(os.environ)
    except ConfigError as exc:
        raise kopf.PermanentError(f"invalid operator configuration: {exc}") from None
    logging.getLogger("ltj_operator").setLevel(config.log_level)
    # kopf logs every handled watch event at INFO ("Handler 'pod_event' succeeded."): a line per pod event,
    # written on the event loop, that says nothing the operator's own lines do not. Its warnings still show.
    logging.getLogger("kopf.objects").setLevel(config.log_level if config.log_level == "DEBUG" else "WARNING")
    configure_settings(settings, config)
    # Cached reads are re-checked against the API server once per resync period (see ObjectCache).
    cache = ObjectCache(max_age=0.9 * config.resync_seconds)
    expectations = Expectations(cache)
    kube = Kube.from_environment(cache, workers=config.workers)
    executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="ltj-reconcile")
    leader = elector(config, kube)
    # Only the leader reports its jobs: a standby's view is empty or, once deposed, stale.
    metrics = OperatorMetrics(reporting=lambda: leader is None or leader.leading())
    if config.metrics_port:
        try:
            memo.metrics_server = MetricsServer.start(metrics.registry, config.metrics_port)
        except OSError as exc:
            raise kopf.PermanentError(f"LTJ_METRICS_PORT: cannot serve metrics on port {config.metrics_port}: "
                                      f"{exc}") from None

    async def work(key: tuple[str, str]) -> float | None:
        if leader is not None and not leader.leading():
            metrics.forget(*key)  # a job deleted meanwhile is not in the view it reports when it leads again
            return None  # a standby's pass: the key stays in memo.jobs for when it leads
        namespace, name = key
        loop = asyncio.get_running_loop()
        outcome = await metrics.reconcile_pass(
            key, loop.run_in_executor(executor, reconcile, kube, config, expectations, namespace, name))
        if outcome.body is not None:
            for note in outcome.events:
                kopf.event(dict(outcome.body), type=note.type, reason=note.reason, message=note.message)
        if outcome.error is not None:
            raise outcome.error  # the work queue retries with backoff
        return next_pass_in(outcome, config)

    memo.config = config
    memo.kube = kube
    memo.cache = cache
    memo.expectations = expectations
    memo.executor = executor
    memo.leader = leader
    memo.jobs = set()  # every job seen and not deleted: what a new leader reconciles first
    # As many passes at once as reconcile threads, so a waiting pass is ordered by its priority.
    memo.queue = WorkQueue(work, resync_seconds=config.resync_seconds * FINISHED_RESYNC_FACTOR,
                           slots=config.workers, priority=lambda key: pass_priority(expectations, key))
    if leader is not None:
        def lead() -> None:
            for key in sorted(memo.jobs):
                memo.queue.poke(key)

        memo.election = asyncio.get_running_loop().create_task(leader.run(lead), name="leader election")
    logger.info("ltj operator configured: %s", config)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    election = getattr(memo, "election", None)
    if election is not None:
        election.cancel()
    queue = getattr(memo, "queue", None)
    if queue is not None:
        await queue.stop()
    leader = getattr(memo, "leader", None)
    if leader is not None:
        # A standby takes over at its next try instead of waiting for the lease to expire (a pass still
        # finishing in its thread is fenced like any stale writer).
        await asyncio.to_thread(leader.release)
        leader.kube.close()
    executor = getattr(memo, "executor", None)
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)
    kube = getattr(memo, "kube", None)
    if kube is not None:
        kube.close()
    server = getattr(memo, "metrics_server", None)
    if server is not None:
        await asyncio.to_thread(server.stop)  # waits for the server's poll loop: not on the event loop


@kopf.on.event(C.GROUP, C.VERSION, C.PLURAL, when=_watched)
async def job_event(namespace: str, name: str, event: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
    # Listing at startup delivers every existing job here too: that is how reconciliation resumes.
    if event.get("type") == "DELETED":
        memo.cache.forget_job(namespace, name)
        memo.expectations.forget(namespace, name)
        memo.jobs.discard((namespace, name))
        memo.queue.poke((namespace, name))
        return
    memo.jobs.add((namespace, name))
    if isinstance(event.get("object"), Mapping) and not memo.cache.put_job(event["object"]):
        return  # the echo of our own status write: the pass that wrote it has already seen it
    memo.queue.poke((namespace, name))


@kopf.on.event("v1", "pods", labels={C.LABEL_MANAGED_BY: C.MANAGED_BY, C.LABEL_JOB_NAME: kopf.PRESENT},
               when=_watched)
async def pod_event(namespace: str, labels: Any, event: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
    if isinstance(event.get("object"), Mapping):
        if event.get("type") == "DELETED":
            memo.cache.forget_pod(event["object"])
        else:
            memo.cache.put_pod(event["object"])
    memo.queue.poke((namespace, labels[C.LABEL_JOB_NAME]))


# Kueue's verdicts on a queued job (admitted, pending and why, finished) arrive on its Workload. Where
# Kueue's CRDs are not installed kopf serves no such resource (it logs that it cannot) and starts
# watching it when they are (it watches CRDs): the operator needs no restart.
@kopf.on.event(C.KUEUE_GROUP, C.KUEUE_VERSION, C.KUEUE_WORKLOADS,
               labels={C.LABEL_MANAGED_BY: C.MANAGED_BY, C.LABEL_JOB_NAME: kopf.PRESENT}, when=_watched)
async def workload_event(namespace: str, labels: Any, memo: kopf.Memo, **_: Any) -> None:
    memo.queue.poke((namespace, labels[C.LABEL_JOB_NAME]))


@kopf.on.probe(id="reconcilers")
def reconcilers(memo: kopf.Memo, **_: Any) -> int:
    """Liveness probe detail: the number of jobs with an active worker."""
    queue = getattr(memo, "queue", None)
    return len(queue) if queue is not None else 0
