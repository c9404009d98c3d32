"""ltj_localcluster.imagebuild without buildah: the input hashes that decide a rebuild, the manifest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockerfiles import base_image
from ltj_localcluster import imagebuild
from ltj_localcluster.imagebuild import (
    BASE_ARG,
    Image,
    ImageBuildError,
    context_files,
    dockerfile_hash,
    install_scripts,
    pause_hash,
    trainer_base_hash,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]

DOCKERFILE = f"""ARG {BASE_ARG}=python:3.11.11-slim-bookworm
FROM ${{{BASE_ARG}}}
COPY pyproject.toml README.md ./
COPY --chown=1000:1000 pkg ./pkg
RUN pip install .
"""


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """A repository-like build context whose Dockerfile copies three paths, like operator/Dockerfile."""
    files = {
        "app/Dockerfile": DOCKERFILE,
        "app/Dockerfile.dockerignore": "*\n!pyproject.toml\n!README.md\n!pkg/\n**/__pycache__\n**/*.pyc\npkg/*.txt\n",
        ".dockerignore": ".venv\n**/__pycache__\npkg/b.py\n",
        "pyproject.toml": "[project]\nname = 'x'\n",
        "README.md": "# x\n",
        "pkg/__init__.py": "",
        "pkg/a.py": "A = 1\n",
        "pkg/b.py": "B = 1\n",
        "pkg/sub/c.py": "C = 1\n",
        "pkg/__pycache__/a.cpython-311.pyc": "old",
        "pkg/sub/stale.pyc": "old",
        "pkg/notes.txt": "ignored: `*` stops at a slash",
        "pkg/sub/notes.txt": "copied",
        "tests/test_a.py": "def test(): pass\n",
        "other.txt": "not copied\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def _hash(context: Path, base: str = "base-hash") -> str:
    return dockerfile_hash(context, context / "app" / "Dockerfile", base)


def test_the_hashed_files_are_what_the_build_copies(context: Path) -> None:
    assert context_files(context, context / "app" / "Dockerfile") == [
        "README.md", "pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/sub/c.py", "pkg/sub/notes.txt", "pyproject.toml"]


@pytest.mark.parametrize("rel", ["pkg/a.py", "pkg/sub/c.py", "pyproject.toml", "README.md", "app/Dockerfile"])
def test_a_change_to_a_copied_file_or_the_dockerfile_changes_the_hash(context: Path, rel: str) -> None:
    before = _hash(context)
    path = context / rel
    original = path.read_text()
    path.write_text(original + "# changed\n")
    assert _hash(context) != before
    path.write_text(original)
    assert _hash(context) == before


def test_a_new_copied_file_or_mode_changes_the_hash(context: Path) -> None:
    before = _hash(context)
    (context / "pkg" / "a.py").chmod(0o755)
    after_chmod = _hash(context)
    (context / "pkg" / "new.py").write_text("")
    assert len({before, after_chmod, _hash(context)}) == 3


def test_the_base_hash_changes_the_hash(context: Path) -> None:
    assert _hash(context, "base-1") != _hash(context, "base-2")


@pytest.mark.parametrize("rel", ["pkg/__pycache__/a.cpython-311.pyc", "pkg/sub/stale.pyc", "tests/test_a.py",
                                 "other.txt", ".dockerignore"])
def test_a_change_to_an_ignored_or_uncopied_file_keeps_the_hash(context: Path, rel: str) -> None:
    before = _hash(context)
    (context / rel).write_text("changed")
    (context / "tests" / "test_new.py").write_text("")
    assert _hash(context) == before


def test_the_context_dockerignore_applies_only_without_the_dockerfiles_own(context: Path) -> None:
    # With app/Dockerfile.dockerignore the context's .dockerignore (which lists pkg/b.py) is unused.
    before = _hash(context)
    (context / "pkg" / "b.py").write_text("B = 2\n")
    assert _hash(context) != before
    (context / "app" / "Dockerfile.dockerignore").unlink()
    files = context_files(context, context / "app" / "Dockerfile")
    assert "pkg/b.py" not in files and "pkg/sub/stale.pyc" in files
    assert "pkg/__pycache__/a.cpython-311.pyc" not in files
    without_own = _hash(context)
    (context / "pkg" / "b.py").write_text("B = 3\n")
    assert _hash(context) == without_own


def test_unsupported_copy_forms_are_errors_not_a_partial_hash(context: Path) -> None:
    dockerfile = context / "app" / "Dockerfile"
    for line in ("COPY pkg/*.py ./", "ADD pkg ./pkg", "COPY --from=build /out ./", "COPY missing ./"):
        dockerfile.write_text(DOCKERFILE + line + "\n")
        with pytest.raises(ImageBuildError):
            _hash(context)


@pytest.mark.parametrize("dockerfile", ["operator/Dockerfile", "trainer_image/Dockerfile"])
def test_the_projects_dockerfiles_hash_their_packages_only(dockerfile: str) -> None:
    files = context_files(REPO, REPO / dockerfile)
    image = dockerfile.split("/")[0]
    # Each image's own distribution, its locked requirements and the contract; no other package.
    assert {"api/pyproject.toml", "api/ltj_api/__init__.py", f"{image}/pyproject.toml",
            f"{image}/requirements.txt"} <= set(files)
    assert ("operator/ltj_operator/__init__.py" in files) == (image == "operator")
    assert ("trainer_image/ltj_trainer/__init__.py" in files) == (image == "trainer_image")
    assert not [f for f in files if f.endswith(".egg-info") or ".egg-info/" in f]
    assert not [f for f in files if f.startswith("tests/") or "__pycache__" in f or f.endswith(".pyc")]
    # The build argument the builder passes is the one the Dockerfile's FROM reads.
    assert base_image(REPO / dockerfile)[0] == f"${{{BASE_ARG}}}"


def test_trainer_base_and_pause_hashes_follow_their_inputs(tmp_path: Path) -> None:
    assert trainer_base_hash("b", "2.7.1") != trainer_base_hash("b", "2.7.2")
    assert trainer_base_hash("b1", "2.7.1") != trainer_base_hash("b2", "2.7.1")
    binary = tmp_path / "catatonit"
    binary.write_bytes(b"v1")
    first = pause_hash(binary)
    binary.write_bytes(b"v2")
    assert pause_hash(binary) != first


def test_manifest_round_trip(tmp_path: Path) -> None:
    archive = tmp_path / "abc.tar"
    archive.write_bytes(b"tar")
    image = Image("operator", "localhost/ltj-operator:abc", "abc" * 20, archive, 378_000_000, 21.5,
                  "2026-01-01T00:00:00+00:00")
    manifest = tmp_path / "abc.json"
    image.write_manifest(manifest)
    assert Image.read_manifest(manifest) == Image(**{**image.__dict__, "cached": True})
    archive.unlink()
    assert Image.read_manifest(manifest) is None  # an archive gone is a cache miss
    manifest.write_text("{not json")
    assert Image.read_manifest(manifest) is None


def test_console_scripts_move_onto_the_path_with_the_images_python(tmp_path: Path) -> None:
    site, bindir = tmp_path / "site", tmp_path / "usr-local-bin"
    (site / "bin").mkdir(parents=True)
    (site / "bin" / "torchrun").write_text("#!/root/.venv/bin/python\nimport sys\n")
    (site / "bin" / "tool.sh").write_text("#!/bin/sh\necho\n")
    install_scripts(site, bindir)
    assert not (site / "bin").exists()
    assert (bindir / "torchrun").read_text() == "#!/usr/bin/python3\nimport sys\n"
    assert (bindir / "tool.sh").read_text() == "#!/bin/sh\necho\n"
    assert os.access(bindir / "torchrun", os.X_OK)


def test_unknown_image_names_are_rejected_before_any_build(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown images"):
        imagebuild.ensure_images(["operator", "nope"], cache=tmp_path)
    assert not (tmp_path / "images").exists()
