"""The project's images, built here without a registry: buildah over a debootstrap base.

`python -m ltj_localcluster.imagebuild [--only NAME...]` (root). Five images, each cached as a
docker-archive plus a JSON manifest under ${LTJ_CACHE:-~/.cache/ltj}/images/<name>/, keyed by a
sha256 of its inputs, so a build runs only when an input changed:

  base          stand-in for python:3.11-slim-bookworm: a trimmed debootstrap minbase with python3
  trainer-base  stand-in for pytorch/pytorch: base + the venv's torch version, from uv's cache
  pause         the sandbox image registry.k8s.io/pause:3.10: Debian's static catatonit
  operator      operator/Dockerfile over base
  trainer       trainer_image/Dockerfile over trainer-base

The Dockerfiles take their base as the build argument BASE_IMAGE, so they build unchanged.
ensure_images() returns the archives; load_into_containerd() imports them for a real node.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import hostpkgs

REPO = Path(__file__).resolve().parents[3]

# Bump when a recipe below changes in a way its hashed inputs do not show: every image rebuilds.
RECIPE_VERSION = 1
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-pip", "python-is-python3", "ca-certificates")
PYTHON = "3.11"  # bookworm's python3
GLIBC = "2_36"  # bookworm's: torch's wheels are chosen for the image, whatever the host runs
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_ARG = "BASE_IMAGE"  # the Dockerfiles' build argument naming their base
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEFAULT_IMAGES = ("pause", "operator", "trainer")
CONTAINERD_SOCK = "/run/containerd/containerd.sock"  # the real node's containerd (its default address)
APT_PACKAGES = {"buildah": "buildah", "debootstrap": "debootstrap", "catatonit": "catatonit", "file": "file"}


@dataclass(frozen=True)
class Recipe:
    repository: str
    base: str | None  # the image this one is built FROM
    minutes: float  # a first build on 2 cores, for the progress line
    dockerfile: str | None = None  # relative to the repository root
    tag: str | None = None  # a fixed tag instead of the input hash


RECIPES = {
    "base": Recipe("localhost/ltj-base", None, 1.5),
    "trainer-base": Recipe("localhost/ltj-trainer-base", "base", 3),
    # containerd's sandbox_image: it must exist locally, nothing is pulled.
    "pause": Recipe("registry.k8s.io/pause", None, 0.1, tag="3.10"),
    "operator": Recipe("localhost/ltj-operator", "base", 0.5, dockerfile="operator/Dockerfile"),
    "trainer": Recipe("localhost/ltj-trainer", "trainer-base", 1.5, dockerfile="trainer_image/Dockerfile"),
}


class ImageBuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Image:
    name: str
    ref: str
    hash: str
    archive: Path
    size_bytes: int  # the image's uncompressed layers
    build_seconds: float
    built_at: str  # ISO 8601, UTC
    cached: bool = False  # found in the cache by this call rather than built by it

    def write_manifest(self, path: Path) -> None:
        data = {**asdict(self), "archive": str(self.archive)}
        del data["cached"]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)

    @classmethod
    def read_manifest(cls, path: Path) -> Image | None:
        """The cached image the manifest describes, or None when it or its archive is missing or unreadable."""
        try:
            data = json.loads(path.read_text())
            image = cls(**{**data, "archive": Path(data["archive"]), "cached": True})
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return image if image.archive.is_file() else None


def log(message: str) -> None:
    print(f"[imagebuild] {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    return Path(os.environ.get("LTJ_CACHE") or Path.home() / ".cache" / "ltj")


# --- input hashes (pure) -------------------------------------------------------------------------


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps([RECIPE_VERSION, *parts]).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def base_hash() -> str:
    return _digest("base", SUITE, BASE_PACKAGES)


def trainer_base_hash(base: str, torch_version: str) -> str:
    """The stand-in stands for a torch release: its dependencies, pinned to the venv's versions when
    it is built, are not part of the key."""
    return _digest("trainer-base", base, torch_version)


def pause_hash(catatonit: Path) -> str:
    return _digest("pause", _file_sha256(catatonit))


def copy_sources(dockerfile: Path) -> list[str]:
    """The build-context paths the Dockerfile's COPY instructions read.

    Only plain paths are understood; anything else (ADD, globs, variables, --from, the JSON form)
    is an error rather than a hash that could miss an input.
    """
    sources: list[str] = []
    for line in re.sub(r"\\\n", " ", dockerfile.read_text()).splitlines():
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "ADD" or (word.upper() == "COPY" and re.search(r"[*?\[$]|--from", rest)):
            raise ImageBuildError(f"{dockerfile}: {line.strip()!r}: only COPY of plain context paths is hashed")
        if word.upper() == "COPY":
            sources += [arg for arg in rest.split() if not arg.startswith("--")][:-1]
    return sources


def ignore_file(context: Path, dockerfile: Path) -> Path | None:
    """The ignore file a build uses: <Dockerfile>.dockerignore, else the context's .dockerignore."""
    for path in (dockerfile.with_name(dockerfile.name + ".dockerignore"), context / ".dockerignore"):
        if path.is_file():
            return path
    return None


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus `**`) as a regular expression."""
    out = []
    for token in re.findall(r"\*\*/?|\*|\?|\[[^\]]*\]|\\.|[^*?\[\\]+", pattern):
        if token == "**/":
            out.append("(?:.*/)?")
        elif token == "**":
            out.append(".*")
        elif token == "*":
            out.append("[^/]*")
        elif token == "?":
            out.append("[^/]")
        elif token.startswith("["):
            out.append(token)
        else:  # a literal run, or one escaped character
            out.append(re.escape(token[1] if token.startswith("\\") else token))
    return re.compile("".join(out))


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(re-include, pattern) per line of a .dockerignore, in order."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((include, _glob_regex(pattern)))
    return rules


def is_ignored(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for include, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not include
    return ignored


def context_files(context: Path, dockerfile: Path) -> list[str]:
    """The files (and symlinks) the Dockerfile's COPYs take from the context, as sorted relative paths."""
    ignore = ignore_file(context, dockerfile)
    rules = ignore_rules(ignore.read_text()) if ignore else []
    found: set[str] = set()
    for source in copy_sources(dockerfile):
        root = context / os.path.normpath(source)
        if not root.exists() and not root.is_symlink():
            raise ImageBuildError(f"{dockerfile}: COPY source {source} does not exist in {context}")
        candidates = [root] if root.is_file() or root.is_symlink() else root.rglob("*")
        for path in candidates:
            rel = path.relative_to(context).as_posix()
            if (path.is_symlink() or path.is_file()) and not is_ignored(rel, rules):
                found.add(rel)
    return sorted(found)


def dockerfile_hash(context: Path, dockerfile: Path, base: str) -> str:
    """Covers the Dockerfile, its base image's hash and the content and mode of every file it COPYs."""
    files = []
    for rel in context_files(context, dockerfile):
        path = context / rel
        content = "->" + os.readlink(path) if path.is_symlink() else _file_sha256(path)
        files.append((rel, path.lstat().st_mode & 0o7777, content))
    return _digest("dockerfile", dockerfile.read_text(), base, files)


# --- building --------------------------------------------------------------------------------------


def require_tools() -> str | None:
    """Why this machine cannot build the images (one line), or None when it can."""
    return hostpkgs.unavailable(APT_PACKAGES, "building images (buildah, debootstrap)")


def _run(cmd: list[str], log_path: Path, *, capture: bool = False, check: bool = True,
         env: Mapping[str, str] | None = None) -> str:
    """Runs cmd with its output appended to log_path (stdout returned instead when capture)."""
    with log_path.open("ab") as logf:
        logf.write(f"$ {shlex.join(cmd)}\n".encode())
        logf.flush()
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if capture else logf,
                              stderr=logf, env=env)
    if check and proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise ImageBuildError(f"{shlex.join(cmd)} exited {proc.returncode}; the end of {log_path}:\n{tail}")
    return proc.stdout.decode().strip() if capture else ""


def in_storage(ref: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", ref], capture_output=True).returncode == 0


def _image_size(ref: str) -> int:
    out = subprocess.run(["buildah", "inspect", "--type", "image", "--format", "{{.Manifest}}", ref],
                         capture_output=True, text=True, check=True).stdout
    return sum(layer["size"] for layer in json.loads(out)["layers"])


def torch_version() -> str:
    return importlib.metadata.version("torch")


def catatonit() -> Path:
    path = shutil.which("catatonit")
    if path is None:
        raise ImageBuildError("catatonit is not installed (apt-get install catatonit)")
    return Path(path)


def install_scripts(site: Path, bindir: Path) -> None:
    """Moves the console scripts `uv --target` leaves in <site>/bin onto the image's PATH, their
    shebang (the host's interpreter) pointed at the image's python3."""
    scripts = site / "bin"
    if not scripts.is_dir():
        return
    bindir.mkdir(parents=True, exist_ok=True)
    for script in sorted(scripts.iterdir()):
        data = script.read_bytes()
        if re.match(rb"#![^\n]*python", data):
            data = b"#!/usr/bin/python3" + data[data.index(b"\n"):]
        target = bindir / script.name
        target.write_bytes(data)
        target.chmod(0o755)
    shutil.rmtree(scripts)


class _Builder:
    def __init__(self, repo: Path, cache: Path) -> None:
        self.repo = repo
        self.cache = cache
        self.hashes: dict[str, str] = {}

    def hash(self, name: str) -> str:
        if name not in self.hashes:
            recipe = RECIPES[name]
            if name == "base":
                self.hashes[name] = base_hash()
            elif name == "trainer-base":
                self.hashes[name] = trainer_base_hash(self.hash("base"), torch_version())
            elif name == "pause":
                self.hashes[name] = pause_hash(catatonit())
            else:
                assert recipe.dockerfile and recipe.base
                self.hashes[name] = dockerfile_hash(self.repo, self.repo / recipe.dockerfile, self.hash(recipe.base))
        return self.hashes[name]

    def ref(self, name: str) -> str:
        recipe = RECIPES[name]
        return f"{recipe.repository}:{recipe.tag or self.hash(name)[:12]}"

    def path(self, name: str, suffix: str) -> Path:
        return self.cache / name / f"{self.hash(name)[:12]}{suffix}"

    def cached(self, name: str) -> Image | None:
        image = Image.read_manifest(self.path(name, ".json"))
        return image if image and image.hash == self.hash(name) else None

    def ensure(self, name: str) -> Image:
        image = self.cached(name)
        if image:
            log(f"{name}: cached {image.ref} ({image.archive})")
            return image
        return self.build(name)

    def ensure_in_storage(self, name: str) -> str:
        """The image's ref, present in buildah's storage: restored from its archive, else built."""
        ref = self.ref(name)
        if not in_storage(ref):
            image = self.cached(name)
            if image:
                log(f"restoring {ref} into buildah storage from {image.archive}")
                _run(["buildah", "pull", "-q", f"docker-archive:{image.archive}"], self.path(name, ".log"))
            else:
                self.build(name)
        return ref

    def build(self, name: str) -> Image:
        recipe = RECIPES[name]
        base = self.ensure_in_storage(recipe.base) if recipe.base else None
        ref, archive, log_path = self.ref(name), self.path(name, ".tar"), self.path(name, ".log")
        archive.parent.mkdir(parents=True, exist_ok=True)
        previous = [m for m in map(Image.read_manifest, archive.parent.glob("*.json")) if m]
        when = (f"last build: {previous[0].build_seconds / 60:.1f} min" if previous
                else f"first time: ~{recipe.minutes:g} min")
        log(f"building {name} image {ref} ({when}; log: {log_path})")
        log_path.write_bytes(b"")
        start = time.monotonic()
        if name == "base":
            self._build_base(ref, log_path)
        elif name == "trainer-base":
            assert base
            self._build_trainer_base(ref, base, log_path)
        elif name == "pause":
            self._build_pause(ref, log_path)
        else:
            assert recipe.dockerfile and base
            self._build_dockerfile(ref, self.repo / recipe.dockerfile, base, log_path)
        partial = archive.with_name(archive.name + ".partial")
        partial.unlink(missing_ok=True)  # a killed push's; docker-archive does not overwrite
        try:
            _run(["buildah", "push", "-q", ref, f"docker-archive:{partial}:{ref}"], log_path)
            os.replace(partial, archive)
        finally:
            partial.unlink(missing_ok=True)
        image = Image(name, ref, self.hash(name), archive, _image_size(ref), round(time.monotonic() - start, 1),
                      datetime.now(timezone.utc).isoformat(timespec="seconds"))
        image.write_manifest(self.path(name, ".json"))
        for stale in archive.parent.iterdir():
            if not stale.name.startswith(self.hash(name)[:12]):
                stale.unlink()
        log(f"built {name} image {ref} in {image.build_seconds:.0f} s ({image.size_bytes / 2**20:.0f} MiB)")
        return image

    @contextmanager
    def _container(self, image: str, log_path: Path) -> Iterator[str]:
        """A buildah working container, removed whatever happens."""
        container = _run(["buildah", "from", "--quiet", "--pull=never", image], log_path, capture=True)
        try:
            yield container
        finally:
            _run(["buildah", "rm", container], log_path, check=False)

    def _build_base(self, ref: str, log_path: Path) -> None:
        tmp = self.cache / "base.tmp"  # a fixed name: a killed build's is removed by the next one
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            rootfs, tarball = tmp / "rootfs", tmp / "rootfs.tar"
            # A private mount namespace: the /proc and /sys debootstrap mounts in the chroot go away
            # with it, even when it is interrupted.
            _run(["unshare", "--mount", "--propagation", "private", "debootstrap", "--variant=minbase",
                  f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs), MIRROR], log_path)
            for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*"):
                for path in rootfs.glob(pattern):
                    if path.is_file():
                        path.unlink()
            # Official python images have no such marker; with it Debian's pip refuses to install.
            (rootfs / f"usr/lib/python{PYTHON}/EXTERNALLY-MANAGED").unlink()
            # buildah 1.28 has no `import`: `add` of a tar extracts it, owners and modes kept. The
            # runtime mounts its own /dev.
            _run(["tar", "--numeric-owner", "--exclude=./dev/*", "-C", str(rootfs), "-cf", str(tarball), "."],
                 log_path)
            with self._container("scratch", log_path) as c:
                _run(["buildah", "add", c, str(tarball), "/"], log_path)
                _run(["buildah", "config", "--env", f"PATH={BASE_PATH}", "--env", "LANG=C.UTF-8",
                      "--cmd", '["python3"]', c], log_path)
                _run(["buildah", "commit", "-q", c, ref], log_path)
        finally:
            shutil.rmtree(tmp)

    def _build_trainer_base(self, ref: str, base: str, log_path: Path) -> None:
        version = torch_version()
        # The venv's versions of torch's dependencies, so every wheel (CUDA's are large) comes from uv's cache.
        constraints = self.path("trainer-base", ".constraints.txt")
        constraints.write_text("".join(sorted(f"{d.metadata['Name']}=={d.version}\n"
                                              for d in importlib.metadata.distributions())))
        with self._container(base, log_path) as c:
            root = Path(_run(["buildah", "mount", c], log_path, capture=True))
            site = root / f"usr/local/lib/python{PYTHON}/dist-packages"
            _run([str(Path(sys.executable).parent / "uv"), "pip", "install", "--python-version", PYTHON,
                  "--python-platform", f"{platform.machine()}-manylinux_{GLIBC}", "--target", str(site),
                  "--link-mode", "copy", "--constraint", str(constraints), f"torch=={version}"], log_path)
            install_scripts(site, root / "usr/local/bin")
            out = _run(["buildah", "run", "--network", "none", c, "--", "python3", "-c",
                        "import importlib.metadata, torch; print(importlib.metadata.version('torch'))"],
                       log_path, capture=True)
            if out != version:
                raise ImageBuildError(f"the image's python3 finds torch {out!r}, expected {version}")
            # As in the pytorch/pytorch images: what the NVIDIA container runtime reads on a GPU node.
            _run(["buildah", "config", "--env", "NVIDIA_VISIBLE_DEVICES=all",
                  "--env", "NVIDIA_DRIVER_CAPABILITIES=compute,utility", c], log_path)
            _run(["buildah", "commit", "-q", c, ref], log_path)

    def _build_pause(self, ref: str, log_path: Path) -> None:
        binary = catatonit()
        kind = _run(["file", "-bL", str(binary)], log_path, capture=True)
        if "statically linked" not in kind:
            raise ImageBuildError(f"{binary} is not static ({kind}); a scratch image cannot run it")
        with self._container("scratch", log_path) as c:
            _run(["buildah", "copy", "--chmod", "0755", c, str(binary), "/catatonit"], log_path)
            _run(["buildah", "config", "--entrypoint", '["/catatonit", "-P"]', "--user", "65535:65535", c], log_path)
            _run(["buildah", "commit", "-q", c, ref], log_path)

    def _build_dockerfile(self, ref: str, dockerfile: Path, base: str, log_path: Path) -> None:
        # --network host: buildah's private network would leave a cni-podman0 bridge and CNI-*
        # iptables chains behind. The host CA bundle is mounted for pip (an intercepting proxy's CA
        # may be in it), never copied into the image.
        cmd = ["buildah", "bud", "--pull=never", "--network", "host",
               "--build-arg", f"{BASE_ARG}={base}", "-f", str(dockerfile), "-t", ref]
        if CA_BUNDLE.is_file():
            cmd += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
        ignore = ignore_file(self.repo, dockerfile)
        if ignore:
            cmd += ["--ignorefile", str(ignore)]
        _run([*cmd, str(self.repo)], log_path)

    def prune_storage(self) -> None:
        """Removes this recipe's older images (other hashes) of the images hashed in this run."""
        current = {self.ref(name) for name in self.hashes}
        repositories = {RECIPES[name].repository for name in self.hashes if not RECIPES[name].tag}
        listed = subprocess.run(["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"],
                                capture_output=True, text=True, check=True).stdout.split()
        stale = [ref for ref in listed if ref.rsplit(":", 1)[0] in repositories and ref not in current]
        if stale:
            log(f"removing older images from buildah storage: {' '.join(stale)}")
            subprocess.run(["buildah", "rmi", *stale], capture_output=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One build at a time per cache (tests and a shell may ask at once)."""
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another image build to finish (lock {path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def ensure_images(names: Iterable[str] = DEFAULT_IMAGES, *, repo: Path = REPO,
                  cache: Path | None = None) -> dict[str, Image]:
    """The named images as docker-archives, from the cache or built now (with what they are built FROM)."""
    names = tuple(names)
    unknown = sorted(set(names) - RECIPES.keys())
    if unknown:
        raise ValueError(f"unknown images {unknown}; known: {', '.join(RECIPES)}")
    reason = require_tools()
    if reason:
        raise ImageBuildError(reason)
    images_dir = (cache or cache_root()) / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    with _locked(images_dir / ".lock"):
        hostpkgs.ensure(APT_PACKAGES)
        builder = _Builder(repo, images_dir)
        images = {name: builder.ensure(name) for name in names}
        builder.prune_storage()
    return images


def load_into_containerd(images: Iterable[Image] | Mapping[str, Image], address: str = CONTAINERD_SOCK,
                         namespace: str = "k8s.io") -> list[str]:
    """Imports the images containerd does not list yet; returns the refs imported."""
    ctr = ["ctr", "-a", address, "-n", namespace]
    listed = set(subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True,
                                check=True).stdout.split())
    imported = []
    for image in images.values() if isinstance(images, Mapping) else images:
        if image.ref in listed:
            continue
        log(f"importing {image.ref} into containerd ({image.archive.stat().st_size / 2**20:.0f} MiB)")
        proc = subprocess.run([*ctr, "images", "import", str(image.archive)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ImageBuildError(f"ctr images import {image.archive} failed: {proc.stderr.strip()}")
        imported.append(image.ref)
    return imported


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ltj_localcluster.imagebuild",
                                description="Build (or find cached) the project's images with buildah.")
    p.add_argument("--only", nargs="+", choices=list(RECIPES), metavar="NAME",
                   help=f"images to ensure (default: {' '.join(DEFAULT_IMAGES)}; known: {', '.join(RECIPES)})")
    a = p.parse_args(argv)
    try:
        images = ensure_images(a.only or DEFAULT_IMAGES)
    except ImageBuildError as e:
        log(str(e))
        return 1
    for image in images.values():
        how = "cached" if image.cached else f"built in {image.build_seconds:.0f}s"
        print(f"{image.name}\t{image.ref}\t{image.size_bytes / 2**20:.0f} MiB\t{how}\t{image.archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
