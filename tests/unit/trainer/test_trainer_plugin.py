"""A user's model and datamodule join through entry points: the example plugin package
(examples/plugin, installed by conftest.plugin_site into a separate directory, the venv stays
untouched) is found by its registered names and a real run trains it."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from ltj_api import events
from ltj_trainer import registry
from unit.trainer.trainer_helpers import REPO, TrainProcess, digits_config, write_config

pytestmark = pytest.mark.unit


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


def test_the_local_cluster_commands_match_what_imagebuild_builds_and_loads(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/trainer.md: a plugin image built FROM the local cluster's trainer image, imported where its
    node's kubelet finds images. (Building and running it needs root and the real node: by hand.)"""
    from ltj_localcluster import imagebuild

    blocks = re.findall(r"^```sh\n(.*?)^```", (REPO / "docs" / "trainer.md").read_text(), re.MULTILINE | re.DOTALL)
    (block,) = [b for b in blocks if "ltj_localcluster.imagebuild" in b]
    assert "ARG TRAINER_IMAGE" in (REPO / "examples" / "plugin" / "Dockerfile").read_text()
    assert '--build-arg TRAINER_IMAGE="$TRAINER"' in block
    assert inspect.signature(imagebuild.load_into_containerd).parameters["namespace"].default == "k8s.io"
    assert f"ctr -a {imagebuild.CONTAINERD_SOCK} -n k8s.io images import" in block
    # The first line reads the trainer image's ref and archive from what imagebuild prints.
    image = imagebuild.Image("trainer", f"{imagebuild.RECIPES['trainer'].repository}:0123456789ab", "h",
                             Path("/cache/images/trainer/0123456789ab.tar"), 6 << 30, 93.5, "2025-01-01T00:00:00+00:00")
    monkeypatch.setattr(imagebuild, "ensure_images", lambda names: {"trainer": image})
    assert imagebuild.main(["--only", "trainer"]) == 0
    printed = capsys.readouterr().out
    invocation = "<(.venv/bin/python -m ltj_localcluster.imagebuild --only trainer)"
    first = block.splitlines()[0]
    assert invocation in first
    out = subprocess.run(["bash", "-c", first.replace(invocation, '<(printf %s "$PRINTED")') + '; echo "$TRAINER $ARCHIVE"'],
                         env={"PATH": os.environ["PATH"], "PRINTED": printed}, capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == [image.ref, str(image.archive)], out.stderr
