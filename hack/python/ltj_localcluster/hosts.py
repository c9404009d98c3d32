"""Per-pod /etc/hosts and /etc/resolv.conf contents (pure).

There is no cluster DNS here; instead each pod's hosts file resolves every pod of its namespace
that has `hostname` and `subdomain` (what a headless Service's DNS would give) by the usual names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class HostEntry:
    ip: str
    hostname: str
    subdomain: str
    namespace: str


def pod_hostname(pod: Mapping[str, Any]) -> str:
    """spec.hostname or the pod name, truncated to 63 characters like the kubelet."""
    spec = pod.get("spec", {})
    name = spec.get("hostname") or pod.get("metadata", {}).get("name", "")
    return name[:63].rstrip("-.")


def entry_for(pod: Mapping[str, Any], ip: str) -> HostEntry:
    return HostEntry(
        ip=ip,
        hostname=pod_hostname(pod),
        subdomain=pod.get("spec", {}).get("subdomain") or "",
        namespace=pod.get("metadata", {}).get("namespace", ""),
    )


def names_for(entry: HostEntry) -> list[str]:
    """Names under which a pod with hostname+subdomain resolves, most qualified first."""
    if not entry.subdomain:
        return []
    base = f"{entry.hostname}.{entry.subdomain}"
    return [
        f"{base}.{entry.namespace}.svc.{CLUSTER_DOMAIN}",
        f"{base}.{entry.namespace}.svc",
        f"{base}.{entry.namespace}",
        base,
    ]


def render_hosts(
    me: HostEntry,
    pod_name: str,
    peers: Iterable[HostEntry],
    host_aliases: Iterable[Mapping[str, Any]] = (),
) -> str:
    lines = [
        "# Kubernetes-managed hosts file (ltj-node-agent).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    own = [*names_for(me), me.hostname]
    if pod_name and pod_name not in own:
        own.append(pod_name)
    lines.append(f"{me.ip}\t{' '.join(own)}")
    # Peers come preferred-first (e.g. the newest pod of a name); the first of a name wins.
    chosen: dict[tuple[str, str], HostEntry] = {}
    for peer in peers:
        if peer.namespace != me.namespace or not peer.subdomain or not peer.ip:
            continue
        key = (peer.subdomain, peer.hostname)
        if key == (me.subdomain, me.hostname) or key in chosen:
            continue
        chosen[key] = peer
    for key in sorted(chosen):
        lines.append(f"{chosen[key].ip}\t{' '.join(names_for(chosen[key]))}")
    aliases = list(host_aliases)
    if aliases:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        for alias in aliases:
            names = alias.get("hostnames") or []
            if alias.get("ip") and names:
                lines.append(f"{alias['ip']}\t{chr(9).join(names)}")
    return "\n".join(lines) + "\n"


def render_resolv_conf(namespace: str, dns_config: Mapping[str, Any] | None = None) -> str:
    """No DNS server exists; the hosts file answers first, so lookups of unknown names fail fast."""
    searches = [f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
    nameservers = ["127.0.0.1"]
    options = ["ndots:5", "timeout:1", "attempts:1"]
    if dns_config:
        searches += list(dns_config.get("searches") or [])
        nameservers = list(dns_config.get("nameservers") or []) or nameservers
        for opt in dns_config.get("options") or []:
            value = opt.get("value")
            options.append(f"{opt['name']}:{value}" if value else opt["name"])
    return (
        f"search {' '.join(searches)}\n"
        + "".join(f"nameserver {ns}\n" for ns in nameservers)
        + f"options {' '.join(options)}\n"
    )
