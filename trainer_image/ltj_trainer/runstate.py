"""A small marker on the volume recording that fit (and test) finished.

Lightning does not persist ``trainer.should_stop``: a restarted gang that resumed an
early-stopped run from ``last.ckpt`` would train again. The marker makes a finished run stay
finished, unless it ran to its max_epochs and is given more (then it trains on, as Lightning's
``fit(ckpt_path="last")`` with a higher max_epochs does); only global rank 0 writes it (atomically),
every rank reads it at start.
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

    def trains_on(self, max_epochs: int) -> bool:
        """A finished fit trains on to ``max_epochs`` from its last checkpoint: it ran to its own
        max_epochs (it did not stop early) and ``max_epochs`` is more than it trained."""
        return self.fit_done and not self.stopped_early and self.epochs is not None and max_epochs > self.epochs

    def training_on(self) -> "RunState":
        """The state of a run that trains on: fit and test to do again."""
        return replace(self, fit_done=False, test_done=False, test_metrics={})

    def how_to_train_again(self) -> str:
        if self.stopped_early:
            return (f"it stopped early after {self.epochs} epoch(s), so a higher max_epochs does not train it on; "
                    "to train again, start a new run in another default_root_dir (in Kubernetes: a new job)")
        return (f"it trained {self.epochs} epoch(s); to train on from its last checkpoint, raise max_epochs "
                f"(a job's spec.training.maxEpochs) above {self.epochs}")


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
