"""Fixtures for the chart tests: the pinned helm binary and rendering with typed values."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from unit.chart.chartlib import CHART, KUBE_VERSION, NAMESPACE, RELEASE

Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    from ltj_localcluster.cluster import ensure_binaries

    return ensure_binaries() / "helm"


@pytest.fixture(scope="session")
def helm(helm_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess]:
    """Runs helm with private config/cache dirs (no repositories, no user settings)."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, "HELM_CONFIG_HOME": str(home / "config"), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_DATA_HOME": str(home / "data")}
    env.pop("KUBECONFIG", None)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(helm_bin), *args], capture_output=True, text=True, env=env, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


@pytest.fixture
def values_file(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Writes values to a file (JSON is YAML), so tests pass typed values, not --set strings."""
    counter = iter(range(1000))

    def write(values: dict[str, Any]) -> Path:
        path = tmp_path / f"values-{next(counter)}.yaml"
        path.write_text(json.dumps(values))
        return path

    return write


@pytest.fixture
def render(helm: Callable[..., subprocess.CompletedProcess], values_file) -> Render:
    """helm template with the given values; returns the rendered objects."""

    def run(values: dict[str, Any] | None = None, *, release: str = RELEASE,
            namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        out = helm("template", release, str(CHART), "--kube-version", KUBE_VERSION, "--namespace", namespace,
                   "-f", str(values_file(values or {}))).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    return run
