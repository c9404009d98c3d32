"""ltj-node-agent: plays the kubelet for fake nodes of the local control plane.

    ltj-node-agent --cluster-info RUN/cluster.json --state-dir DIR --nodes 2 --cpu 8 --memory 16Gi --gpus 4

Registers the nodes, keeps their leases, runs the pods the scheduler binds to them as local
processes (see pods.py), serves their logs to the API server, proxies the API into the pod
network, and provisions `ltj-local` volumes. Writes <state-dir>/agent.ready when serving.

State directory: logs/<ns>_<pod>_<uid>/<container>/<restart>.log (CRI format),
pods/<ns>/<pod>/<container>.pid (host pid of the container's main process while it runs),
volumes/<pv> (ltj-local claims), kubelet/pods/<uid>/ (emptyDirs, API-backed volumes, hosts files).

Not like a kubelet (by design, there is no container runtime here):
- security contexts, resource limits and image pulls are not enforced: containers run as root on
  the host filesystem (missing mountpoints are created there) in their own network, mount, UTS and
  PID namespaces; images only choose an entrypoint (images.py);
- probes and lifecycle hooks are not run (a running container counts as ready); no exec,
  attach or port-forward; no Events; Service env vars only for the `kubernetes` Service;
- one agent per cluster (it owns the bridge's address pool).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .controlplane import ClusterInfo
from .env import service_env_vars
from .hostsfiles import HostsRegistry
from .kubeapi import Informer, KubeApi
from .logs_server import LogIndex, LogsServer
from .network import PodNetwork
from .nodes import NodeManager, NodeShape
from .pods import AgentContext, PodManager, default_base_env
from .provisioner import Provisioner
from .proxy import TcpProxy
from .quantity import QuantityError, parse_quantity
from .simulate import SimulatedPods

log = logging.getLogger("ltj_localcluster.agent")

HOST_IP = "127.0.0.1"


@dataclass(frozen=True)
class AgentConfig:
    cluster_info: ClusterInfo
    state_dir: Path
    nodes: int
    shape: NodeShape
    node_prefix: str = "ltj-node"
    kubelet_port: int = 0
    proxy_port: int = 0
    delete_nodes_on_exit: bool = False
    default_storage_class: bool = True
    backoff_base: float = 10.0
    pass_env: tuple[str, ...] = ()
    simulate: bool = False  # pods go Running without processes (simulate.py)

    @property
    def node_names(self) -> list[str]:
        return [f"{self.node_prefix}-{i}" for i in range(self.nodes)]


def parse_args(argv: list[str] | None) -> tuple[AgentConfig, str]:
    p = argparse.ArgumentParser(prog="ltj-node-agent", description=__doc__.split("\n\n")[0])
    p.add_argument("--cluster-info", required=True, help="the control plane's cluster.json")
    p.add_argument("--state-dir", required=True, help="logs, volumes, pod files (created if missing)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--cpu", default="8")
    p.add_argument("--memory", default="16Gi")
    p.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu capacity per node")
    p.add_argument("--pods", type=int, default=110)
    p.add_argument("--node-prefix", default="ltj-node")
    p.add_argument("--kubelet-port", type=int, default=0, help="log server port (0: any free port)")
    p.add_argument("--proxy-port", type=int, default=0, help="API proxy port on the bridge IP (0: any)")
    p.add_argument("--delete-nodes-on-exit", action="store_true")
    p.add_argument("--no-default-storage-class", action="store_true", help="do not mark ltj-local as default")
    p.add_argument("--restart-backoff", type=float, default=10.0, help="base of the container restart back-off")
    p.add_argument("--pass-env", action="append", default=[], help="agent environment variable to pass to containers")
    p.add_argument("--simulate", action="store_true",
                   help="report pods Running without running them (benchmarks; see simulate.py)")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    if a.nodes < 1:
        p.error("--nodes: must be >= 1")
    if a.gpus < 0 or a.pods < 1:
        p.error("--gpus must be >= 0 and --pods >= 1")
    for flag, value in (("--cpu", a.cpu), ("--memory", a.memory)):
        try:
            if parse_quantity(value) <= 0:
                raise QuantityError("must be positive")
        except QuantityError as exc:
            p.error(f"{flag}: {exc}")
    try:
        info = ClusterInfo.read(a.cluster_info)
    except ValueError as exc:
        p.error(str(exc))
    cfg = AgentConfig(
        cluster_info=info,
        state_dir=Path(a.state_dir).resolve(),
        nodes=a.nodes,
        shape=NodeShape(cpu=a.cpu, memory=a.memory, gpus=a.gpus, pods=a.pods),
        node_prefix=a.node_prefix,
        kubelet_port=a.kubelet_port,
        proxy_port=a.proxy_port,
        delete_nodes_on_exit=a.delete_nodes_on_exit,
        default_storage_class=not a.no_default_storage_class,
        backoff_base=a.restart_backoff,
        pass_env=tuple(a.pass_env),
        simulate=a.simulate,
    )
    return cfg, a.log_level


def serving_tls(cfg: AgentConfig) -> ssl.SSLContext:
    """The log server's certificate: the control plane's kubelet.crt, else a self-signed one."""
    pki = Path(cfg.cluster_info.pki_dir)
    cert, key = pki / "kubelet.crt", pki / "kubelet.key"
    if not (cert.exists() and key.exists()):
        own = cfg.state_dir / "pki"
        own.mkdir(parents=True, exist_ok=True)
        cert, key = own / "kubelet.crt", own / "kubelet.key"
        if not cert.exists():
            san = f"IP:{HOST_IP},IP:{cfg.cluster_info.bridge_ip},DNS:localhost"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=ltj-node-agent",
                 "-keyout", str(key), "-out", str(cert), "-addext", f"subjectAltName={san}"],
                check=True, capture_output=True,
            )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def unmount_stale(state_dir: Path) -> None:
    """tmpfs mounts a crashed agent left under the state directory."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    root = str(state_dir) + "/"
    points = [line.split()[4] for line in lines if len(line.split()) > 4 and line.split()[4].startswith(root)]
    for point in sorted(points, key=len, reverse=True):
        proc = await asyncio.create_subprocess_exec("umount", "-l", point, stderr=asyncio.subprocess.DEVNULL)
        await proc.wait()


async def wait_for_api(api: KubeApi, timeout: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await api.request("GET", "/readyz", retry=False, timeout=5)
            return await api.get("/version")
        except Exception as exc:  # noqa: BLE001 - keep trying until the deadline
            if loop.time() > deadline:
                raise RuntimeError(f"API server {api.server} not ready after {timeout:.0f}s: {exc}") from exc
            await asyncio.sleep(0.5)


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.stop = asyncio.Event()

    async def run(self) -> None:
        cfg, info = self.cfg, self.cfg.cluster_info
        state = cfg.state_dir
        state.mkdir(parents=True, exist_ok=True)
        ready_file = state / "agent.ready"
        ready_file.unlink(missing_ok=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)

        api = KubeApi.from_kubeconfig(info.kubeconfig)
        network = PodNetwork(info.bridge, info.bridge_ip, info.subnet)
        proxy = TcpProxy(info.api_host, info.api_port)
        index = LogIndex(state / "logs")
        logs_server = LogsServer(index)
        tasks: list[asyncio.Task[Any]] = []
        nodes: NodeManager | None = None
        manager: PodManager | SimulatedPods | None = None
        try:
            version = await wait_for_api(api, 120)
            await network.check()
            stale = await network.cleanup_stale()
            if stale:
                log.info("removed %d stale pod network namespaces", len(stale))
            await unmount_stale(state)
            proxy_port = await proxy.start(info.bridge_ip, cfg.proxy_port)
            kubelet_port = await logs_server.start(HOST_IP, cfg.kubelet_port, serving_tls(cfg))
            log.info("API proxy on %s:%d, log server on %s:%d", info.bridge_ip, proxy_port, HOST_IP, kubelet_port)

            provisioner = Provisioner(api, state / "volumes", cfg.default_storage_class)
            await provisioner.ensure_storage_class()
            tasks.append(asyncio.create_task(provisioner.run(), name="provisioner"))

            nodes = NodeManager(
                api,
                cfg.node_names,
                cfg.shape,
                address=HOST_IP,
                kubelet_port=kubelet_port,
                kubelet_version=version.get("gitVersion", "v0.0.0"),
            )
            await nodes.register()
            tasks.append(asyncio.create_task(nodes.heartbeat_forever(), name="heartbeat"))

            base_env = default_base_env(os.path.dirname(sys.executable))
            base_env.update({k: os.environ[k] for k in cfg.pass_env if k in os.environ})
            ctx = AgentContext(
                api=api,
                network=network,
                hosts=HostsRegistry(),
                logs=index,
                state_dir=state,
                host_ip=HOST_IP,
                service_env=service_env_vars(info.bridge_ip, proxy_port),
                allocatable=cfg.shape.allocatable_decimal(),
                base_env=base_env,
                backoff_base=cfg.backoff_base,
            )
            manager = SimulatedPods(api, set(cfg.node_names), HOST_IP) if cfg.simulate else PodManager(ctx, set(cfg.node_names))
            pods = Informer(api, "/api/v1/pods", manager.on_event, {"fieldSelector": "spec.nodeName!="}, name="pods")
            tasks.append(asyncio.create_task(pods.run(), name="pods"))
            await asyncio.wait_for(pods.synced.wait(), 60)
            if not await nodes.wait_schedulable(30):
                log.warning("nodes still carry the not-ready taint; continuing")
            ready_file.write_text(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "nodes": cfg.node_names,
                        "kubelet_port": kubelet_port,
                        "api_proxy": f"{info.bridge_ip}:{proxy_port}",
                    }
                )
                + "\n"
            )
            log.info("ready: nodes %s", ", ".join(cfg.node_names))
            stop_wait = asyncio.create_task(self.stop.wait())
            done, _ = await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop_wait and task.exception() is not None:
                    log.error("background task %s failed", task.get_name(), exc_info=task.exception())
            stop_wait.cancel()
        finally:
            log.info("shutting down")
            api.retry_for = 1.0  # do not hang on an API server that is already gone
            ready_file.unlink(missing_ok=True)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            if manager is not None:
                await manager.shutdown()
            await network.teardown_all()
            with contextlib.suppress(Exception):
                await network.cleanup_stale()
            await unmount_stale(state)
            if nodes is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nodes.shutdown(delete=cfg.delete_nodes_on_exit), 10)
            await proxy.stop()
            await logs_server.stop()
            await api.close()


def main(argv: list[str] | None = None) -> int:
    cfg, level = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if os.geteuid() != 0:
        print("ltj-node-agent: must run as root (network and mount namespaces)", file=sys.stderr)
        return 2
    try:
        asyncio.run(Agent(cfg).run())
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the operator, details in the log
        log.exception("agent failed")
        print(f"ltj-node-agent: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
