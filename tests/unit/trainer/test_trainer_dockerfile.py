"""The trainer image's Dockerfile: lint-clean, base pinned by digest, the locked dependencies but the
base's torch installed hash-checked, only the trainer's distribution and the contract's, non-root, and
its ENTRYPOINT is the console script the process tests run."""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

import pytest

from dockerfiles import DIGEST_PINNED, assert_hadolint_clean, base_image, instructions, locked_requirements
from unit.trainer.trainer_helpers import LTJ_TRAIN, REPO

pytestmark = pytest.mark.unit

DOCKERFILE = REPO / "trainer_image" / "Dockerfile"
PLUGIN_DOCKERFILE = REPO / "examples" / "plugin" / "Dockerfile"


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, PLUGIN_DOCKERFILE], ids=["trainer", "plugin-example"])
def test_hadolint_is_clean(dockerfile: Path) -> None:
    assert_hadolint_clean(dockerfile)


def test_base_is_a_cuda_pytorch_runtime_pinned_by_digest_by_default() -> None:
    line, base = base_image(DOCKERFILE)
    assert line == "${BASE_IMAGE}"  # what a local build overrides (ltj_localcluster.imagebuild)
    pin = DIGEST_PINNED.fullmatch(base)
    assert pin, f"{base}: pin the base by digest (README, Development)"
    assert pin["image"] == "pytorch/pytorch" and re.fullmatch(r"\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime", pin["tag"])


def test_dependencies_come_hash_checked_from_the_lock_but_torch() -> None:
    names = locked_requirements(DOCKERFILE, "trainer_image/requirements.txt")
    assert {"lightning", "torchmetrics", "scikit-learn", "setuptools"} <= names
    # The base image's CUDA build of torch stays: neither torch nor what only torch needs.
    assert not {n for n in names if n == "torch" or n.startswith(("nvidia-", "triton"))}
    assert not names & {"kopf", "kubernetes"}


def test_only_the_trainer_and_the_contract_are_built_in() -> None:
    ins = instructions(DOCKERFILE)
    sources = {src for i, arg in ins if i == "COPY" for src in arg.split()[:-1]}
    assert sources == {"trainer_image/requirements.txt", "api/pyproject.toml", "api/ltj_api",
                       "trainer_image/pyproject.toml", "trainer_image/ltj_trainer"}
    (build,) = [arg for i, arg in ins if i == "RUN" and "./api ./trainer_image" in arg]
    assert "--no-deps" in build.split() and "--no-build-isolation" in build.split()
    assert "find_spec('ltj_operator') is None" in build and "ltj-train --help" in build


def test_runs_as_uid_1000_unbuffered() -> None:
    ins = instructions(DOCKERFILE)
    users = [arg for i, arg in ins if i == "USER"]
    assert users and users[-1].split(":")[0] == "1000"
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
    for src in copied:
        assert f"!{src}" in ignore or f"!{src}/" in ignore, src
