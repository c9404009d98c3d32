"""kopf handlers: all registered here, all thin. `python -m kopf run -m ltj_operator.handlers`.

Startup reads and validates the configuration (an invalid setting stops the operator with the
variable's name) and keeps it, the API client and the work queue in kopf's memo. Watch events of
jobs and of the pods they own only poke the job's key; the work queue runs `reconcile` for it in a
worker thread and posts the resulting Kubernetes Events.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from . import constants as C
from .config import ConfigError, OperatorConfig
from .kube import Kube
from .reconcile import reconcile
from .workqueue import WorkQueue

log = logging.getLogger("ltj_operator")


def configure_settings(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf settings derived from our configuration (kept apart from startup so tests can check it)."""
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = C.MANAGED_BY
    # One replica by default; with a KopfPeering name several replicas elect an active one.
    settings.peering.standalone = not config.peering_name
    if config.peering_name:
        settings.peering.name = config.peering_name
        settings.peering.clusterwide = config.clusterwide
        settings.peering.mandatory = True
    # kopf's own bookkeeping (unused by event handlers, but never under kopf.zalando.org on our objects).
    settings.persistence.finalizer = f"{C.GROUP}/kopf-finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=C.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=C.GROUP, key="last-handled-configuration")
    # Re-establish watches regularly so a silently dropped connection cannot stall the operator.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.execution.max_workers = max(4, config.workers)


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
    configure_settings(settings, config)
    kube = Kube.from_environment()
    executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="ltj-reconcile")

    async def work(key: tuple[str, str]) -> float | None:
        namespace, name = key
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(executor, reconcile, kube, config, namespace, name)
        if outcome.body is not None:
            for note in outcome.events:
                kopf.event(dict(outcome.body), type=note.type, reason=note.reason, message=note.message)
        if outcome.error is not None:
            raise outcome.error  # the work queue retries with backoff
        if outcome.gone:
            return None
        return outcome.requeue_after if outcome.requeue_after is not None else config.resync_seconds

    memo.config = config
    memo.kube = kube
    memo.executor = executor
    memo.queue = WorkQueue(work, resync_seconds=config.resync_seconds)
    logger.info("ltj operator configured: %s", config)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    queue = getattr(memo, "queue", None)
    if queue is not None:
        await queue.stop()
    executor = getattr(memo, "executor", None)
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)


@kopf.on.event(C.GROUP, C.VERSION, C.PLURAL, when=_watched)
async def job_event(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    # Listing at startup delivers every existing job here too: that is how reconciliation resumes.
    memo.queue.poke((namespace, name))


@kopf.on.event("v1", "pods", labels={C.LABEL_MANAGED_BY: C.MANAGED_BY, C.LABEL_JOB_NAME: kopf.PRESENT},
               when=_watched)
async def pod_event(namespace: str, labels: Any, memo: kopf.Memo, **_: Any) -> None:
    memo.queue.poke((namespace, labels[C.LABEL_JOB_NAME]))


@kopf.on.probe(id="reconcilers")
def reconcilers(memo: kopf.Memo, **_: Any) -> int:
    """Liveness probe detail: the number of jobs with an active worker."""
    queue = getattr(memo, "queue", None)
    return len(queue) if queue is not None else 0
