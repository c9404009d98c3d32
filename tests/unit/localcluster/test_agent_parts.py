"""Images, nodes, the provisioner's PVs, IP allocation, exit statuses, configuration parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltj_localcluster.agent import parse_args
from ltj_localcluster.controlplane import ClusterInfo
from ltj_localcluster.images import ImageError, image_name, resolve_argv
from ltj_localcluster.kubeapi import load_kubeconfig
from ltj_localcluster.network import IpPool, NetworkError
from ltj_localcluster.nodes import NodeShape, node_labels, node_status
from ltj_localcluster.pods import patchable_status, default_base_env
from ltj_localcluster.provisioner import persistent_volume, storage_class, wants_provisioning
from ltj_localcluster.runtime import exit_info_from

pytestmark = pytest.mark.unit

CLUSTER = {
    "kubeconfig": "/run/admin.kubeconfig",
    "server": "https://127.0.0.1:6443",
    "api_host": "127.0.0.1",
    "api_port": 6443,
    "bridge": "ltjbr1",
    "bridge_ip": "10.250.1.1",
    "subnet": "10.250.1.0/24",
    "pki_dir": "/run/pki",
    "run_dir": "/run",  # extra keys from the control plane are fine
}


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("ltj-trainer:dev", "ltj-trainer"),
        ("ghcr.io/org/ltj-trainer:1.0", "ltj-trainer"),
        ("localhost:5000/ltj-operator@sha256:abc", "ltj-operator"),
        ("busybox", "busybox"),
    ],
)
def test_image_name(image: str, name: str) -> None:
    assert image_name(image) == name


def test_image_entrypoints() -> None:
    assert resolve_argv("registry:5000/ltj-trainer:dev", None, None) == ["ltj-train"]
    assert resolve_argv("ltj-trainer:dev", None, ["--config", "x"]) == ["ltj-train", "--config", "x"]
    assert resolve_argv("ltj-operator:dev", ["ltj-relay"], None) == ["ltj-relay"]
    assert resolve_argv("ltj-operator:dev", None, None) == ["ltj-relay"]
    assert resolve_argv("busybox", ["sh", "-c"], ["echo hi"]) == ["sh", "-c", "echo hi"]
    with pytest.raises(ImageError, match="give the container a command"):
        resolve_argv("busybox", None, ["x"])


def test_cluster_info_validation() -> None:
    info = ClusterInfo.from_dict(CLUSTER)
    assert info.api_port == 6443 and info.bridge == "ltjbr1"
    with pytest.raises(ValueError, match="cluster.json: bridge_ip: required"):
        ClusterInfo.from_dict({k: v for k, v in CLUSTER.items() if k != "bridge_ip"})
    with pytest.raises(ValueError, match="api_port: must be int"):
        ClusterInfo.from_dict({**CLUSTER, "api_port": "6443"})


def test_cli(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(CLUSTER))
    cfg, level = parse_args(["--cluster-info", str(path), "--state-dir", str(tmp_path / "s"), "--nodes", "3", "--gpus", "2"])
    assert cfg.node_names == ["ltj-node-0", "ltj-node-1", "ltj-node-2"]
    assert cfg.shape == NodeShape(cpu="8", memory="16Gi", gpus=2, pods=110)
    assert level == "INFO"
    with pytest.raises(SystemExit):
        parse_args(["--cluster-info", str(path), "--state-dir", "s", "--memory", "lots"])


def test_node_status_and_labels() -> None:
    shape = NodeShape(cpu="8", memory="16Gi", gpus=4, pods=110)
    st = node_status("n0", shape, address="127.0.0.1", kubelet_port=10250, kubelet_version="v1.34.4", ready=True, boot_id="b")
    assert st["capacity"] == {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi", "nvidia.com/gpu": "4"}
    assert st["allocatable"] == st["capacity"]
    assert st["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    assert {"type": "InternalIP", "address": "127.0.0.1"} in st["addresses"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    later = node_status("n0", shape, address="127.0.0.1", kubelet_port=1, kubelet_version="v", ready=False, boot_id="b",
                        previous_conditions=[{**ready, "lastTransitionTime": "2000-01-01T00:00:00Z"}])
    mem = next(c for c in later["conditions"] if c["type"] == "Ready")
    assert mem["status"] == "False" and mem["lastTransitionTime"] != "2000-01-01T00:00:00Z"
    assert "nvidia.com/gpu" not in NodeShape("1", "1Gi", 0, 10).resources()
    assert node_labels("n0", shape)["kubernetes.io/hostname"] == "n0"


def test_ip_pool_round_robin() -> None:
    pool = IpPool("10.250.1.0/29", reserved=("10.250.1.1",))
    got = [pool.allocate(f"p{i}") for i in range(5)]
    assert got == ["10.250.1.2", "10.250.1.3", "10.250.1.4", "10.250.1.5", "10.250.1.6"]
    assert pool.allocate("p0") == "10.250.1.2"  # idempotent per owner
    with pytest.raises(NetworkError, match="no free pod IP"):
        pool.allocate("p9")
    pool.release("10.250.1.3")
    assert pool.allocate("p9") == "10.250.1.3"
    pool.release("10.250.1.4")
    assert pool.allocate("again", prefer="10.250.1.4") == "10.250.1.4"  # a taken-over pod keeps its IP


def test_status_patch_clears_dropped_fields_and_replaces_ip_lists() -> None:
    status = {"phase": "Running", "podIPs": [{"ip": "10.0.0.3"}], "hostIPs": [{"ip": "127.0.0.1"}],
              "conditions": [{"type": "Ready", "status": "True"}]}
    out = patchable_status(status, {"phase": "Pending", "reason": "DeadlineExceeded"})
    assert out["conditions"] == [{"type": "Ready", "status": "True", "reason": None, "message": None}]
    assert out["podIPs"] == [{"ip": "10.0.0.3"}, {"$patch": "replace"}]
    assert out["reason"] is None and "message" not in out


def test_base_env_puts_the_venv_first() -> None:
    env = default_base_env("/venv/bin")
    assert env["PATH"].split(":")[0] == "/venv/bin" and env["PATH"].count("/venv/bin") == 1
    assert env["PYTHONUNBUFFERED"] == "1"


def pvc(**over: object) -> dict:
    base = {
        "metadata": {"name": "out", "namespace": "ns", "uid": "1234", "resourceVersion": "7"},
        "spec": {"storageClassName": "ltj-local", "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "2Gi"}}},
        "status": {"phase": "Pending"},
    }
    base["spec"].update(over)  # type: ignore[union-attr]
    return base


def test_provisioning_decisions() -> None:
    assert wants_provisioning(pvc())
    assert not wants_provisioning(pvc(storageClassName="other"))
    assert not wants_provisioning(pvc(volumeName="pv-x"))
    other = pvc(storageClassName=None)
    other["metadata"]["annotations"] = {"volume.kubernetes.io/storage-provisioner": "ltj.dev/local"}
    assert wants_provisioning(other)


def test_persistent_volume_for_claim() -> None:
    pv = persistent_volume(pvc(), Path("/state/volumes/pvc-1234"))
    assert pv["metadata"]["name"] == "pvc-1234"
    assert pv["spec"]["capacity"] == {"storage": "2Gi"}
    assert pv["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pv["spec"]["hostPath"] == {"path": "/state/volumes/pvc-1234", "type": "DirectoryOrCreate"}
    assert pv["spec"]["claimRef"]["uid"] == "1234" and pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    with pytest.raises(ValueError, match="requests.storage is required"):
        persistent_volume(pvc(resources={}), Path("/x"))
    sc = storage_class(default=True)
    assert sc["provisioner"] == "ltj.dev/local" and sc["volumeBindingMode"] == "Immediate" and sc["reclaimPolicy"] == "Delete"


def test_exit_info() -> None:
    assert exit_info_from([{"exit_code": 0, "signal": None}], 0, 1, 2).reason == "Completed"
    err = exit_info_from([{"exit_code": 137, "signal": 9}], 137, 1, 2)
    assert (err.exit_code, err.signal, err.reason) == (137, 9, "Error")
    start = exit_info_from([{"start_error": 'exec: "x": executable file not found in $PATH'}, {"exit_code": 128}], 128, 1, 2)
    assert (start.exit_code, start.reason) == (128, "StartError") and "not found" in start.message
    killed = exit_info_from([], -9, 1, 2)  # the launcher itself was SIGKILLed
    assert (killed.exit_code, killed.signal) == (137, 9)


def test_kubeconfig_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "kc").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1/', certificate-authority: pki/ca.crt}}]\n"
        "users: [{name: u, user: {client-certificate: pki/a.crt, client-key: pki/a.key}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    cfg = load_kubeconfig(tmp_path / "kc")
    assert cfg.server == "https://127.0.0.1:1"
    assert cfg.ca_file == str(tmp_path / "pki" / "ca.crt") and cfg.key_file == str(tmp_path / "pki" / "a.key")
