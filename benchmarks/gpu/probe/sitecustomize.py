"""Measurement probe for benchmarks/gpu_throughput.py, loaded into every Python process of a run.

The benchmark puts this directory on PYTHONPATH and names an output directory in
LTJ_BENCH_PROBE_DIR; Python imports ``sitecustomize`` at start-up, so the ltj trainer's workers
(started by torchrun) and the plain script are measured alike without either knowing. Without the
variable it does nothing.

Per process that took optimizer steps it writes ``probe-<rank>-<pid>.json`` at exit:
- ``first_step_time``: wall clock (time.time) when the first optimizer step had finished on the
  device (synchronised once);
- ``step_seconds``: time between consecutive optimizer steps. On CUDA these come from events
  recorded on the stream after each step, so they are the GPU's own timeline (data stalls
  included) without synchronising every step; on CPU from the wall clock;
- ``max_memory_allocated``: torch.cuda.max_memory_allocated of the process's device (CUDA only).
An optimizer step that 16-mixed's GradScaler skips (inf/NaN gradients) calls no hook, so that
interval covers two steps; the benchmark uses the median interval, which such rare steps do not move.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from typing import Any

_OUT = os.environ.get("LTJ_BENCH_PROBE_DIR")


def _install(out: str) -> None:
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    pid = os.getpid()
    marks: list[Any] = []  # CUDA events, or wall-clock floats on CPU
    state: dict[str, Any] = {"first": None, "device": None}

    def after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        device = optimizer.param_groups[0]["params"][0].device
        if device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            marks.append(event)
        else:
            marks.append(time.perf_counter())
        if state["first"] is None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            state["first"], state["device"] = time.time(), device

    def dump() -> None:
        # DataLoader workers are forked from this process and inherit the hook's state; only the
        # process that installed it reports.
        if os.getpid() != pid or not marks:
            return
        device = state["device"]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            seconds = [a.elapsed_time(b) / 1000.0 for a, b in zip(marks, marks[1:])]
            peak = torch.cuda.max_memory_allocated(device)
            name = torch.cuda.get_device_name(device)
        else:
            seconds = [b - a for a, b in zip(marks, marks[1:])]
            peak, name = None, "cpu"
        rank = int(os.environ.get("RANK", "0"))
        record = {"rank": rank, "pid": pid, "device": str(device), "device_name": name, "steps": len(marks),
                  "first_step_time": state["first"], "step_seconds": seconds, "max_memory_allocated": peak}
        with open(os.path.join(out, f"probe-{rank}-{pid}.json"), "w", encoding="utf-8") as f:
            json.dump(record, f)

    register_optimizer_step_post_hook(after_step)
    atexit.register(dump)


if _OUT:
    _install(_OUT)
