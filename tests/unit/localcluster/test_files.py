"""hosts files, log files, atomic volume writes and the pure volume payload builders."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from ltj_localcluster.atomic_writer import PayloadError, write_payload
from ltj_localcluster.env import PodFacts
from ltj_localcluster.hosts import HostEntry, entry_for, pod_hostname, render_hosts, render_resolv_conf
from ltj_localcluster.hostsfiles import HostsRegistry, PodHosts
from ltj_localcluster.logfmt import (
    LineSplitter,
    LogEntry,
    LogOptions,
    LogOptionsError,
    encode_entry,
    format_time_ns,
    options_from_query,
    parse_entries,
    parse_time_ns,
    render_entries,
    select_entries,
    tail_text,
)
from ltj_localcluster.volumes import (
    BindMount,
    VolumeError,
    downward_payload,
    key_to_path_payload,
    sort_mounts,
    token_refresh_due,
    token_request_body,
)

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------ hosts


def test_hosts_resolve_namespace_peers_by_hostname_and_subdomain() -> None:
    me = HostEntry("10.0.0.2", "j-node-1", "j", "ns")
    peers = [
        HostEntry("10.0.0.9", "j-node-0", "j", "ns"),  # newest first: wins
        HostEntry("10.0.0.3", "j-node-0", "j", "ns"),
        HostEntry("10.0.0.4", "x", "", "ns"),  # no subdomain: not resolvable
        HostEntry("10.0.0.5", "j-node-0", "j", "other"),  # other namespace
        me,
    ]
    text = render_hosts(me, "j-node-1", peers, [{"ip": "1.2.3.4", "hostnames": ["a", "b"]}])
    lines = text.splitlines()
    assert "127.0.0.1\tlocalhost" in lines
    assert "10.0.0.2\tj-node-1.j.ns.svc.cluster.local j-node-1.j.ns.svc j-node-1.j.ns j-node-1.j j-node-1" in lines
    assert "10.0.0.9\tj-node-0.j.ns.svc.cluster.local j-node-0.j.ns.svc j-node-0.j.ns j-node-0.j" in lines
    assert "10.0.0.3" not in text and "10.0.0.4" not in text and "10.0.0.5" not in text
    assert "1.2.3.4\ta\tb" in lines


def test_hostname_and_entry() -> None:
    pod = {"metadata": {"name": "p" * 70, "namespace": "ns"}, "spec": {}}
    assert pod_hostname(pod) == "p" * 63
    pod2 = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"hostname": "h", "subdomain": "s"}}
    assert entry_for(pod2, "1.1.1.1") == HostEntry("1.1.1.1", "h", "s", "ns")
    assert "p" in render_hosts(entry_for(pod2, "1.1.1.1"), "p", []).splitlines()[-1].split()


def test_resolv_conf() -> None:
    text = render_resolv_conf("ns", {"searches": ["x.y"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]})
    assert text.startswith("search ns.svc.cluster.local svc.cluster.local cluster.local x.y\n")
    assert "nameserver 127.0.0.1\n" in text and "ndots:2 edns0" in text


def test_hosts_registry_rewrites_in_place(tmp_path: Path) -> None:
    reg = HostsRegistry()
    a, b = tmp_path / "a", tmp_path / "b"
    reg.add("ua", PodHosts(HostEntry("10.0.0.2", "j-node-0", "j", "ns"), "j-node-0", a, "2024-01-01T00:00:00Z", ()))
    inode = a.stat().st_ino
    assert "j-node-1" not in a.read_text()
    reg.add("ub", PodHosts(HostEntry("10.0.0.3", "j-node-1", "j", "ns"), "j-node-1", b, "2024-01-01T00:00:01Z", ()))
    assert "10.0.0.3\tj-node-1.j.ns.svc.cluster.local" in a.read_text()
    assert "10.0.0.2\tj-node-0.j.ns.svc.cluster.local" in b.read_text()
    assert a.stat().st_ino == inode
    reg.hide("ub")  # terminating: others stop resolving it
    assert "10.0.0.3" not in a.read_text() and "10.0.0.3" in b.read_text()
    reg.remove("ub")
    assert a.stat().st_ino == inode


# ------------------------------------------------------------------ logs


def entries(*specs: tuple[int, str, bool, bytes]) -> list[LogEntry]:
    return [LogEntry(t, s, p, c) for t, s, p, c in specs]


def test_log_round_trip_and_time_format() -> None:
    t = 1_700_000_000_123_456_789
    assert format_time_ns(t) == "2023-11-14T22:13:20.123456789Z"
    assert parse_time_ns("2023-11-14T22:13:20.123456789Z") == t
    assert parse_time_ns("2023-11-14T22:13:20Z") == 1_700_000_000 * 10**9
    raw = b"".join(encode_entry(e) for e in entries((t, "stdout", False, b"a b c"), (t, "stderr", True, b"x")))
    parsed, rest = parse_entries(raw + b"2023-11-14T22:13:20Z stdout F incompl")
    assert rest == b"2023-11-14T22:13:20Z stdout F incompl"
    assert parsed == entries((t, "stdout", False, b"a b c"), (t, "stderr", True, b"x"))


def test_line_splitter_handles_partials_and_long_lines() -> None:
    sp = LineSplitter("stdout", clock=lambda: 5)
    assert sp.feed(b"one\ntw") == entries((5, "stdout", False, b"one"))
    assert sp.feed(b"o\n") == entries((5, "stdout", False, b"two"))
    long = sp.feed(b"z" * 40000)
    assert [e.partial for e in long] == [True, True] and sum(len(e.content) for e in long) == 32768
    assert sp.flush() == entries((5, "stdout", False, b"z" * (40000 - 32768)))
    assert sp.flush() == []


def test_log_selection_tail_since_timestamps() -> None:
    es = entries((1, "stdout", False, b"a"), (2, "stdout", True, b"b1"), (3, "stdout", False, b"b2"), (4, "stderr", False, b"c"))
    assert render_entries(es, False) == b"a\nb1b2\nc\n"
    assert render_entries(select_entries(es, LogOptions(tail_lines=2)), False) == b"b1b2\nc\n"
    assert select_entries(es, LogOptions(tail_lines=0)) == []
    assert render_entries(select_entries(es, LogOptions(since_ns=3)), False) == b"b2\nc\n"
    stamped = render_entries(es[:3], True)
    assert stamped == b"1970-01-01T00:00:00.000000001Z a\n1970-01-01T00:00:00.000000002Z b1b2\n"
    assert tail_text(es, 1, 100) == "c\n"
    assert tail_text(es, 10, 4) == "2\nc\n"


def test_log_query_options() -> None:
    o = options_from_query({"follow": "true", "tailLines": "5", "limitBytes": "10", "timestamps": "1", "previous": "false"}, 0)
    assert o == LogOptions(follow=True, tail_lines=5, limit_bytes=10, timestamps=True, since_ns=None, previous=False)
    assert options_from_query({"sinceSeconds": "2"}, 10 * 10**9).since_ns == 8 * 10**9
    with pytest.raises(LogOptionsError, match="tailLines"):
        options_from_query({"tailLines": "x"}, 0)


# ------------------------------------------------------------------ volumes


def test_atomic_writer_swaps_data_dir(tmp_path: Path) -> None:
    d = tmp_path / "vol"
    assert write_payload(d, {"a": (b"1", 0o644), "sub/b": (b"2", 0o600)})
    assert (d / "a").read_text() == "1" and (d / "sub" / "b").read_text() == "2"
    assert os.readlink(d / "a") == "..data/a"
    assert (d / "sub" / "b").stat().st_mode & 0o777 == 0o600
    first = os.readlink(d / "..data")
    assert not write_payload(d, {"a": (b"1", 0o644), "sub/b": (b"2", 0o600)})  # unchanged: no-op
    assert write_payload(d, {"a": (b"new", 0o644)})
    assert (d / "a").read_text() == "new" and not (d / "sub").exists()
    assert not (d / first).exists()
    with pytest.raises(PayloadError):
        write_payload(d, {"../escape": (b"", 0o644)})


def test_key_to_path_payload() -> None:
    data = {"k1": b"v1", "k2": b"v2"}
    assert key_to_path_payload("ConfigMap", "cm", data, None, 0o644, False) == {"k1": (b"v1", 0o644), "k2": (b"v2", 0o644)}
    assert key_to_path_payload("ConfigMap", "cm", data, [{"key": "k2", "path": "x/y", "mode": 0o400}], 0o644, False) == {"x/y": (b"v2", 0o400)}
    assert key_to_path_payload("Secret", "s", None, None, 0o644, True) == {}
    with pytest.raises(VolumeError, match='secret "s" not found'):
        key_to_path_payload("Secret", "s", None, None, 0o644, False)
    with pytest.raises(VolumeError, match="non-existent config key: nope"):
        key_to_path_payload("ConfigMap", "cm", data, [{"key": "nope", "path": "p"}], 0o644, False)


def test_downward_payload() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "1"}},
           "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "2Gi"}}}]}}
    facts = PodFacts("10.0.0.2", "127.0.0.1", {"memory": Decimal(2**34)})
    items = [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}, "mode": 0o600},
        {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}},
    ]
    assert downward_payload(pod, items, facts, 0o644) == {
        "labels": (b'a="1"', 0o644),
        "ns": (b"ns", 0o600),
        "mem": (b"2048", 0o644),
    }


def test_token_request_and_refresh_rule() -> None:
    pod = {"metadata": {"name": "p", "uid": "u"}}
    body = token_request_body(pod, {"audience": "aud", "expirationSeconds": 600, "path": "t"})
    assert body["spec"] == {
        "expirationSeconds": 600,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u"},
        "audiences": ["aud"],
    }
    assert "audiences" not in token_request_body(pod, {"path": "t"})["spec"]
    assert not token_refresh_due(0, 1000, 799)
    assert token_refresh_due(0, 1000, 800)
    assert token_refresh_due(0, 10**9, 24 * 3600)


def test_mounts_sorted_parents_first() -> None:
    ms = [BindMount("a", "/x/y/z", False), BindMount("b", "/x", True), BindMount("c", "/x/y", False)]
    assert [m.target for m in sort_mounts(ms)] == ["/x", "/x/y", "/x/y/z"]


def test_log_index_prefers_the_pod_registered_last(tmp_path: Path) -> None:
    from ltj_localcluster.logs_server import LogIndex

    index = LogIndex(tmp_path)
    index.register("ns", "p", "old")
    index.container("ns", "p", "old", "c").instance = 0
    index.register("ns", "p", "new")
    index.container("ns", "p", "old", "c").running = False  # the old pod's late update
    assert index.lookup("ns", "p").uid == "new"  # type: ignore[union-attr]
    index.forget("new")
    (tmp_path / "ns_p_old").mkdir()
    assert index.lookup("ns", "p").uid == "old"  # type: ignore[union-attr]  (from disk)
    assert index.lookup("ns", "nope") is None
