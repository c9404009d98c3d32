"""A small marker on the volume recording that fit (and test) finished.

Lightning does not persist ``trainer.should_stop``: a restarted gang that resumed an
early-stopped run from ``last.ckpt`` would train again. The marker makes a finished run stay
finished; only global rank 0 writes it (atomically), every rank reads it at start.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

FILENAME = "ltj-run-state.json"


@dataclass(frozen=True)
class RunState:
    fit_done: bool = False
    best_path: str | None = None
    best_score: float | None = None
    epochs: int | None = None
    stopped_early: bool = False
    test_done: bool = False
    test_metrics: dict[str, Any] = field(default_factory=dict)

    def with_fit(self, **kw: Any) -> "RunState":
        return replace(self, fit_done=True, **kw)

    def with_test(self, metrics: dict[str, Any]) -> "RunState":
        return replace(self, test_done=True, test_metrics=dict(metrics))


def path_in(root: str) -> str:
    return os.path.join(root, FILENAME)


def read(root: str) -> RunState:
    try:
        with open(path_in(root), encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        return RunState()
    except (OSError, ValueError) as e:
        raise RuntimeError(f"cannot read the run state {path_in(root)}: {e}; delete it to train again") from e
    known = {k: v for k, v in raw.items() if k in RunState.__dataclass_fields__}
    return RunState(**known)


def write(root: str, state: RunState) -> None:
    path = path_in(root)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(state), f, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
