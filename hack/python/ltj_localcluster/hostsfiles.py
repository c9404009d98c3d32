"""Keeps every pod's /etc/hosts file current as pods of its namespace come and go.

Containers bind-mount the file, which pins its inode, so updates rewrite it in place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .hosts import HostEntry, render_hosts


@dataclass(frozen=True)
class PodHosts:
    entry: HostEntry
    pod_name: str
    path: Path
    created: str  # creationTimestamp: the newest pod of a name wins
    aliases: tuple[Mapping[str, Any], ...]


def write_in_place(path: Path, content: str) -> None:
    data = content.encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


class HostsRegistry:
    def __init__(self) -> None:
        self._pods: dict[str, PodHosts] = {}  # uid -> entry
        self._hidden: set[str] = set()  # uids whose name no longer resolves (terminating)

    def add(self, uid: str, hosts: PodHosts) -> None:
        self._pods[uid] = hosts
        self._hidden.discard(uid)
        self.rewrite(hosts.entry.namespace)

    def hide(self, uid: str) -> None:
        """Stop resolving the pod's name for others (it is terminating); keep its own file."""
        if uid in self._pods and uid not in self._hidden:
            self._hidden.add(uid)
            self.rewrite(self._pods[uid].entry.namespace)

    def remove(self, uid: str) -> None:
        gone = self._pods.pop(uid, None)
        self._hidden.discard(uid)
        if gone is not None:
            self.rewrite(gone.entry.namespace)

    def peers(self, namespace: str) -> Sequence[HostEntry]:
        live = [(uid, p) for uid, p in self._pods.items() if p.entry.namespace == namespace and uid not in self._hidden]
        live.sort(key=lambda item: item[1].created, reverse=True)
        return [p.entry for _, p in live]

    def rewrite(self, namespace: str) -> None:
        peers = self.peers(namespace)
        for p in self._pods.values():
            if p.entry.namespace != namespace:
                continue
            content = render_hosts(p.entry, p.pod_name, peers, p.aliases)
            try:
                current = p.path.read_text()
            except OSError:
                current = None
            if current != content:
                write_in_place(p.path, content)
