"""operator/Dockerfile: lint-clean, a slim Python base pinned by digest, the locked dependencies
installed hash-checked, only the operator's distribution and the contract's, non-root, a real entrypoint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dockerfiles import DIGEST_PINNED, assert_hadolint_clean, base_image, instructions, locked_requirements

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "operator" / "Dockerfile"
DOCKERIGNORE = REPO / "operator" / "Dockerfile.dockerignore"


def test_hadolint_is_clean() -> None:
    assert_hadolint_clean(DOCKERFILE)


def test_slim_python_base_pinned_by_digest_by_default() -> None:
    assert [ins for ins, _ in instructions(DOCKERFILE)].count("FROM") == 1
    line, base = base_image(DOCKERFILE)
    assert line == "${BASE_IMAGE}"  # what a local build overrides (ltj_localcluster.imagebuild)
    pin = DIGEST_PINNED.fullmatch(base)
    assert pin, f"{base}: pin the base by digest (README, Development)"
    assert pin["image"] == "python" and re.fullmatch(r"3\.11\.\d+-slim-[a-z]+", pin["tag"]), base


def test_dependencies_come_hash_checked_from_the_lock() -> None:
    names = locked_requirements(DOCKERFILE, "operator/requirements.txt")
    assert {"kopf", "kubernetes", "prometheus-client", "setuptools"} <= names
    assert not names & {"torch", "lightning"}


def test_only_the_operator_and_the_contract_are_built_in() -> None:
    ins = instructions(DOCKERFILE)
    sources = {src for i, arg in ins if i == "COPY" for src in arg.split()[:-1]}
    assert sources == {"operator/requirements.txt", "api/pyproject.toml", "api/ltj_api", "operator/pyproject.toml",
                       "operator/ltj_operator"}
    (build,) = [arg for i, arg in ins if i == "RUN" and "./api ./operator" in arg]
    # Nothing unlocked: no dependency resolution, no isolated build environment fetched from an index.
    assert "--no-deps" in build.split() and "--no-build-isolation" in build.split()
    assert "find_spec('ltj_trainer') is None" in build and "ltj-relay --help" in build


def test_non_root_and_entrypoint() -> None:
    ins = instructions(DOCKERFILE)
    users = [arg for i, arg in ins if i == "USER"]
    assert users and users[-1].split(":")[0] == "1000"
    (entry,) = [arg for i, arg in ins if i == "ENTRYPOINT"]
    assert entry == '["python", "-m", "ltj_operator"]'
    assert ("EXPOSE", "8080") in ins


def test_build_context_keeps_only_what_is_copied() -> None:
    ignore = DOCKERIGNORE.read_text().split()
    sources = [src for i, arg in instructions(DOCKERFILE) if i == "COPY" for src in arg.split()[:-1]]
    assert "*" in ignore and sources
    for src in sources:
        assert f"!{src.rstrip('/')}/" in ignore or f"!{src}" in ignore, src
    for source in sources:
        assert (REPO / source).exists(), source


def test_entrypoint_module_exists() -> None:
    proc = subprocess.run([sys.executable, "-c", "import ltj_operator.__main__ as m; print(callable(m.main))"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "True", proc.stderr
