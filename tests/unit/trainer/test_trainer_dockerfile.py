"""The trainer image's Dockerfile: lint-clean, pinned base, non-root, and its ENTRYPOINT is the
console script the process tests run."""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

import pytest

from dockerfiles import assert_hadolint_clean, base_image, instructions
from unit.trainer.trainer_helpers import LTJ_TRAIN, REPO

pytestmark = pytest.mark.unit

DOCKERFILE = REPO / "trainer_image" / "Dockerfile"
PLUGIN_DOCKERFILE = REPO / "examples" / "plugin" / "Dockerfile"


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, PLUGIN_DOCKERFILE], ids=["trainer", "plugin-example"])
def test_hadolint_is_clean(dockerfile: Path) -> None:
    assert_hadolint_clean(dockerfile)


def test_base_is_a_pinned_cuda_pytorch_runtime_by_default() -> None:
    line, base = base_image(DOCKERFILE)
    assert line == "${BASE_IMAGE}"  # what a local build overrides (ltj_localcluster.imagebuild)
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime(@sha256:[0-9a-f]{64})?", base), base


def test_runs_as_uid_1000_and_installs_the_trainer_extra() -> None:
    ins = instructions(DOCKERFILE)
    users = [arg for i, arg in ins if i == "USER"]
    assert users and users[-1].split(":")[0] == "1000"
    assert any(i == "RUN" and "pip install" in arg and "[trainer]" in arg for i, arg in ins)
    env = " ".join(arg for i, arg in ins if i == "ENV")
    assert "PYTHONUNBUFFERED=1" in env


def test_entrypoint_is_the_ltj_train_console_script() -> None:
    entrypoint = [json.loads(arg) for i, arg in instructions(DOCKERFILE) if i == "ENTRYPOINT"]
    assert entrypoint == [["ltj-train"]]
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["ltj-train"] == "ltj_trainer.launch:main"
    assert scripts["ltj-trainer-worker"] == "ltj_trainer.main:main"
    assert Path(LTJ_TRAIN).is_file()  # what the process tests start


def test_image_context_ignore_file_keeps_what_the_dockerfile_copies() -> None:
    ignore = (REPO / "trainer_image" / "Dockerfile.dockerignore").read_text().splitlines()
    copied = [src for i, arg in instructions(DOCKERFILE) if i == "COPY" for src in arg.split()[:-1]]
    assert "*" in ignore  # everything else stays out of the build context
    for src in ("pyproject.toml", "README.md", "trainer_image/ltj_trainer"):
        assert src in copied
        assert f"!{src}" in ignore or f"!{src}/" in ignore
