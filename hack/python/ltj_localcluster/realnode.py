"""One real Kubernetes node beside the local control plane: Debian's containerd + runc + CNI plugins,
a kubelet and kube-proxy built from the control plane's k8s.io/kubernetes module, CoreDNS as the
cluster DNS (Service kube-system/kube-dns) and Rancher's local-path-provisioner for claims.

Host facts that shape it (../shared/notes/realnode.md has the evidence):
- containerd and the kubelet share one private mount namespace, entered through containerd's pid:
  the kubelet would otherwise raise host sysctls (kernel.panic, ...), which are bind-mounted over
  in that namespace, and the pods' projected tokens must be mounted where runc sees them;
- cgroup v1 without systemd (cgroupfs), and root without CAP_SYS_RESOURCE (no OOM score changes);
- the node IP is the cluster bridge's address (the kubelet refuses loopback), where the API server
  also listens so pods reach it through the `kubernetes` Service.
The kubelet, containerd and the pod log directories have fixed host paths, so one real node runs per
machine: ``NODE_LOCK`` names the run directory that holds it.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from . import hostpkgs, imagebuild
from . import pki as pkimod
from .controlplane import ClusterInfo, free_port, http_ok, read_pids, record_pid, stop_pids

log = logging.getLogger(__name__)

NODE_NAME = "ltj-node"
POD_CIDR = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
CNI_BRIDGE = "ltjcni0"
CNI_NETWORK = "ltj-pods"
CLUSTER_DNS_IP = "10.0.0.10"  # inside controlplane.SERVICE_CIDR
CLUSTER_DOMAIN = "cluster.local"
STORAGE_CLASS = "ltj-local"  # the samples' class: ReadWriteMany on this one-node shared filesystem
STORAGE_NAMESPACE = "local-path-storage"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
CONTAINERD_SOCK = imagebuild.CONTAINERD_SOCK
NODE_LOCK = Path("/run/ltj-realnode")
# Fixed host paths of containerd and the kubelet; `down` removes them (nothing else uses them here).
HOST_STATE_DIRS = ("/var/lib/containerd", "/run/containerd", "/var/lib/kubelet", "/var/log/pods",
                   "/var/log/containers")
# What the kubelet writes to /proc/sys at start (kubelet's setupKernelTunables); in the node's mount
# namespace these files are bind-mounted over, so the host keeps its own values.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10", "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000", "kernel/keys/root_maxbytes": "25000000",
}
# Debian packages by a file each provides.
PACKAGES = {"/usr/bin/containerd": "containerd", "/usr/sbin/runc": "runc", "/usr/bin/ctr": "containerd",
            f"{CNI_BIN_DIR}/bridge": "containernetworking-plugins", "/usr/sbin/iptables": "iptables",
            "/usr/sbin/conntrack": "conntrack", "/usr/bin/unshare": "util-linux", "/usr/bin/nsenter": "util-linux"}


def unavailable() -> str | None:
    """Why this machine cannot run the real node (one line), or None."""
    return hostpkgs.unavailable(PACKAGES, "the real node (containerd, kubelet, network namespaces)")


def ensure_packages() -> None:
    hostpkgs.ensure(PACKAGES)


def _run(*args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, **kw)


@dataclass(frozen=True)
class NodeConfig:
    """The files a node is started from, all under ``<run dir>/node``."""

    dir: Path

    @classmethod
    def for_run_dir(cls, run_dir: Path) -> "NodeConfig":
        return cls(run_dir / "node")

    @property
    def containerd(self) -> Path:
        return self.dir / "containerd.toml"

    @property
    def kubelet(self) -> Path:
        return self.dir / "kubelet.yaml"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubelet.kubeconfig"

    @property
    def kube_proxy(self) -> Path:
        return self.dir / "kube-proxy.yaml"

    @property
    def corefile(self) -> Path:
        return self.dir / "Corefile"

    @property
    def cni_conf_dir(self) -> Path:
        return self.dir / "cni"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.dir / "cni-ipam"

    @property
    def sysctl_dir(self) -> Path:
        return self.dir / "sysctl"

    @property
    def provisioner_config(self) -> Path:
        return self.dir / "local-path-config.json"

    @property
    def helper_pod(self) -> Path:
        return self.dir / "local-path-helper-pod.yaml"

    @property
    def volumes(self) -> Path:
        return self.dir / "volumes"

    @property
    def host_state(self) -> Path:
        return self.dir / "host-state.json"


def containerd_toml(sandbox_image: str, cfg: NodeConfig) -> str:
    return f"""version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "{CONTAINERD_SOCK}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # runc cannot lower oom_score_adj without CAP_SYS_RESOURCE, which root lacks here.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cfg.cni_conf_dir}"
    max_conf_num = 1
"""


def cni_conflist(cfg: NodeConfig) -> dict[str, Any]:
    # containerd sets up `lo` itself (the loopback plugin from bin_dir); it is not listed here.
    return {"cniVersion": "1.0.0", "name": CNI_NETWORK, "plugins": [
        {"type": "bridge", "bridge": CNI_BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(cfg.cni_ipam_dir)}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ]}


def kubelet_config(info: ClusterInfo, pki: pkimod.Pki) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": info.bridge_ip, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "tlsCertFile": str(pki.crt("kubelet")), "tlsPrivateKeyFile": str(pki.key("kubelet")),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki.ca_crt)}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCK}",
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
        # No KUBE-FIREWALL / canary chains on the host: kube-proxy owns the node's service rules.
        "makeIPTablesUtilChains": False,
        "oomScoreAdj": 0,
        "resolvConf": "/etc/resolv.conf", "clusterDomain": CLUSTER_DOMAIN, "clusterDNS": [CLUSTER_DNS_IP],
        "rotateCertificates": False, "serverTLSBootstrap": False, "serializeImagePulls": False,
        # Images are loaded into containerd, never pulled: GC must not drop them while the disk is fine.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
    }


def kube_proxy_config(kubeconfig: str, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig}, "hostnameOverride": NODE_NAME, "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}", "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # Zero leaves the host's conntrack sysctls as they are; route_localnet stays off.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},
    }


def corefile(info: ClusterInfo, ready_port: int, health_port: int) -> str:
    return f""".:53 {{
    bind {info.bridge_ip}
    errors
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {info.kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 30
    loop
}}
"""


def addons(info: ClusterInfo) -> list[dict[str, Any]]:
    """The cluster objects the node's host processes serve: the kube-dns Service (CoreDNS listens on
    the bridge address, behind a selector-less Service as a real cluster's DNS is behind its pods), and
    the provisioner's namespace, account, scripts and default StorageClass."""
    lp_scripts = {
        "setup": "#!/bin/sh\nset -eu\nmkdir -m 0777 -p \"$VOL_DIR\"\n",
        "teardown": "#!/bin/sh\nset -eu\nrm -rf \"$VOL_DIR\"\n",
    }
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {
            "name": "kube-dns", "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
         "spec": {"clusterIP": CLUSTER_DNS_IP, "ports": [
             {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {
            "name": "kube-dns-host", "namespace": "kube-system",
            "labels": {"kubernetes.io/service-name": "kube-dns",
                       "endpointslice.kubernetes.io/managed-by": "ltj-localcluster"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": [info.bridge_ip], "conditions": {"ready": True}, "nodeName": NODE_NAME}],
         "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": STORAGE_NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "local-path-provisioner-service-account", "namespace": STORAGE_NAMESPACE},
         "automountServiceAccountToken": False},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "local-path-config", "namespace": STORAGE_NAMESPACE},
         "data": lp_scripts},
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {
            "name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
         "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"},
    ]


def helper_pod(image: str) -> dict[str, Any]:
    """local-path-provisioner's helper pod template: it creates and removes volume directories on the
    host, so it runs as root (any image with /bin/sh does; ours are loaded, never pulled)."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "helper-pod"}, "spec": {
        "priorityClassName": "system-node-critical",
        "containers": [{"name": "helper-pod", "image": image, "imagePullPolicy": "Never",
                        "securityContext": {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False}}]}}


class RealNode:
    """Starts the node's processes for the control plane described by ``info``."""

    def __init__(self, info: ClusterInfo, bin_dir: Path, gpus: int = 0) -> None:
        self.info = info
        self.run_dir = Path(info.run_dir)
        self.bin_dir = Path(bin_dir)
        self.gpus = gpus
        self.cfg = NodeConfig.for_run_dir(self.run_dir)
        self.logs = self.run_dir / "logs"

    # -- helpers -----------------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return _run(str(self.bin_dir / "kubectl"), f"--kubeconfig={self.info.kubeconfig}", *args,
                    input=input, check=check)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        record_pid(self.run_dir, name, proc.pid)
        return proc

    def _wait(self, what: str, probe: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None,
              log_name: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            if proc is not None and proc.poll() is not None:
                tail = (self.logs / f"{log_name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{log_name} exited with {proc.returncode} before {what}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {timeout:.0f}s (logs in {self.logs})")
            time.sleep(0.2)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, images: dict[str, imagebuild.Image]) -> None:
        """Starts the node with ``images`` (at least "pause" and "operator") loaded into containerd."""
        t0 = time.monotonic()
        _claim_lock(self.run_dir, self.bin_dir)
        self.cfg.dir.mkdir(parents=True, exist_ok=True)
        pki = pkimod.Pki(Path(self.info.pki_dir))
        pkimod.issue_client(pki, "node", f"system:node:{NODE_NAME}", orgs=("system:nodes",))
        self._write_configs(pki, images)
        ip_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        self.cfg.host_state.write_text(json.dumps({"ip_forward": ip_forward}))

        containerd = self._start_containerd()
        imagebuild.load_into_containerd(images)
        kubelet = self._spawn("kubelet", [
            "nsenter", "-t", str(containerd.pid), "-m", "--", str(self.bin_dir / "kubelet"),
            f"--config={self.cfg.kubelet}", f"--kubeconfig={self.cfg.kubeconfig}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={self.info.bridge_ip}", "--v=1"])
        self._wait("node Ready", self._node_ready, 120, kubelet, "kubelet")
        if self.gpus:
            # The kubelet copies status capacity into allocatable and keeps it across restarts.
            self.kubectl("patch", "node", NODE_NAME, "--subresource=status", "--type=json", "-p", json.dumps(
                [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": str(self.gpus)}]))
        self.kubectl("apply", "--server-side", "--field-manager=ltj-localcluster", "-f", "-",
                     input=yaml.safe_dump_all(addons(self.info)))

        proxy_health, proxy_metrics, dns_ready, dns_health = (free_port() for _ in range(4))
        self.cfg.kube_proxy.write_text(yaml.safe_dump(kube_proxy_config(self.info.kubeconfig, proxy_health,
                                                                         proxy_metrics)))
        proxy = self._spawn("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={self.cfg.kube_proxy}"])
        self._wait("kube-proxy", lambda: http_ok(f"http://127.0.0.1:{proxy_health}/healthz"), 60, proxy, "kube-proxy")
        self.cfg.corefile.write_text(corefile(self.info, dns_ready, dns_health))
        dns = self._spawn("coredns", [str(self.bin_dir / "coredns"), "-conf", str(self.cfg.corefile)])
        self._wait("CoreDNS", lambda: http_ok(f"http://127.0.0.1:{dns_ready}/ready"), 60, dns, "coredns")
        provisioner = self._spawn("local-path-provisioner", [
            str(self.bin_dir / "local-path-provisioner"), "start", f"--kubeconfig={self.info.kubeconfig}",
            f"--config={self.cfg.provisioner_config}", f"--namespace={STORAGE_NAMESPACE}",
            f"--helper-pod-file={self.cfg.helper_pod}", "--provisioner-name=rancher.io/local-path",
            "--service-account-name=local-path-provisioner-service-account",
            "--configmap-name=local-path-config"])
        self._wait("local-path-provisioner", lambda: "Started provisioner controller" in (
            self.logs / "local-path-provisioner.log").read_text(errors="replace"), 60, provisioner,
            "local-path-provisioner")
        log.info("real node %s ready in %.1fs", NODE_NAME, time.monotonic() - t0)

    def _write_configs(self, pki: pkimod.Pki, images: dict[str, imagebuild.Image]) -> None:
        cfg = self.cfg
        cfg.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        cfg.volumes.mkdir(parents=True, exist_ok=True)
        cfg.containerd.write_text(containerd_toml(images["pause"].ref, cfg))
        (cfg.cni_conf_dir / "10-ltj.conflist").write_text(json.dumps(cni_conflist(cfg), indent=2))
        cfg.kubelet.write_text(yaml.safe_dump(kubelet_config(self.info, pki)))
        kc = yaml.safe_load(Path(self.info.kubeconfig).read_text())
        kc["users"] = [{"name": "node", "user": {"client-certificate": str(pki.crt("node")),
                                                  "client-key": str(pki.key("node"))}}]
        kc["contexts"][0]["context"]["user"] = "node"
        cfg.kubeconfig.write_text(yaml.safe_dump(kc))
        # One shared directory: volumes are ReadWriteMany on this single node, as on an NFS share.
        cfg.provisioner_config.write_text(json.dumps({"sharedFileSystemPath": str(cfg.volumes)}))
        cfg.helper_pod.write_text(yaml.safe_dump(helper_pod(images["operator"].ref)))
        cfg.sysctl_dir.mkdir(exist_ok=True)
        for key, value in KUBELET_SYSCTLS.items():
            (cfg.sysctl_dir / key.replace("/", ".")).write_text(value + "\n")

    def _start_containerd(self) -> subprocess.Popen:
        binds = "".join(f'mount --bind "{self.cfg.sysctl_dir / k.replace("/", ".")}" /proc/sys/{k}\n'
                        for k in KUBELET_SYSCTLS)
        script = f"set -e\n{binds}exec containerd --config '{self.cfg.containerd}'\n"
        proc = self._spawn("containerd", ["unshare", "--mount", "--propagation", "private", "--",
                                          "bash", "-c", script])
        self._wait("containerd", lambda: _run("ctr", "-a", CONTAINERD_SOCK, "version", check=False).returncode == 0,
                   30, proc, "containerd")
        return proc

    def _node_ready(self) -> bool:
        out = self.kubectl("get", "node", NODE_NAME, "-o",
                           "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
        return out.returncode == 0 and out.stdout.strip() == "True"


# -- the lock: one real node per machine --------------------------------------------------------------
def _claim_lock(run_dir: Path, bin_dir: Path) -> None:
    """Takes the machine's one real node for ``run_dir``. A holder none of whose processes runs any
    more (a killed test run) left only state behind: that is cleaned up and the lock taken over."""
    for _ in range(2):
        try:
            fd = os.open(NODE_LOCK, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = Path(NODE_LOCK.read_text().strip())
            if any(_alive(pid) for pid in read_pids(holder).values()) or _processes_of(holder):
                raise RuntimeError(f"a real node already runs on this machine (run dir {holder}); stop it with "
                                   f"`python -m ltj_localcluster down --run-dir {holder}`") from None
            log.warning("cleaning up after a real node whose processes are gone (run dir %s)", holder)
            cleanup(holder, bin_dir)
            NODE_LOCK.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(run_dir))
        return


def _processes_of(run_dir: Path) -> list[int]:
    """Processes whose command line names ``run_dir``: a node whose run dir (and pid file) was deleted
    under it still runs, and its state must not be cleaned up under it."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc.name.isdigit() and int(proc.name) != os.getpid()
                    and str(run_dir).encode() in (proc / "cmdline").read_bytes()):
                found.append(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- teardown ---------------------------------------------------------------------------------------
def holds_node(run_dir: Path) -> bool:
    return NODE_LOCK.exists() and NODE_LOCK.read_text().strip() == str(run_dir)


def drain(run_dir: Path, kubectl: list[str], timeout: float = 90) -> None:
    """Removes every pod while the kubelet still runs, so each sandbox is torn down by the kubelet and
    the CNI plugins (veths, IP leases, masquerade rules). Controllers and the scheduler are stopped
    first, so nothing is recreated meanwhile."""
    pids = read_pids(run_dir)
    stop_pids(run_dir, {n: pids[n] for n in ("local-path-provisioner", "kube-scheduler",
                                             "kube-controller-manager") if n in pids}, grace=10)
    subprocess.run([*kubectl, "delete", "pods", "--all-namespaces", "--all", "--grace-period=0", "--force",
                    "--wait=false"], capture_output=True, timeout=60)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = _run("ctr", "-a", CONTAINERD_SOCK, "-n", "k8s.io", "tasks", "ls", "-q", check=False)
        if tasks.returncode != 0 or not tasks.stdout.strip():
            return
        time.sleep(0.5)
    log.warning("pods still running on the real node after %.0fs; stopping it anyway", timeout)


def cleanup(run_dir: Path, bin_dir: Path | None) -> None:
    """Removes what the node leaves on the host once its processes are gone (see the note's teardown
    table): containerd shims, kube-proxy's and the CNI plugins' rules, the pod bridge, the kubepods
    cgroups, the fixed state directories; restores ip_forward."""
    cfg = NodeConfig.for_run_dir(run_dir)
    # Shims outlive containerd by design; with containerd gone they only hold dead sandboxes.
    _run("pkill", "-KILL", "-f", f"containerd-shim-runc-v2 .*-address {CONTAINERD_SOCK}", check=False)
    if bin_dir is not None and (bin_dir / "kube-proxy").exists():
        _run(str(bin_dir / "kube-proxy"), "--cleanup", check=False)
    _remove_firewall_leftovers()
    _run("ip", "link", "del", CNI_BRIDGE, check=False)
    try:
        state = json.loads(cfg.host_state.read_text())
        Path("/proc/sys/net/ipv4/ip_forward").write_text(state["ip_forward"] + "\n")
    except (OSError, ValueError, KeyError):
        pass
    for root in Path("/sys/fs/cgroup").glob("*/kubepods"):
        for d in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True) + [root]:
            try:
                d.rmdir()
            except NotADirectoryError:
                continue  # a cgroup's control files
            except OSError as exc:
                log.warning("cgroup %s left: %s", d, exc)
    for d in HOST_STATE_DIRS:
        shutil.rmtree(d, ignore_errors=True)
    if holds_node(run_dir):
        NODE_LOCK.unlink()


def _remove_firewall_leftovers() -> None:
    """Deletes what ``kube-proxy --cleanup`` and the CNI plugins' DEL leave in the firewall: the
    KUBE-FIREWALL chain the kubelet and kube-proxy both make (and its jumps), and the nat chains the
    bridge plugin made for our pod network (ipMasq) when a sandbox went without its plugins."""
    cni_marker = f'name: "{CNI_NETWORK}"'
    for table in ("filter", "nat", "mangle"):
        chains: set[str] = set()
        for line in _run("iptables-save", "-t", table, check=False).stdout.splitlines():
            if line.startswith(":KUBE-"):
                chains.add(line[1:].split()[0])
            if not line.startswith("-A "):
                continue
            rule = shlex.split(line)[1:]
            target = rule[rule.index("-j") + 1] if "-j" in rule else ""
            if target.startswith("KUBE-") or (target.startswith("CNI-") and cni_marker in line):
                chains.add(target)
                _run("iptables", "-t", table, "-D", *rule, check=False)
        for chain in chains:
            _run("iptables", "-t", table, "-F", chain, check=False)
        for chain in chains:
            _run("iptables", "-t", table, "-X", chain, check=False)


def host_state() -> dict[str, Any]:
    """What a node changes on the host, for checking that ``down`` restored it: the node's processes,
    network links, firewall chains and rules, mounts, cgroups, state directories and ip_forward."""
    procs = sorted({Path(p).name for p in _run("ps", "-eo", "comm=", check=False).stdout.split()
                    if Path(p).name in ("containerd", "containerd-shim", "containerd-shim-runc-v2", "kubelet",
                                        "kube-proxy", "coredns", "local-path-prov", "pause", "catatonit")})
    # The pod bridge and the host ends of the pods' veths (other clusters' links are not ours).
    links = sorted(link["ifname"] for link in json.loads(_run("ip", "-j", "link", check=False).stdout or "[]")
                   if link["ifname"] == CNI_BRIDGE or link["ifname"].startswith("veth"))
    rules = sorted(line for table in ("filter", "nat", "mangle")
                   for line in _run("iptables-save", "-t", table, check=False).stdout.splitlines()
                   if line.startswith(("-A", ":")))
    mounts = sorted(m for m in (line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
                    if m.startswith((*HOST_STATE_DIRS, "/run/netns/cni-")))
    return {
        "processes": procs, "links": links, "iptables": [r.split(" [")[0] for r in rules], "mounts": mounts,
        "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")),
        "dirs": sorted(d for d in (*HOST_STATE_DIRS, str(NODE_LOCK)) if os.path.exists(d)),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
    }
