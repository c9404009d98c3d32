"""The compact final summary the trainer writes to its container's termination message.

The operator reads it (:func:`parse`) so the final state survives a relay that never reported.
Kubernetes keeps at most 4 KiB of ``terminationMessagePath``, so the summary is trimmed to fit
rather than truncated into invalid JSON.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

MAX_BYTES = 4096
# Margin below the kubelet limit: some runtimes count a trailing newline or more.
LIMIT = MAX_BYTES - 96

# The fields every summary carries (``build``); ``exit_code``, ``error``, ``interrupted`` and
# ``test_metrics_truncated`` appear only when they apply.
KEYS = ("best_checkpoint", "best_score", "monitor", "epochs", "early_stopped", "test_metrics", "last_seq")

log = logging.getLogger(__name__)


def build(
    *,
    best_checkpoint: str | None = None,
    best_score: float | None = None,
    monitor: str | None = None,
    epochs: int | None = None,
    early_stopped: bool | None = None,
    test_metrics: Mapping[str, Any] | None = None,
    last_seq: int | None = None,
    exit_code: int | None = None,
    error: str | None = None,
    interrupted: str | None = None,
) -> dict[str, Any]:
    """Every one of KEYS, then ``exit_code``, ``error`` and ``interrupted`` when set."""
    out: dict[str, Any] = {
        "best_checkpoint": best_checkpoint,
        "best_score": best_score,
        "monitor": monitor,
        "epochs": epochs,
        "early_stopped": early_stopped,
        "test_metrics": dict(test_metrics) if test_metrics else {},
        "last_seq": last_seq,
    }
    if exit_code is not None:
        out["exit_code"] = exit_code
    if error:
        out["error"] = error
    if interrupted:
        out["interrupted"] = interrupted
    return out


def _dump(summary: Mapping[str, Any]) -> bytes:
    return json.dumps(summary, separators=(",", ":"), allow_nan=False, default=str).encode()


def _shorten(text: str, max_bytes: int, keep_end: bool) -> str:
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    cut = max_bytes - 3
    return "..." + raw[-cut:].decode(errors="ignore") if keep_end else raw[:cut].decode(errors="ignore") + "..."


# Caps that leave room for the rest: the error's start says what failed, a checkpoint path's
# end (its file name) says which checkpoint.
_CAPS = (("error", 1536, False), ("best_checkpoint", 1024, True))


def render(summary: Mapping[str, Any], limit: int = LIMIT) -> bytes:
    """JSON no longer than ``limit`` bytes: long strings are capped, then test metrics dropped."""
    s = dict(summary)
    for key, cap, keep_end in _CAPS:
        if isinstance(s.get(key), str):
            s[key] = _shorten(s[key], cap, keep_end)
    data = _dump(s)
    if len(data) <= limit:
        return data
    metrics = dict(s.get("test_metrics") or {})
    for key in sorted(metrics, key=lambda k: (-len(k), k)):
        del metrics[key]
        s["test_metrics"], s["test_metrics_truncated"] = dict(metrics), True
        data = _dump(s)
        if len(data) <= limit:
            return data
    return _dump({"error": "summary too large", "last_seq": s.get("last_seq")})


def write(path: str, summary: Mapping[str, Any]) -> bool:
    """Best effort: a laptop run has no /dev/termination-log, which is not an error."""
    data = render(summary)
    try:
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            log.info("termination log %s not written: %s does not exist", path, parent)
            return False
        with open(path, "wb") as f:
            f.write(data)
        return True
    except OSError as e:
        log.info("termination log %s not written: %s", path, e)
        return False


def parse(message: str | None) -> dict[str, Any] | None:
    """The summary in a termination message, or None when the message is something else (with
    FallbackToLogsOnError a failed trainer's message may be its log tail)."""
    if not message or not message.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(message)
    except ValueError:
        return None
    if not isinstance(data, dict) or not set(KEYS) & data.keys():
        return None
    return data
