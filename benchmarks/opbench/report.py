"""The operator benchmark's report: tables for the terminal and the README, CSV, plot."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    from .measure import ScalePoint, Workload

OTHERS = ("peer", "peer-fast", "floor", "floor-all", "floor-job")  # what ours is compared with


def ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return float("nan")
    return a / b


def fmt(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def seconds(value: float) -> str:
    """A duration: milliseconds resolution below a second (where one job's times differ)."""
    return fmt(value, 3 if abs(value) < 1 else 2)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (right-aligned numbers), for the terminal and the README alike."""
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"]
    for r in cells[1:]:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |")
    return "\n".join(lines)


def workload_rows(results: Sequence[Workload]) -> list[dict[str, Any]]:
    rows = []
    by = {(w.system, w.n): w.summary() for w in results}
    for w in results:
        s = by[(w.system, w.n)]
        row: dict[str, Any] = {"system": w.system, "n": w.n, **s}
        row.update({f"cpu_s:{proc}": v for proc, v in w.cluster_cpu_s.items()})
        if w.system == "ltj":
            for other in OTHERS:
                o = by.get((other, w.n))
                if o is not None:
                    row[f"created_vs_{other}"] = ratio(s["created_total_s"], o["created_total_s"])
                    row[f"running_vs_{other}"] = ratio(s["running_total_s"], o["running_total_s"])
        base = by.get(("ltj", w.n))
        if w.system == "ltj-kueue" and base is not None:
            # What queueing through Kueue adds to the same jobs: seconds per job (p50) and to the whole.
            for m in ("created_p50_s", "running_p50_s", "running_total_s"):
                row[f"kueue_adds_{m}"] = s[m] - base[m]
        rows.append(row)
    return rows


def print_report(rows: Sequence[Mapping[str, Any]], points: Sequence[ScalePoint]) -> str:
    parts = []
    parts.append(table(
        ["system", "N", "pods p50 s", "pods p99 s", "pods total s", "Running p50 s", "Running p99 s",
         "Running total s", "API req/job", "writes/job", "cluster writes/job", "peak RSS MiB", "CPU s",
         "cluster CPU s"],
        [[r["system"], r["n"], *(seconds(r[k]) for k in ("created_p50_s", "created_p99_s", "created_total_s",
                                                          "running_p50_s", "running_p99_s", "running_total_s")), fmt(r["requests_per_job"], 1), fmt(r["writes_per_job"], 1),
          fmt(r["cluster_writes_per_job"], 1), fmt(r["rss_peak_mib"], 0), fmt(r["cpu_s"], 1), fmt(r["cluster_cpu_s"], 1)] for r in rows]))
    procs = sorted({k for r in rows for k in r if k.startswith("cpu_s:")},
                   key=lambda k: -sum(r.get(k, 0.0) for r in rows))
    if procs:
        # Where the machine's CPU went (operators under their system's name): what the time follows.
        parts.append(table(["system", "N", *[k.split(":", 1)[1] for k in procs]],
                           [[r["system"], r["n"], *[fmt(r.get(k, float("nan")), 1) for k in procs]] for r in rows]))
    ratios = [r for r in rows if r["system"] == "ltj"]
    cols = [f"{m}_vs_{o}" for o in OTHERS for m in ("created", "running") if any(f"{m}_vs_{o}" in r for r in ratios)]
    if cols:
        parts.append(table(["N", *[c.replace("created", "pods").replace("_vs_", " ltj/") for c in cols]],
                           [[r["n"], *[r.get(c, float("nan")) for c in cols]] for r in ratios]))
    kueue = [r for r in rows if "kueue_adds_running_total_s" in r]
    if kueue:
        parts.append(table(["N", "Kueue adds: pods p50 s", "Running p50 s", "Running total s"],
                           [[r["n"], *(seconds(r[f"kueue_adds_{m}"]) for m in
                                       ("created_p50_s", "running_p50_s", "running_total_s"))] for r in kueue]))
    if points:
        parts.append(table(["system", "jobs", "finished", "RSS MiB", "peak RSS MiB", "idle req/min",
                            "new job pods s", "new job Running s", "fill s"],
                           [[p.system, p.jobs, p.finished, fmt(p.rss_mib, 0), fmt(p.rss_peak_mib, 0),
                             fmt(p.idle_requests_per_min, 0), seconds(p.new_created_s), seconds(p.new_running_s),
                             fmt(p.fill_s, 0)]
                            for p in points]))
        by_sys: dict[str, list[ScalePoint]] = {}
        for p in points:
            by_sys.setdefault(p.system, []).append(p)
        growth = []
        for name, ps in by_sys.items():
            if len(ps) >= 2:
                a, b = ps[0], ps[-1]
                growth.append([name, f"{a.jobs}->{b.jobs}", fmt(b.rss_mib - a.rss_mib, 1),
                               fmt(1024 * (b.rss_mib - a.rss_mib) / (b.jobs - a.jobs), 1),
                               fmt(ratio(b.new_running_s, a.new_running_s), 2)])
        if growth:
            parts.append(table(["system", "jobs", "RSS growth MiB", "KiB/job", "new-job Running x"], growth))
    text = "\n\n".join(parts)
    print(text)
    return text


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], points: Sequence[ScalePoint]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["section", "system", "n", "metric", "value"])
        for r in rows:
            for k, v in r.items():
                if k not in ("system", "n"):
                    w.writerow(["workload", r["system"], r["n"], k, v])
        for p in points:
            for k in ("finished", "rss_mib", "rss_peak_mib", "idle_requests_per_min", "new_created_s",
                      "new_running_s", "fill_s"):
                w.writerow(["scale", p.system, p.jobs, k, getattr(p, k)])


def plot(path: Path, rows: Sequence[Mapping[str, Any]], points: Sequence[ScalePoint]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    systems = list(dict.fromkeys(r["system"] for r in rows))
    for ax, key, title in ((axes[0][0], "created_total_s", "submit -> all pods created (s)"),
                           (axes[0][1], "running_total_s", "submit -> all jobs Running (s)"),
                           (axes[1][0], "requests_per_job", "API requests per job")):
        for s in systems:
            rs = [r for r in rows if r["system"] == s]
            ax.plot([r["n"] for r in rs], [r[key] for r in rs], marker="o", label=s)
        ax.set_xlabel("jobs submitted at once (2 pods each)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax = axes[1][1]
    if points:
        ax2 = ax.twinx()
        for s in dict.fromkeys(p.system for p in points):
            ps = [p for p in points if p.system == s]
            ax.plot([p.jobs for p in ps], [p.rss_mib for p in ps], marker="o", label=f"{s} RSS (MiB)")
            ax2.plot([p.jobs for p in ps], [p.new_running_s for p in ps], marker="x", linestyle="--",
                     label=f"{s} new job Running (s)")
        ax.axhline(150, color="red", linewidth=0.8, linestyle=":", label="150 MiB goal")
        ax.set_xlabel("jobs present (most finished)")
        ax.set_ylabel("operator RSS (MiB)")
        ax2.set_ylabel("one new job: submit -> Running (s)")
        ax.set_title("steady state at scale")
        ax.legend(loc="upper left")
        ax2.legend(loc="lower right")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


