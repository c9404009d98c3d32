"""Metric curves from a job's per-epoch history (``status.training.history``): a text chart for the
terminal, a PNG with matplotlib. Epochs are counted from 1 on the x axis, as ``kubectl get`` shows them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .view import number

History = Sequence[Mapping[str, Any]]
Series = list[tuple[int, float]]

POINT, LINE, BEST = "●", "·", "★"


class PlotError(Exception):
    """Nothing to plot, or a metric the history lacks: the message says which."""


def metric_names(history: History, monitor: str | None = None) -> list[str]:
    """Every metric the history holds, the monitored one first."""
    return sorted({k for h in history for k in (h.get("metrics") or {})}, key=lambda k: (k != monitor, k))


def series(history: History, metric: str) -> Series:
    """(epoch counted from 1, value) for each epoch with a finite value of ``metric``."""
    out: Series = []
    for h in history:
        epoch, value = h.get("epoch"), (h.get("metrics") or {}).get(metric)
        if isinstance(epoch, int) and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            out.append((epoch + 1, float(value)))
    return out


def choose(history: History, metric: str | None, monitor: str | None) -> list[str]:
    """The metrics to draw: the one asked for, else the monitored one (else the first)."""
    names = metric_names(history, monitor)
    if not history or not names:
        raise PlotError("no validated epoch in status.training.history yet: nothing to plot")
    if metric is None:
        return names[:1]
    if metric not in names:
        raise PlotError(f"metric {metric!r} is not in the history; it has: {', '.join(names)}")
    return [metric]


def text_chart(points: Series, metric: str, width: int = 60, height: int = 12, mode: str | None = None) -> str:
    """A line chart of ``points`` in ``width`` x ``height`` characters, the best value marked."""
    if not points:
        raise PlotError(f"{metric} has no finite value in the history")
    width, height = max(width, 10), max(height, 3)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if y1 == y0:  # a flat line sits in the middle
        y0, y1 = y0 - 1.0, y1 + 1.0

    def col(x: float) -> int:
        return 0 if x1 == x0 else round((x - x0) / (x1 - x0) * (width - 1))

    def row(y: float) -> int:
        return round((y1 - y) / (y1 - y0) * (height - 1))

    grid = [[" "] * width for _ in range(height)]
    for (xa, ya), (xb, yb) in zip(points, points[1:]):
        ca, cb = col(xa), col(xb)
        for c in range(ca + 1, cb):
            grid[row(ya + (yb - ya) * (c - ca) / (cb - ca))][c] = LINE
    for x, y in points:
        grid[row(y)][col(x)] = POINT
    best = (max if mode == "max" else min)(points, key=lambda p: p[1])
    grid[row(best[1])][col(best[0])] = BEST
    labels = {0: number(y1), (height - 1) // 2: number((y0 + y1) / 2), height - 1: number(y0)}
    pad = max(len(v) for v in labels.values())
    lines = [f"{metric}  (best {number(best[1])} at epoch {best[0]}, last {number(ys[-1])} at epoch {xs[-1]})"]
    lines += [f"{labels.get(r, ''):>{pad}} │{''.join(grid[r])}" for r in range(height)]
    lines.append(f"{'':>{pad}} └{'─' * width}")
    left, right = str(x0), str(x1)
    lines.append(f"{'':>{pad}}  {left}{right:>{width - len(left)}}" if x1 != x0 else f"{'':>{pad}}  {left}")
    lines.append(f"{'':>{pad}}  {'epoch':^{width}}")
    return "\n".join(lines)


def png(history: History, metrics: Sequence[str], path: Path, title: str, monitor: str | None = None,
        mode: str | None = None) -> Path:
    """One panel per metric, epochs on the x axis, the best value of the monitored metric marked."""
    try:
        import matplotlib
    except ImportError as e:
        raise PlotError("--output needs matplotlib: pip install 'ltj-cli[plot]'") from e
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    drawn = [(m, series(history, m)) for m in metrics]
    drawn = [(m, s) for m, s in drawn if s]
    if not drawn:
        raise PlotError("no finite metric value in the history: nothing to plot")
    cols = min(3, len(drawn))
    rows = math.ceil(len(drawn) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    try:
        for ax, (metric, points) in zip(axes.flat, drawn):
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
            if metric == monitor:
                best = (max if mode == "max" else min)(points, key=lambda p: p[1])
                ax.plot([best[0]], [best[1]], marker="*", markersize=12, color="tab:red", linestyle="none",
                        label=f"best {number(best[1])}")
                ax.legend(loc="best")
            ax.set_title(metric)
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.3)
        for ax in list(axes.flat)[len(drawn):]:
            ax.set_visible(False)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
