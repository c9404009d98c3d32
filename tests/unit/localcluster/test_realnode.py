"""The real node's pure parts: the one-node-per-machine lock and what its configs promise the host."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubetest import wait_for
from ltj_localcluster import realnode
from ltj_localcluster.controlplane import SERVICE_CIDR, ClusterInfo

pytestmark = pytest.mark.unit


@pytest.fixture
def lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The lock file under tmp_path; returns the run dirs `cleanup` was called for."""
    monkeypatch.setattr(realnode, "NODE_LOCK", tmp_path / "lock")
    cleaned: list[Path] = []
    monkeypatch.setattr(realnode, "cleanup", lambda run_dir, bin_dir: cleaned.append(run_dir))
    return cleaned


def _holder(tmp_path: Path, name: str, pids: dict[str, int]) -> Path:
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "pids.json").write_text(json.dumps(pids))
    return run_dir


def test_a_free_machine_is_claimed(tmp_path, lock):
    realnode._claim_lock(tmp_path / "mine", Path("/bin"))
    assert realnode.NODE_LOCK.read_text() == str(tmp_path / "mine")
    assert realnode.holds_node(tmp_path / "mine") and lock == []


def test_a_running_node_is_never_taken_over(tmp_path, lock):
    other = _holder(tmp_path, "other", {"containerd": os.getpid()})
    realnode.NODE_LOCK.write_text(str(other))
    with pytest.raises(RuntimeError, match=f"already runs.*{other}.*down --run-dir {other}"):
        realnode._claim_lock(tmp_path / "mine", Path("/bin"))
    assert lock == [] and realnode.NODE_LOCK.read_text() == str(other)


def test_a_node_whose_run_dir_was_deleted_is_still_running(tmp_path, lock):
    gone = tmp_path / "deleted-run-dir"  # no pids.json: only its processes name it
    node = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", str(gone)])
    try:
        # Popen returns once the child is in exec, which sets its command line a moment later.
        wait_for(lambda: str(gone).encode() in Path(f"/proc/{node.pid}/cmdline").read_bytes(), 10, interval=0.01,
                 what="the node's command line")
        realnode.NODE_LOCK.write_text(str(gone))
        with pytest.raises(RuntimeError, match="already runs"):
            realnode._claim_lock(tmp_path / "mine", Path("/bin"))
        assert lock == []
    finally:
        node.kill()
        node.wait()


def test_a_dead_holder_is_cleaned_up_and_the_lock_taken(tmp_path, lock):
    dead = subprocess.Popen(["true"])
    dead.wait()
    other = _holder(tmp_path, "other", {"containerd": dead.pid})
    realnode.NODE_LOCK.write_text(str(other))
    realnode._claim_lock(tmp_path / "mine", Path("/bin"))
    assert lock == [other]
    assert realnode.NODE_LOCK.read_text() == str(tmp_path / "mine")


def _info(tmp_path: Path) -> ClusterInfo:
    return ClusterInfo(kubeconfig=str(tmp_path / "kc"), server="https://10.250.3.1:6443", api_host="10.250.3.1",
                       api_port=6443, bridge="ltjbr3", bridge_ip="10.250.3.1", subnet="10.250.3.0/24",
                       pki_dir=str(tmp_path / "pki"), run_dir=str(tmp_path))


def test_the_kubelet_leaves_the_host_firewall_and_serves_on_the_node_ip_only(tmp_path):
    cfg = realnode.kubelet_config(_info(tmp_path), realnode.pkimod.Pki(tmp_path / "pki"))
    assert cfg["makeIPTablesUtilChains"] is False and cfg["cgroupDriver"] == "cgroupfs"
    assert cfg["address"] == "10.250.3.1" and cfg["healthzBindAddress"] == "127.0.0.1" and cfg["readOnlyPort"] == 0
    assert cfg["authentication"]["anonymous"]["enabled"] is False and cfg["authorization"]["mode"] == "Webhook"
    [dns] = cfg["clusterDNS"]
    assert ipaddress.ip_address(dns) in ipaddress.ip_network(SERVICE_CIDR) and dns == realnode.CLUSTER_DNS_IP


def test_kube_proxy_leaves_the_hosts_conntrack_and_localnet_settings():
    cfg = realnode.kube_proxy_config("/kc", 1, 2)
    assert cfg["conntrack"] == {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"}
    assert cfg["iptables"]["localhostNodePorts"] is False
    assert cfg["healthzBindAddress"].startswith("127.0.0.1:") and cfg["metricsBindAddress"].startswith("127.0.0.1:")


def test_the_pod_network_keeps_its_state_under_the_run_dir(tmp_path):
    cfg = realnode.NodeConfig.for_run_dir(tmp_path)
    conf = realnode.cni_conflist(cfg)
    bridge = conf["plugins"][0]
    assert bridge["bridge"] == realnode.CNI_BRIDGE and bridge["ipam"]["dataDir"] == str(cfg.cni_ipam_dir)
    assert f'conf_dir = "{cfg.cni_conf_dir}"' in realnode.containerd_toml("pause:1", cfg)
    assert not ipaddress.ip_network(realnode.POD_CIDR).overlaps(ipaddress.ip_network(SERVICE_CIDR))
