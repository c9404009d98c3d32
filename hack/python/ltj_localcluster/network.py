"""Pod network sandboxes: a network namespace per pod, a veth into the cluster bridge, an IP.

Names derive from the bridge and the pod UID, so an agent can find (and remove) what an earlier
instance of itself left behind for the same bridge.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


class NetworkError(RuntimeError):
    pass


@dataclass(frozen=True)
class Sandbox:
    uid: str
    netns: str
    netns_path: str
    ip: str
    host_veth: str


class IpPool:
    """Hands out host addresses of the subnet round-robin (recently freed ones are reused last)."""

    def __init__(self, subnet: str, reserved: tuple[str, ...]) -> None:
        net = ipaddress.ip_network(subnet, strict=False)
        self._all = [str(h) for h in net.hosts() if str(h) not in reserved]
        self._used: dict[str, str] = {}
        self._next = 0
        self.prefixlen = net.prefixlen

    def allocate(self, owner: str, prefer: str | None = None) -> str:
        """A free address for owner (the same one again for the same owner; `prefer` if free)."""
        for ip, who in self._used.items():
            if who == owner:
                return ip
        if prefer in self._all and prefer not in self._used:
            self._used[prefer] = owner
            return prefer
        for i in range(len(self._all)):
            ip = self._all[(self._next + i) % len(self._all)]
            if ip not in self._used:
                self._used[ip] = owner
                self._next = (self._next + i + 1) % len(self._all)
                return ip
        raise NetworkError(f"no free pod IP left in the subnet ({len(self._all)} addresses in use)")

    def release(self, ip: str) -> None:
        self._used.pop(ip, None)

    def in_use(self) -> dict[str, str]:
        return dict(self._used)


def _short(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:11]


async def run_ip(*args: str, check: bool = True, stdin: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        "ip",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if check and proc.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {err.decode().strip() or proc.returncode}")
    return out.decode()


class PodNetwork:
    def __init__(self, bridge: str, bridge_ip: str, subnet: str) -> None:
        self.bridge = bridge
        self.bridge_ip = bridge_ip
        self.subnet = subnet
        self.pool = IpPool(subnet, reserved=(bridge_ip,))
        self.prefix = f"{bridge}-"
        self._sandboxes: dict[str, Sandbox] = {}
        self._lock = asyncio.Lock()

    def names(self, uid: str) -> tuple[str, str, str]:
        h = _short(self.bridge, uid)
        return f"{self.prefix}{uid}", f"lv{h}", f"lp{h}"

    async def check(self) -> None:
        out = await run_ip("-o", "addr", "show", "dev", self.bridge)
        if self.bridge_ip not in out:
            raise NetworkError(f"bridge {self.bridge} has no address {self.bridge_ip} (ip addr: {out.strip()!r})")

    async def setup(self, uid: str, prefer_ip: str | None = None) -> Sandbox:
        async with self._lock:
            if uid in self._sandboxes:
                return self._sandboxes[uid]
            netns, host_veth, peer = self.names(uid)
            ip = self.pool.allocate(uid, prefer_ip)
            try:
                await self._teardown_names(netns, host_veth)
                await run_ip("netns", "add", netns)
                await run_ip(
                    "-batch",
                    "-",
                    stdin="\n".join(
                        [
                            f"link add {host_veth} type veth peer name {peer}",
                            f"link set {peer} netns {netns}",
                            f"link set {host_veth} master {self.bridge}",
                            f"link set {host_veth} up",
                        ]
                    )
                    + "\n",
                )
                await run_ip(
                    "-n",
                    netns,
                    "-batch",
                    "-",
                    stdin="\n".join(
                        [
                            f"link set {peer} name eth0",
                            f"addr add {ip}/{self.pool.prefixlen} dev eth0",
                            "link set eth0 up",
                            "link set lo up",
                            f"route add default via {self.bridge_ip}",
                        ]
                    )
                    + "\n",
                )
            except Exception:
                self.pool.release(ip)
                await self._teardown_names(netns, host_veth)
                raise
            sandbox = Sandbox(uid, netns, f"/var/run/netns/{netns}", ip, host_veth)
            self._sandboxes[uid] = sandbox
            log.debug("sandbox for pod %s: netns %s ip %s", uid, netns, ip)
            return sandbox

    async def _teardown_names(self, netns: str, host_veth: str) -> None:
        await run_ip("link", "del", host_veth, check=False)
        await run_ip("netns", "del", netns, check=False)

    async def teardown(self, uid: str) -> None:
        async with self._lock:
            sandbox = self._sandboxes.pop(uid, None)
            netns, host_veth, _ = self.names(uid)
            await self._teardown_names(netns, host_veth)
            if sandbox is not None:
                self.pool.release(sandbox.ip)

    async def cleanup_stale(self) -> list[str]:
        """Remove namespaces (and so their veths) of this bridge that no live sandbox owns."""
        out = await run_ip("netns", "list", check=False)
        removed = []
        owned = {s.netns for s in self._sandboxes.values()}
        for line in out.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(self.prefix) and name not in owned:
                uid = name[len(self.prefix) :]
                await self._teardown_names(name, self.names(uid)[1])
                removed.append(name)
        return removed

    async def teardown_all(self) -> None:
        for uid in list(self._sandboxes):
            await self.teardown(uid)


def remove_pod_namespaces(bridge: str) -> list[str]:
    """Synchronously delete the pod network namespaces of a bridge (for a cluster's `down`,
    in case its agent died without cleaning up). Their veths go with them."""
    import subprocess

    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    removed = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(f"{bridge}-"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            removed.append(name)
    return removed
