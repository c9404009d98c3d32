"""The Debian packages the local cluster's real parts come from (containerd, runc, the CNI plugins,
buildah, ...): each known by a command or file it provides, installed with apt-get when missing."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _present(provides: str) -> bool:
    return os.path.exists(provides) if provides.startswith("/") else shutil.which(provides) is not None


def missing(packages: Mapping[str, str]) -> list[str]:
    """The packages of ``packages`` (what it provides -> package name) that are not installed."""
    return sorted({pkg for provides, pkg in packages.items() if not _present(provides)})


def unavailable(packages: Mapping[str, str], what: str) -> str | None:
    """Why ``what`` cannot run here (one line), or None: it needs root, and apt-get for what is missing."""
    if os.geteuid() != 0:
        return f"{what} needs root"
    absent = missing(packages)
    if absent and shutil.which("apt-get") is None:
        return f"{what} needs the Debian packages {', '.join(absent)} and there is no apt-get"
    return None


def ensure(packages: Mapping[str, str]) -> None:
    """Installs the missing packages (apt-get; none of them starts a service on install here)."""
    absent = missing(packages)
    if not absent:
        return
    log.info("installing %s (apt-get)", " ".join(absent))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *absent], check=True, env=env,
                   stdout=subprocess.DEVNULL)
