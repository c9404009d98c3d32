"""Writes a set of files into a volume directory atomically, the way the kubelet's AtomicWriter does.

Layout: `<dir>/..<timestamp>/` holds the files, `<dir>/..data` is a symlink to it, and each
top-level entry `<dir>/<name>` is a symlink into `..data/`. Swapping `..data` with a rename makes
an update visible at once to containers that bind-mounted the directory.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"


class PayloadError(ValueError):
    pass


def validate_path(path: str) -> None:
    if not path or path.startswith("/") or ".." in Path(path).parts or path.startswith(".."):
        raise PayloadError(f"invalid file path {path!r}: must be relative, without '..'")


def _current(target: Path) -> dict[str, tuple[bytes, int]] | None:
    data_dir = target / DATA
    if not data_dir.is_symlink():
        return None
    root = target / os.readlink(data_dir)
    out: dict[str, tuple[bytes, int]] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath, name)
            out[str(p.relative_to(root))] = (p.read_bytes(), p.stat().st_mode & 0o7777)
    return out


def write_payload(target: Path, payload: Mapping[str, tuple[bytes, int]]) -> bool:
    """Make target hold exactly payload ({relative path: (content, mode)}); False if unchanged."""
    for path in payload:
        validate_path(path)
    target.mkdir(parents=True, exist_ok=True)
    if _current(target) == dict(payload):
        return False
    ts_dir = target / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.time_ns() % 10**9}"
    ts_dir.mkdir()
    for path, (content, mode) in payload.items():
        p = ts_dir / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        os.chmod(p, mode)
    old = os.readlink(target / DATA) if (target / DATA).is_symlink() else None
    tmp_link = target / "..data_tmp"
    if tmp_link.is_symlink():
        tmp_link.unlink()
    os.symlink(ts_dir.name, tmp_link)
    os.replace(tmp_link, target / DATA)
    tops = {path.split("/", 1)[0] for path in payload}
    for top in tops:
        link = target / top
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link) if link.is_dir() else link.unlink()
            os.symlink(f"{DATA}/{top}", link)
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.is_symlink() and entry.name not in tops:
            entry.unlink()
    if old and old != ts_dir.name:
        shutil.rmtree(target / old, ignore_errors=True)
    return True
