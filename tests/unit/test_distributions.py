"""One distribution per image plus the contract: each package imports only the standard library, its
own modules and what its pyproject declares; ltj-api declares nothing; no distribution depends on
another but ltj-api; and uv.lock is current for every pyproject."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
# (project directory, import package, distribution); the images install api + operator, api + trainer_image.
DISTRIBUTIONS = [
    ("api", "ltj_api", "ltj-api"),
    ("operator", "ltj_operator", "ltj-operator"),
    ("trainer_image", "ltj_trainer", "ltj-trainer"),
    ("cli", "ltj_cli", "ltj-cli"),
    ("hack/python", "ltj_localcluster", "ltj-localcluster"),
]
MEMBERS = {dist for _, _, dist in DISTRIBUTIONS}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", spec)
    assert match, spec
    return _normalize(match.group(0))


def project(directory: str) -> dict:
    return tomllib.loads((REPO / directory / "pyproject.toml").read_text())["project"]


def declared(directory: str) -> set[str]:
    """The distributions a project depends on, optional extras included."""
    p = project(directory)
    specs = list(p.get("dependencies", []))
    for extra in p.get("optional-dependencies", {}).values():
        specs.extend(extra)
    return {_requirement_name(s) for s in specs}


def imported_top_levels(package_dir: Path) -> dict[str, list[str]]:
    """Absolute imports anywhere in the package's modules (lazy ones inside functions too): top-level
    name -> the files that import it."""
    found: dict[str, list[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(str(path.relative_to(REPO)))
    return found


def providers(top_level: str) -> set[str]:
    """The installed distributions that provide an import name (ours are found by package name)."""
    ours = {package: dist for _, package, dist in DISTRIBUTIONS}
    if top_level in ours:
        return {ours[top_level]}
    return {_normalize(d) for d in importlib.metadata.packages_distributions().get(top_level, [])}


@pytest.mark.parametrize("directory,package,dist", DISTRIBUTIONS, ids=[d for _, _, d in DISTRIBUTIONS])
def test_a_package_imports_only_the_stdlib_itself_and_what_it_declares(directory: str, package: str,
                                                                         dist: str) -> None:
    assert _normalize(project(directory)["name"]) == dist
    allowed = declared(directory) | {dist}
    undeclared = {}
    for name, files in imported_top_levels(REPO / directory / package).items():
        if name in sys.stdlib_module_names or name == "__future__":
            continue
        found = providers(name)
        if not found & allowed:
            undeclared[name] = (sorted(found) or ["not installed"], files[0])
    assert not undeclared, f"{dist} imports what {directory}/pyproject.toml does not declare: {undeclared}"


def test_the_contract_needs_nothing_but_the_standard_library() -> None:
    assert project("api").get("dependencies") == [] and not project("api").get("optional-dependencies")
    imports = set(imported_top_levels(REPO / "api" / "ltj_api")) - {"__future__", "ltj_api"}
    assert imports <= set(sys.stdlib_module_names), imports - set(sys.stdlib_module_names)


@pytest.mark.parametrize("directory,package,dist", DISTRIBUTIONS, ids=[d for _, _, d in DISTRIBUTIONS])
def test_no_distribution_depends_on_another_but_the_contract(directory: str, package: str, dist: str) -> None:
    # An image installs exactly its own distribution: the operator image no trainer, and the reverse.
    assert declared(directory) & MEMBERS <= {"ltj-api"}
    others = {p for _, p, d in DISTRIBUTIONS if d not in (dist, "ltj-api")}
    assert not set(imported_top_levels(REPO / directory / package)) & others


def test_the_workspace_holds_every_distribution() -> None:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "project" not in root  # the root is the workspace, installed by no image
    assert sorted(root["tool"]["uv"]["workspace"]["members"]) == sorted(d for d, _, _ in DISTRIBUTIONS)
    dev = {_requirement_name(s) for s in root["dependency-groups"]["dev"]}
    assert MEMBERS <= dev  # `make venv` installs them all, editable


def test_the_lock_is_current() -> None:
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        pytest.skip("uv is not installed (part of the dev group)")
    # --offline: what the lock pins is in uv's cache wherever `make venv` ran; a requirement the lock
    # lacks fails either way.
    out = subprocess.run([str(uv), "lock", "--check", "--offline"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, f"uv.lock is stale: run `uv lock`\n{out.stderr}"
