"""operator/Dockerfile: lint-clean, pinned slim Python base, non-root, the operator extra, a real entrypoint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dockerfiles import assert_hadolint_clean, base_image, instructions

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "operator" / "Dockerfile"
DOCKERIGNORE = REPO / "operator" / "Dockerfile.dockerignore"


def test_hadolint_is_clean() -> None:
    assert_hadolint_clean(DOCKERFILE)


def test_pinned_slim_python_base_by_default() -> None:
    assert [ins for ins, _ in instructions(DOCKERFILE)].count("FROM") == 1
    line, base = base_image(DOCKERFILE)
    assert line == "${BASE_IMAGE}"  # what a local build overrides (ltj_localcluster.imagebuild)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base


def test_non_root_operator_extra_and_entrypoint() -> None:
    ins = instructions(DOCKERFILE)
    users = [arg for i, arg in ins if i == "USER"]
    assert users and users[-1].split(":")[0] == "1000"
    assert any(i == "RUN" and "pip install" in arg and "[operator]" in arg and "[trainer]" not in arg for i, arg in ins)
    (entry,) = [arg for i, arg in ins if i == "ENTRYPOINT"]
    assert entry == '["python", "-m", "ltj_operator"]'
    assert ("EXPOSE", "8080") in ins


def test_build_context_keeps_only_what_is_copied() -> None:
    ignore = DOCKERIGNORE.read_text().split()
    sources = [src for i, arg in instructions(DOCKERFILE) if i == "COPY" for src in arg.split()[:-1]]
    assert "*" in ignore and sources
    for src in sources:
        assert f"!{src.rstrip('/')}/" in ignore or f"!{src}" in ignore, src
    for source in ("operator/ltj_operator", "trainer_image/ltj_trainer"):
        assert (REPO / source).is_dir()


def test_entrypoint_module_exists() -> None:
    proc = subprocess.run([sys.executable, "-c", "import ltj_operator.__main__ as m; print(callable(m.main))"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "True", proc.stderr
