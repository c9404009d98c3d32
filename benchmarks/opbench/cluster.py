"""The cluster a benchmark runs on, and the one client it talks to it with: a private control plane
whose API server writes an audit log (requests counted per user agent), kwok nodes, a blocking HTTPS
JSON client with watches, and kubectl for what is applied as manifests."""

from __future__ import annotations

import calendar
import http.client
import json
import ssl
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

BENCH_UA = "ltj-bench"
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
OUTPUT_CLAIM = "bench-output"

AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  resources: [{group: coordination.k8s.io, resources: [leases]}]
- level: Metadata
"""



def wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Polls until `predicate` returns something truthy, which it returns; TimeoutError names `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s")


def audit_counts(lines: Iterable[str | bytes], agents: Mapping[str, Sequence[str]], start: float, end: float,
                 ) -> dict[str, dict[str, int]]:
    """API requests per system and "verb resource[/subresource]" from audit log lines, by user-agent
    prefix, received in [start, end].

    One count per request: the ResponseComplete event, except watches, counted when they start
    (ResponseStarted), since a watch completes only when it ends."""
    out: dict[str, dict[str, int]] = {name: {} for name in agents}
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue  # a line being written
        verb, stage = ev.get("verb", ""), ev.get("stage")
        if stage != ("ResponseStarted" if verb == "watch" else "ResponseComplete"):
            continue
        ts = _rfc3339(ev.get("requestReceivedTimestamp", ""))
        if ts is None or not start <= ts <= end:
            continue
        ua = ev.get("userAgent", "")
        ref = ev.get("objectRef") or {}
        key = f"{verb} {ref.get('resource') or ev.get('requestURI', '?').split('?')[0]}"
        if ref.get("subresource"):
            key += "/" + ref["subresource"]
        for name, prefixes in agents.items():
            if any(ua.startswith(p) for p in prefixes):
                out[name][key] = out[name].get(key, 0) + 1
                break
    return out


def _rfc3339(text: str) -> float | None:
    # 2025-01-02T03:04:05.123456Z (the audit log always writes UTC with microseconds)
    try:
        base, _, frac = text.rstrip("Z").partition(".")
        t = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
        return t + (float("0." + frac) if frac else 0.0)
    except ValueError:
        return None


def _line_time(line: bytes) -> float:
    i = line.find(b'"requestReceivedTimestamp":"')
    if i < 0:
        return 0.0
    return _rfc3339(line[i + 28:i + 55].split(b'"')[0].decode()) or 0.0



class Api:
    """Blocking JSON calls with one keep-alive connection per thread."""

    def __init__(self, server: str, ctx: ssl.SSLContext, user_agent: str = BENCH_UA):
        url = urllib.parse.urlsplit(server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.ctx = ctx
        self.user_agent = user_agent
        self._local = threading.local()

    def connection(self, timeout: float = 60) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                ok: Sequence[int] = ()) -> Any:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(3):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self.connection()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.2)
                continue
            if resp.status in (429, 500, 503) and attempt < 2:
                time.sleep(0.5)
                continue
            if resp.status >= 300:
                if resp.status in ok:
                    return None  # an expected failure (e.g. 404 when probing)
                raise RuntimeError(f"{method} {path}: {resp.status} {payload[:500]!r}")
            return json.loads(payload) if payload else None
        raise AssertionError("unreachable")


class Watch(threading.Thread):
    """Lists then watches a collection; calls on_event(type, obj, monotonic time) from this thread."""

    def __init__(self, api: Api, path: str, on_event: Callable[[str, dict[str, Any], float], None]):
        super().__init__(daemon=True)
        self.api, self.path, self.on_event = api, path, on_event
        self.ready = threading.Event()
        self.stopped = False
        self.conn: http.client.HTTPSConnection | None = None

    def run(self) -> None:
        rv = ""
        while not self.stopped:
            try:
                if not rv:
                    listing = self.api.request("GET", self.path)
                    now = time.monotonic()
                    for item in listing.get("items") or []:
                        self.on_event("ADDED", item, now)
                    rv = listing["metadata"]["resourceVersion"]
                sep = "&" if "?" in self.path else "?"
                self.conn = self.api.connection(timeout=3600)
                self.conn.request("GET", f"{self.path}{sep}watch=1&resourceVersion={rv}&timeoutSeconds=1800"
                                  "&allowWatchBookmarks=true", headers={"User-Agent": BENCH_UA})
                resp = self.conn.getresponse()
                if resp.status != 200:
                    rv = ""
                    time.sleep(0.5)
                    continue
                self.ready.set()
                while not self.stopped:
                    line = resp.readline()
                    if not line:
                        break
                    now = time.monotonic()
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    if ev.get("type") == "ERROR":
                        rv = ""
                        break
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if ev.get("type") != "BOOKMARK":
                        self.on_event(ev["type"], obj, now)
            except (OSError, http.client.HTTPException, ValueError):
                if self.stopped:
                    return
                time.sleep(0.5)

    def stop(self) -> None:
        self.stopped = True
        if self.conn is not None:
            try:
                self.conn.sock and self.conn.sock.shutdown(2)  # type: ignore[func-returns-value]
            except OSError:
                pass



class Kubectl:
    """kubectl against one cluster: for manifests applied as files, as users apply them."""

    def __init__(self, kubeconfig: str, bin_dir: Path):
        self.base = [str(bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}"]

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        out = subprocess.run([*self.base, *args], input=input, capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self("get", *args, "-o", "json"))

    def apply(self, *objects: dict[str, Any]) -> None:
        self("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    def apply_crd(self, path: Path, name: str) -> None:
        """Applies a CRD and waits until the API server serves it."""
        self("apply", "--server-side", "-f", str(path))
        wait(lambda: self("wait", "--for=condition=Established", "--timeout=10s", f"crd/{name}", check=False),
             60, f"CRD {name} established")


class AuditedControlPlane:
    """ltj_localcluster's ControlPlane, with the API server writing an audit log (request counting)."""

    def __init__(self, run_dir: Path, bin_dir: Path):
        from ltj_localcluster.controlplane import ControlPlane

        self.run_dir = run_dir
        self.audit_log = run_dir / "audit.log"
        policy = run_dir / "audit-policy.yaml"
        run_dir.mkdir(parents=True, exist_ok=True)
        policy.write_text(AUDIT_POLICY)
        extra = [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
                 "--audit-log-maxbackup=0"]

        class _CP(ControlPlane):
            def _spawn(self, name: str, args: list[str]) -> None:
                super()._spawn(name, [*args, *extra] if name == "kube-apiserver" else args)

        self.cp = _CP(run_dir, bin_dir)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


class Cluster:
    def __init__(self, work: Path, bin_dir: Path, log: Callable[[str], None], kueue: bool = False):
        self.work = work
        self.bin_dir = bin_dir
        self.log = log
        self.kueue = kueue
        self.cp = AuditedControlPlane(work / "cp", bin_dir)
        self.info: Any = None
        self.api: Api | None = None
        self.kubectl: Kubectl | None = None
        self._audit_pos = 0
        self._audit_lines: list[tuple[float, bytes]] = []

    def up(self) -> None:
        t = time.monotonic()
        self.info = self.cp.cp.start()
        self.ctx = ssl.create_default_context(cafile=str(Path(self.info.pki_dir) / "ca.crt"))
        user = yaml.safe_load(Path(self.info.kubeconfig).read_text())["users"][0]["user"]
        self.ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        self.api = Api(self.info.server, self.ctx)
        self.kubectl = Kubectl(self.info.kubeconfig, self.bin_dir)
        from ltj_localcluster.cluster import NodePool
        from ltj_localcluster.kwok import KwokNodes

        # Two nodes with more CPU and memory than the pods ask for and room for every pod of the scale
        # section (finished pods stay: cleanPodPolicy None). kwok records its process in the run dir's
        # pids.json: cpu() counts it (as "kwok"), down() stops it.
        KwokNodes(self.info, NodePool(nodes=2, cpu="1000", memory="4Ti", gpus=0, pods=2000)).start(timeout=120)
        if self.kueue:
            from ltj_localcluster.cluster import kueue_dir
            from ltj_localcluster.kueue import Kueue

            # Recorded in the run dir's pids.json like kwok: cpu() counts it (as "kueue"), down() stops it.
            Kueue(self.info, kueue_dir(self.bin_dir)).start()
        self.log(f"control plane + kwok nodes up in {time.monotonic() - t:.0f}s")

    def cpu(self, extra: Mapping[str, int] | None = None) -> dict[str, float]:
        """CPU seconds so far of each cluster process (and of `extra`: name -> pid), by name."""
        import psutil

        pids = {**json.loads((Path(self.info.run_dir) / "pids.json").read_text()), **(extra or {})}
        used = {}
        for name, pid in pids.items():
            try:
                used[name] = cpu_seconds(pid)
            except psutil.NoSuchProcess:
                continue
        return used

    def down(self) -> None:
        from ltj_localcluster.cluster import down

        down(self.cp.run_dir)

    def namespace(self, ns: str, objects: Sequence[Mapping[str, Any]] = ()) -> None:
        """A fresh namespace with the claim the ltj jobs name, and ``objects`` (a system's)."""
        assert self.api is not None
        self.api.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                        "metadata": {"name": ns}})
        # The claim the ltj jobs name (the scheduler waits for it to be bound). No provisioner runs beside
        # kwok: a static volume of its own, which nothing mounts, of no class (so no default class
        # applies). Its claimRef names the claim's uid, as a provisioner's does: the volume controller
        # then binds the claim on the volume's first sync (without the uid, only on its 15 s resync).
        # Retained when the claim goes, and deleted with the namespace.
        claim = self.api.request("POST", f"/api/v1/namespaces/{ns}/persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": OUTPUT_CLAIM},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": ""}})
        self.api.request("POST", "/api/v1/persistentvolumes", {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume_name(ns)},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                     "persistentVolumeReclaimPolicy": "Retain",
                     "hostPath": {"path": str(Path(self.info.run_dir) / "volumes" / ns)},
                     "claimRef": {"namespace": ns, "name": OUTPUT_CLAIM, "uid": claim["metadata"]["uid"]}}})
        wait(lambda: (self.api.request("GET", f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{OUTPUT_CLAIM}")
                      .get("status") or {}).get("phase") == "Bound", 60, f"claim {ns}/{OUTPUT_CLAIM} bound")
        # ServiceAccount admission needs the namespace's default ServiceAccount.
        wait(lambda: self.api.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default", ok=(404,)),
             60, f"the default ServiceAccount of {ns}")
        if objects:
            assert self.kubectl is not None
            self.kubectl.apply(*objects)

    def delete_namespace(self, ns: str, timeout: float = 300) -> float:
        assert self.api is not None
        t = time.monotonic()
        # Pods first, without grace (nothing runs): the namespace controller would otherwise wait
        # out their grace period before it looks again.
        self.api.request("DELETE", f"/api/v1/namespaces/{ns}/pods?gracePeriodSeconds=0", ok=(404,))
        self.api.request("DELETE", f"/api/v1/namespaces/{ns}", ok=(404,))
        wait(lambda: self.api.request("GET", f"/api/v1/namespaces/{ns}", ok=(404,)) is None, timeout,
             f"namespace {ns} gone", interval=0.5)
        # Its claim went with it; the volume (Released, retained) would stay. Its protection finalizer
        # lets it go once the volume controller has seen the claim gone: nothing waits for that.
        self.api.request("DELETE", f"/api/v1/persistentvolumes/{volume_name(ns)}", ok=(404,))
        return time.monotonic() - t

    def audit(self, agents: Mapping[str, Sequence[str]], start: float, end: float) -> dict[str, dict[str, int]]:
        """Requests per system in [start, end] (wall clock); reads only what was appended since the last call."""
        time.sleep(0.3)  # let the API server finish writing the window's last entries
        with open(self.cp.audit_log, "rb") as f:
            f.seek(self._audit_pos)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self._audit_pos += cut
        self._audit_lines.extend((_line_time(ln), ln) for ln in data[:cut].splitlines())
        self._audit_lines = [(t, ln) for t, ln in self._audit_lines if t >= time.time() - 900]
        return audit_counts((ln for t, ln in self._audit_lines if start - 1 <= t <= end + 1), agents, start, end)

    def quiesce(self, agents: Sequence[str], quiet: float, timeout: float) -> float:
        """Waits until the system has written nothing for `quiet` seconds; returns the time waited."""
        t = time.monotonic()
        while time.monotonic() - t < timeout:
            now = time.time()
            counts = self.audit({"x": agents}, now - quiet, now)["x"]
            if not any(k.split()[0] in WRITE_VERBS for k in counts):
                break
            time.sleep(1.0)
        return time.monotonic() - t



def volume_name(ns: str) -> str:
    """The static volume that binds namespace `ns`'s OUTPUT_CLAIM."""
    return f"{OUTPUT_CLAIM}-{ns}"


