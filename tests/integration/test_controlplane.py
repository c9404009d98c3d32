"""The local control plane itself: versions, a second cluster beside the first, clean shutdown."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from kubetest import absent
from ltj_localcluster.cluster import BUILD_SCRIPT, REPO, down, ensure_binaries
from ltj_localcluster.controlplane import COMPONENTS, ClusterInfo, ControlPlane, delete_bridge

pytestmark = pytest.mark.integration

VERSIONS = dict(line.split("=", 1) for line in (BUILD_SCRIPT.parent / "versions.env").read_text().splitlines()
                if line and not line.startswith("#"))


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_binaries_report_the_pinned_versions():
    bin_dir = ensure_binaries()
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        out = subprocess.run([str(bin_dir / name), "--version"], capture_output=True, text=True).stdout
        assert out.strip() == f"Kubernetes v{VERSIONS['KUBE_VERSION']}", (name, out)
    kubectl = subprocess.run([str(bin_dir / "kubectl"), "version", "--client", "-o", "json"],
                             capture_output=True, text=True, check=True).stdout
    assert json.loads(kubectl)["clientVersion"]["gitVersion"] == f"v{VERSIONS['KUBE_VERSION']}"
    etcd = subprocess.run([str(bin_dir / "etcd"), "--version"], capture_output=True, text=True).stdout
    assert f"etcd Version: {VERSIONS['ETCD_VERSION']}" in etcd
    helm = subprocess.run([str(bin_dir / "helm"), "version", "--short"], capture_output=True, text=True).stdout
    assert helm.startswith(f"v{VERSIONS['HELM_VERSION']}")


def test_present_binaries_are_used_instead_of_building(tmp_path):
    # KUBEBUILDER_ASSETS with matching versions: the script copies them into an empty cache at once.
    env = {**os.environ, "LTJ_CACHE": str(tmp_path / "cache"), "KUBEBUILDER_ASSETS": str(ensure_binaries())}
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "building" not in proc.stderr, proc.stderr
    dest = Path(proc.stdout.strip().splitlines()[-1])
    assert dest.is_relative_to(tmp_path / "cache")
    assert {p.name for p in dest.iterdir()} >= {"etcd", "kube-apiserver", "kube-controller-manager",
                                                 "kube-scheduler", "kubectl", "helm"}


def test_second_cluster_runs_beside_the_first_and_stops_cleanly(kube, tmp_path):
    first = ClusterInfo.load(kube.run_dir)
    cp = ControlPlane(tmp_path / "second", ensure_binaries())
    info = cp.start()
    pids = json.loads((tmp_path / "second" / "pids.json").read_text())
    try:
        assert info.api_port != first.api_port and info.bridge != first.bridge and info.subnet != first.subnet
        assert set(pids) == set(COMPONENTS)
        # Each cluster is its own: a namespace made in the second is absent from the first.
        kubectl = [str(Path(info.bin_dir) / "kubectl"), f"--kubeconfig={info.kubeconfig}"]
        subprocess.run([*kubectl, "create", "namespace", "only-in-second"], check=True, capture_output=True)
        assert absent(kube, "namespace", "only-in-second")
        version = json.loads(subprocess.run([*kubectl, "version", "-o", "json"], capture_output=True, text=True,
                                            check=True).stdout)
        assert version["serverVersion"]["gitVersion"] == f"v{VERSIONS['KUBE_VERSION']}"
        # RBAC is on: an unknown user gets 403, not everything.
        denied = subprocess.run([*kubectl, "auth", "can-i", "list", "secrets", "--as=nobody"],
                                capture_output=True, text=True)
        assert denied.stdout.strip() == "no"
    finally:
        cp.stop()
        delete_bridge(info.bridge)
    assert not any(_alive(pid) for pid in pids.values())
    assert subprocess.run(["ip", "link", "show", info.bridge], capture_output=True).returncode != 0
    # The first cluster is untouched.
    assert kube.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_every_option_of_the_cli_says_what_it_does():
    from ltj_localcluster.__main__ import parser

    undocumented = [a.dest for a in parser()._actions if not (a.help or "").strip()]
    assert not undocumented


def test_up_prints_the_next_steps_and_its_down_command_stops_the_cluster(tmp_path):
    run_dir = tmp_path / "cli"
    up = subprocess.run([sys.executable, "-m", "ltj_localcluster", "up", "--kwok", "--run-dir", str(run_dir)],
                        capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        info = ClusterInfo.load(run_dir)
        out = up.stdout
        assert f"export KUBECONFIG={info.kubeconfig}" in out and info.server in out
        # The kubectl the output puts first on PATH matches the server's version.
        [path_line] = [ln for ln in out.splitlines() if ln.strip().startswith("export PATH=")]
        kubectl = Path(path_line.split("=", 1)[1].split(":", 1)[0]) / "kubectl"
        client = json.loads(subprocess.run([str(kubectl), "version", "-o", "json", f"--kubeconfig={info.kubeconfig}"],
                                           capture_output=True, text=True, check=True).stdout)
        assert client["clientVersion"]["gitVersion"] == client["serverVersion"]["gitVersion"]
        assert f"kubectl apply --server-side -f {REPO / 'crds'}" in out
        [stop] = [ln.strip() for ln in out.splitlines() if " -m ltj_localcluster down " in ln]
        pids = json.loads((run_dir / "pids.json").read_text())
    except BaseException:
        down(run_dir)
        raise
    assert subprocess.run(shlex.split(stop), capture_output=True, timeout=300).returncode == 0
    assert pids and not [name for name, pid in pids.items() if _alive(pid)]
