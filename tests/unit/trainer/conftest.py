"""Fixtures shared by the trainer tests: the example plugin (examples/plugin) installed once."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from unit.trainer.trainer_helpers import REPO

PLUGIN = REPO / "examples" / "plugin"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the example plugin pip-installed into it (the venv stays untouched)."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"
    shutil.copytree(PLUGIN, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp / "site"
    # --no-build-isolation: the venv's setuptools builds it, no index needed; --no-deps: the
    # plugin uses the trainer's torch and lightning, as in an image built FROM ours.
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert list(site.glob("ltj_example_plugin-*.dist-info"))
    return site


@pytest.fixture
def on_path(plugin_site: Path) -> Iterator[None]:
    """The plugin importable and its entry points registered, for one test."""
    sys.path.insert(0, str(plugin_site))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(plugin_site))
        for name in [m for m in sys.modules if m.startswith("ltj_example_plugin")]:
            del sys.modules[name]
