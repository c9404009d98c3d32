"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler as local processes, with generated certificates and an admin kubeconfig.

Each cluster claims a Linux bridge of its own (created here, so the API server's certificate can
name its address): a real node's kubelet, CoreDNS and, for routable clusters, the API server listen
on that address, where the node's pods reach them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

from . import pki as pkimod

log = logging.getLogger(__name__)

SERVICE_CIDR = "10.0.0.0/24"
POD_NET_PREFIX = "10.250"  # cluster k gets 10.250.<k>.0/24 on bridge ltjbr<k>
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


@dataclass(frozen=True)
class ClusterInfo:
    """What clients of a running cluster need; written to <run>/cluster.json."""

    kubeconfig: str
    server: str
    api_host: str
    api_port: int
    bridge: str
    bridge_ip: str
    subnet: str
    pki_dir: str
    run_dir: str = ""
    bin_dir: str = ""

    @classmethod
    def from_dict(cls, raw: Any, source: str = "cluster.json") -> "ClusterInfo":
        """Validated: a missing or mistyped entry is a ValueError naming it."""
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: must be a JSON object")
        values: dict[str, Any] = {}
        for f in fields(cls):
            typ = int if f.type in ("int", int) else str
            if f.name not in raw:
                if f.default is MISSING:
                    raise ValueError(f"{source}: {f.name}: required")
                continue
            value = raw[f.name]
            if isinstance(value, bool) or not isinstance(value, typ):
                raise ValueError(f"{source}: {f.name}: must be {typ.__name__}, got {value!r}")
            values[f.name] = value
        return cls(**values)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> "ClusterInfo":
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc
        return cls.from_dict(raw, str(path))

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> "ClusterInfo":
        return cls.read(Path(run_dir) / "cluster.json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def create_bridge() -> tuple[str, str, str]:
    """Claims the first free ltjbr<k> / 10.250.<k>.0/24 and brings it up: (bridge, host ip, subnet)."""
    if os.geteuid() != 0:
        raise RuntimeError("the local cluster needs root (network namespaces and bridges for pods)")
    used = _ip("-o", "-4", "addr").stdout
    for k in range(1, 255):
        name, host_ip = f"ltjbr{k}", f"{POD_NET_PREFIX}.{k}.1"
        if f" {POD_NET_PREFIX}.{k}." in used:
            continue
        if _ip("link", "add", name, "type", "bridge", check=False).returncode != 0:
            continue  # another cluster holds it: creation is the lock
        _ip("addr", "add", f"{host_ip}/24", "dev", name)
        _ip("link", "set", name, "up")
        return name, host_ip, f"{POD_NET_PREFIX}.{k}.0/24"
    raise RuntimeError("no free ltjbr<k> bridge / 10.250.<k>.0/24 subnet left")


def delete_bridge(name: str) -> None:
    _ip("link", "del", name, check=False)


def kubeconfig_yaml(server: str, ca: Path, crt: Path, key: Path, namespace: str = "default") -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
- name: ltj-local
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {crt}
    client-key: {key}
contexts:
- name: ltj-local
  context: {{cluster: ltj-local, user: admin, namespace: {namespace}}}
current-context: ltj-local
"""


class ControlPlane:
    """Starts and stops the control plane processes of one cluster in ``run_dir``."""

    def __init__(self, run_dir: str | os.PathLike[str], bin_dir: str | os.PathLike[str], routable: bool = False):
        """``routable``: the API server listens on the bridge address instead of loopback and publishes
        it as the `kubernetes` Service's endpoint, so pods on a real node reach it."""
        self.run_dir = Path(run_dir).resolve()
        self.bin_dir = Path(bin_dir).resolve()
        self.routable = routable
        self.logs = self.run_dir / "logs"
        self._procs: dict[str, subprocess.Popen] = {}

    # -- processes -------------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen([str(self.bin_dir / name), *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        self._procs[name] = proc
        record_pid(self.run_dir, name, proc.pid)

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def _wait(self, what: str, probe, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                if probe():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {timeout:.0f}s (logs in {self.logs})")
            time.sleep(0.25)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> ClusterInfo:
        t0 = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        bridge, bridge_ip, subnet = create_bridge()
        try:
            return self._start(bridge, bridge_ip, subnet, timeout, t0)
        except BaseException:
            self.stop()
            delete_bridge(bridge)
            raise

    def _start(self, bridge: str, bridge_ip: str, subnet: str, timeout: float, t0: float) -> ClusterInfo:
        pki = pkimod.create(self.run_dir / "pki", extra_sans=(bridge_ip,))
        etcd_port, etcd_peer, api_port, kcm_port, sched_port = (free_port() for _ in range(5))
        api_host = bridge_ip if self.routable else "127.0.0.1"
        server = f"https://{api_host}:{api_port}"
        kubeconfig = self.run_dir / "admin.kubeconfig"
        kubeconfig.write_text(kubeconfig_yaml(server, pki.ca_crt, pki.crt("admin"), pki.key("admin")))
        info = ClusterInfo(run_dir=str(self.run_dir), bin_dir=str(self.bin_dir), kubeconfig=str(kubeconfig),
                           server=server, api_host=api_host, api_port=api_port, bridge=bridge,
                           bridge_ip=bridge_ip, subnet=subnet, pki_dir=str(pki.dir))
        (self.run_dir / "cluster.json").write_text(json.dumps(asdict(info), indent=2))

        # Every start is a new cluster: its certificates and keys are new, so nothing stored under the
        # old ones is kept (a reused run dir would otherwise carry objects over).
        shutil.rmtree(self.run_dir / "etcd", ignore_errors=True)
        self._spawn("etcd", [
            f"--data-dir={self.run_dir / 'etcd'}", "--name=default",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync=true", "--log-level=warn", "--quota-backend-bytes=4294967296",
        ])
        self._wait("etcd", lambda: http_ok(f"http://127.0.0.1:{etcd_port}/health"), 30)

        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--bind-address={api_host}", f"--advertise-address={api_host}", f"--secure-port={api_port}",
            f"--cert-dir={pki.dir}", f"--tls-cert-file={pki.crt('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}", f"--client-ca-file={pki.ca_crt}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=Node,RBAC",
            # As on OpenShift: setting blockOwnerDeletion (every child of a job does) takes the right to
            # update the owner's finalizers, so the chart's RBAC is tested against it. Everything else
            # here that sets it runs with admin credentials.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            "--allow-privileged=true", "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={pki.crt('admin')}", f"--kubelet-client-key={pki.key('admin')}",
            "--profiling=false", "--event-ttl=1h",
            f"--endpoint-reconciler-type={'lease' if self.routable else 'none'}",
        ])
        ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
        ctx.load_cert_chain(str(pki.crt("admin")), str(pki.key("admin")))
        self._wait("kube-apiserver", lambda: http_ok(f"{server}/readyz", ctx), 90)

        common = [f"--kubeconfig={kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1",
                  "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics"]
        self._spawn("kube-controller-manager", [
            *common, f"--secure-port={kcm_port}", f"--root-ca-file={pki.ca_crt}",
            f"--service-account-private-key-file={pki.sa_key}", "--use-service-account-credentials=false",
            f"--cluster-signing-cert-file={pki.ca_crt}", f"--cluster-signing-key-file={pki.ca_key}",
            "--controllers=*", "--concurrent-gc-syncs=5",
        ])
        self._spawn("kube-scheduler", [*common, f"--secure-port={sched_port}"])
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        for name, port in (("kube-controller-manager", kcm_port), ("kube-scheduler", sched_port)):
            self._wait(name, lambda p=port: http_ok(f"https://127.0.0.1:{p}/healthz", insecure), 60)
        # The token and root-CA publisher controllers make namespaces usable for pods.
        self._wait("default ServiceAccount", lambda: http_ok(
            f"{server}/api/v1/namespaces/default/serviceaccounts/default", ctx), 60)
        self._wait("kube-root-ca.crt", lambda: http_ok(
            f"{server}/api/v1/namespaces/default/configmaps/kube-root-ca.crt", ctx), 60)
        log.info("control plane ready at %s in %.1fs", server, time.monotonic() - t0)
        return info

    def stop(self, grace: float = 10) -> None:
        stop_pids(self.run_dir, {n: p.pid for n, p in self._procs.items()}, grace)
        self._procs.clear()


def http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    """Whether ``url`` answers 200 now (refused, unreachable or any error status: False)."""
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return r.status == 200
    except OSError:  # URLError and HTTPError included
        return False


def wait_ready(proc: subprocess.Popen, what: str, ready: Callable[[], Any], log_file: Path, timeout: float) -> None:
    """Polls ``ready()`` until it holds; fails with the tail of ``log_file`` should ``proc`` exit first,
    or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s (log {log_file})")
        time.sleep(0.2)


def read_pids(run_dir: Path) -> dict[str, int]:
    """The cluster's processes in start order (``<run dir>/pids.json``)."""
    try:
        return json.loads((run_dir / "pids.json").read_text())
    except FileNotFoundError:
        return {}


def record_pid(run_dir: Path, name: str, pid: int) -> None:
    pids = read_pids(run_dir)
    pids[name] = pid
    (run_dir / "pids.json").write_text(json.dumps(pids))


def stop_pids(run_dir: Path, pids: dict[str, int] | None = None, grace: float = 10) -> None:
    """Stops ``pids`` (default: every recorded process) newest first (SIGTERM, then SIGKILL after
    ``grace``) and forgets them."""
    recorded = read_pids(run_dir)
    if pids is None:
        pids = recorded
    for name in reversed(list(pids)):
        _terminate(pids[name], grace)
    left = {n: p for n, p in recorded.items() if n not in pids}
    if left:
        (run_dir / "pids.json").write_text(json.dumps(left))
    else:
        (run_dir / "pids.json").unlink(missing_ok=True)


def _terminate(pid: int, grace: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return
        except ChildProcessError:  # not our child: poll for existence instead
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
