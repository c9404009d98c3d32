"""The operator logs in with the KUBECONFIG of the moment it starts, even when the kubernetes
client was imported earlier (its own default path is frozen at import time)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6999", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""

SCRIPT = """
import os, sys
os.environ.pop("KUBECONFIG", None)
import kubernetes.config  # frozen default: ~/.kube/config
os.environ["KUBECONFIG"] = sys.argv[1]
from ltj_operator.kube import Kube
print(Kube.from_environment().api.configuration.host)
"""


def test_kubeconfig_is_read_at_login(tmp_path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no in-cluster service env, no ~/.kube
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "https://127.0.0.1:6999"


def test_kopf_login_reads_kubeconfig_at_login(tmp_path, monkeypatch) -> None:
    import logging

    import kopf

    from ltj_operator.handlers import login

    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    info = login(settings=kopf.OperatorSettings(), logger=logging.getLogger("t"))
    assert info is not None and info.server == "https://127.0.0.1:6999" and info.token == "t"
