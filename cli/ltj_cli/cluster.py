"""The plugin's thin I/O layer: kubeconfig as kubectl reads it, LightningTrainingJobs, their events,
pods and logs. Every object comes back as the API's JSON (camelCase dicts), as the views expect.

Waiting is done with the API's watch (with a server-side timeout, so a job that turns final without
any pod event is noticed), never with sleeps.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import ltj_api as api

from .logs import PodRef
from .view import is_final

Obj = dict[str, Any]

# How long one watch of the job's pods waits before the job itself is looked at again.
WATCH_SECONDS = 10
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class CliError(Exception):
    """A failure to report on stderr, with exit code 1 (the message says what and where)."""


@dataclass
class Cluster:
    client: Any  # kubernetes.client.ApiClient
    namespace: str

    # -- plumbing ------------------------------------------------------------------------------------
    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.client)

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.client)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn`` with the API's errors turned into CliErrors that name ``what``."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as e:
            raise CliError(_api_message(e, what)) from e
        except HTTPError as e:
            raise CliError(f"cannot reach the API server at {self.client.configuration.host}: {e}") from e

    def _json(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Obj:
        resp = self._call(what, fn, *args, _preload_content=False, **kwargs)
        return json.loads(resp.data)

    def _watch(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Iterator[tuple[str, Obj]]:
        """(type, object) of a watch; a 410 Gone (history compacted) raises Expired."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        try:
            for event in watch.Watch().stream(fn, *args, **kwargs):
                obj = event.get("raw_object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired()
                    raise CliError(f"{what}: {obj.get('message', obj)}")
                yield event["type"], obj
        except ApiException as e:
            if e.status == 410:
                raise Expired() from e
            raise CliError(_api_message(e, what)) from e

    # -- jobs ------------------------------------------------------------------------------------------
    def job(self, name: str) -> Obj:
        return self._call(f'{api.PLURAL}.{api.GROUP} "{name}" in namespace "{self.namespace}"',
                          self._custom().get_namespaced_custom_object, api.GROUP, api.VERSION, self.namespace,
                          api.PLURAL, name)

    def _list_jobs(self, all_namespaces: bool, name: str | None = None) -> Obj:
        custom = self._custom()
        selector = {"field_selector": f"metadata.name={name}"} if name else {}
        if all_namespaces:
            return self._call(f"{api.PLURAL}.{api.GROUP}", custom.list_cluster_custom_object, api.GROUP,
                              api.VERSION, api.PLURAL, **selector)
        return self._call(f'{api.PLURAL}.{api.GROUP} in namespace "{self.namespace}"',
                          custom.list_namespaced_custom_object, api.GROUP, api.VERSION, self.namespace, api.PLURAL,
                          **selector)

    def jobs(self, all_namespaces: bool = False) -> list[Obj]:
        return list(self._list_jobs(all_namespaces).get("items") or [])

    def watch_jobs(self, name: str | None = None, all_namespaces: bool = False) -> Iterator[tuple[str, Obj]]:
        """("ADDED"/"MODIFIED"/"DELETED", job) for the current jobs, then for every change, forever."""
        custom = self._custom()
        while True:
            listed = self._list_jobs(all_namespaces, name)
            for item in listed.get("items") or []:
                yield "ADDED", item
            rv = (listed.get("metadata") or {}).get("resourceVersion")
            selector = {"field_selector": f"metadata.name={name}"} if name else {}
            args = ((custom.list_cluster_custom_object, api.GROUP, api.VERSION, api.PLURAL) if all_namespaces else
                    (custom.list_namespaced_custom_object, api.GROUP, api.VERSION, self.namespace, api.PLURAL))
            try:
                while True:  # the server ends each watch after a while: go on from the last version seen
                    for kind, obj in self._watch(f"watching {api.PLURAL}", *args, resource_version=rv, **selector):
                        rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                        yield kind, obj
            except Expired:
                continue  # list again: the watch's history is gone

    def events(self, job: Obj) -> list[Obj]:
        uid = (job.get("metadata") or {}).get("uid")
        out = self._json("events", self._core().list_namespaced_event, self.namespace,
                         field_selector=f"involvedObject.uid={uid}")
        return list(out.get("items") or [])

    # -- pods and logs ---------------------------------------------------------------------------------
    def rank_pods(self, job: str, rank: int) -> Obj:
        return self._json("pods", self._core().list_namespaced_pod, self.namespace,
                          label_selector=_rank_selector(job, rank))

    def wait_pod_change(self, job: str, rank: int, resource_version: str | None) -> None:
        """Returns at the first change to the rank's pods after ``resource_version``, or after WATCH_SECONDS."""
        try:
            for _ in self._watch("watching pods", self._core().list_namespaced_pod, self.namespace,
                                 label_selector=_rank_selector(job, rank), resource_version=resource_version,
                                 timeout_seconds=WATCH_SECONDS):
                return
        except Expired:
            return

    def log_lines(self, pod: PodRef, follow: bool) -> Iterator[str]:
        resp = self._call(f'logs of pod "{pod.name}"', self._core().read_namespaced_pod_log, pod.name,
                          self.namespace, container=pod.container, follow=follow, _preload_content=False)
        try:
            for raw in resp:  # urllib3 yields the body line by line as it arrives
                yield raw.decode("utf-8", errors="replace").rstrip("\n")
        finally:
            resp.release_conn()


class Expired(Exception):
    """A watch's resourceVersion is too old (410 Gone): list again."""


def _rank_selector(job: str, rank: int) -> str:
    return f"{api.LABEL_JOB_NAME}={job},{api.LABEL_NODE_RANK}={rank}"


def _api_message(e: Any, what: str) -> str:
    try:
        message = json.loads(e.body).get("message") or e.reason
    except (TypeError, ValueError, AttributeError):
        message = e.reason
    if e.status == 404:
        return f"{what} not found"
    if e.status == 403:
        return f"forbidden: {message}"
    return f"{what}: {e.status} {e.reason}: {message}"


def connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> Cluster:
    """A client as kubectl would make it: --kubeconfig, else $KUBECONFIG (a list of files), else
    ~/.kube/config, else the pod's in-cluster account; the namespace from -n, else the context's."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        client = config.new_client_from_config(config_file=path, context=context)
        contexts, active = config.list_kube_config_contexts(config_file=path)
    except ConfigException as e:
        if kubeconfig or context or "KUBERNETES_SERVICE_HOST" not in os.environ:
            where = kubeconfig or path or "~/.kube/config"
            raise CliError(f"kubeconfig {where}: {e}") from e
        from kubernetes import client as k8s

        config.load_incluster_config()
        ns = namespace or (IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.exists() else "default")
        return Cluster(k8s.ApiClient(), ns)
    chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
    return Cluster(client, namespace or ((chosen or {}).get("context") or {}).get("namespace") or "default")


# -- the logs' source ------------------------------------------------------------------------------------
def _started(pod: Obj, container: str) -> bool:
    """Whether the container has run (it has logs): running now, or terminated."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            state = cs.get("state") or {}
            return "running" in state or "terminated" in state
    return False


def pod_ref(pod: Obj, rank: int) -> PodRef:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    # The trainer is the pod's only regular container (the relay is a sidecar init container).
    container = (spec.get("containers") or [{}])[0].get("name", "")
    return PodRef(name=meta.get("name", ""), uid=meta.get("uid", ""), rank=rank,
                  attempt=(meta.get("labels") or {}).get(api.LABEL_ATTEMPT), container=container)


@dataclass
class JobLogs:
    """logs.Source over the API: a job's pods found by their rank label."""

    cluster: Cluster
    job: str

    def wait_pod(self, rank: int, after_uid: str | None) -> PodRef | None:
        while True:
            listed = self.cluster.rank_pods(self.job, rank)
            fresh = [p for p in listed.get("items") or []
                     if (p.get("metadata") or {}).get("uid") != after_uid
                     and not (p.get("metadata") or {}).get("deletionTimestamp")]
            fresh.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""))
            for pod in reversed(fresh):
                ref = pod_ref(pod, rank)
                if _started(pod, ref.container):
                    return ref
            try:
                job = self.cluster.job(self.job)
            except CliError:
                return None  # the job is gone: no pod will come
            if is_final(job):
                return None
            self.cluster.wait_pod_change(self.job, rank, (listed.get("metadata") or {}).get("resourceVersion"))

    def lines(self, pod: PodRef, follow: bool) -> Iterable[str]:
        return self.cluster.log_lines(pod, follow)
