"""A user's model and datamodule join through entry points: the example plugin package
(examples/plugin) is pip-installed into a separate directory (the venv stays untouched) and a
real run trains it by its registered names."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from ltj_trainer import events, registry
from unit.trainer.trainer_helpers import REPO, TrainProcess, digits_config, write_config

pytestmark = pytest.mark.unit

PLUGIN = REPO / "examples" / "plugin"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
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
    sys.path.insert(0, str(plugin_site))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(plugin_site))
        for name in [m for m in sys.modules if m.startswith("ltj_example_plugin")]:
            del sys.modules[name]


def test_plugin_names_are_registered_from_installed_metadata(on_path: None) -> None:
    assert "moons_mlp" in registry.model_names() and "moons" in registry.data_names()
    import lightning.pytorch as pl

    assert issubclass(registry.model_class("moons_mlp"), pl.LightningModule)
    assert issubclass(registry.data_class("moons"), pl.LightningDataModule)


def test_without_the_plugin_the_names_are_unknown() -> None:
    assert "moons_mlp" not in registry.model_names()


@pytest.mark.slow
def test_plugin_model_trains_through_the_entrypoint(plugin_site: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "trainer.yaml", **digits_config(
        tmp_path, model_class="moons_mlp", data_class="moons", model_args={"hidden": 16},
        data_args={"n_samples": 1000}, max_epochs=3, early_stopping=False))
    proc = TrainProcess(cfg, tmp_path / "log.txt", env={"PYTHONPATH": str(plugin_site)})
    assert proc.wait(240) == 0, proc.tail()
    evs = events.read_all(tmp_path / "output" / "events.jsonl")
    started = next(e for e in evs if e.type == "started")
    assert (started.get("model_class"), started.get("data_class")) == ("moons_mlp", "moons")
    assert [e.get("epoch") for e in evs if e.type == "validation"] == [0, 1, 2]
    test = next(e for e in evs if e.type == "test")
    assert test.get("metrics")["test_acc"] > 0.75  # the moons are learnable; an untrained net is ~0.5
    assert json.loads((tmp_path / "termination-log").read_text())["best_checkpoint"].startswith(
        str(tmp_path / "output" / "checkpoints" / "moons_mlp_epoch"))
