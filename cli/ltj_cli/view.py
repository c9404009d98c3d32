"""Pure renderings of LightningTrainingJobs: the job as the API returns it (a JSON object) and the time
in, rich renderables out. No I/O and no clock here, so every view is tested from a status dict.

Numbers are rounded to a few significant digits for reading (the status keeps the full values) and
epochs are counted from 1, as the job's printer columns do.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import posixpath
from typing import Any, Iterable, Mapping, Sequence

from rich import box
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

Job = Mapping[str, Any]

FINAL_PHASES = frozenset({"Succeeded", "Failed"})
DIGITS = 4
PHASE_STYLE = {"Pending": "cyan", "Running": "green", "Restarting": "yellow", "Suspended": "dim",
               "Succeeded": "bold green", "Failed": "bold red"}
# describe: the newest epochs shown row by row (the whole history is summarized above them).
HISTORY_ROWS = 10


# -- values ------------------------------------------------------------------------------------------
def parse_time(value: Any) -> float | None:
    """Seconds since the epoch from an RFC 3339 time, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp()


def duration(seconds: float | None) -> str:
    """Like kubectl's ages: 45s, 3m05s, 2h04m, 3d05h."""
    if seconds is None:
        return "-"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def age(value: Any, now: float) -> str:
    t = parse_time(value)
    return duration(now - t) if t is not None else "-"


def number(value: Any) -> str:
    """A metric value rounded for reading; n/a for null (NaN or infinity in the trainer)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:.{DIGITS}g}"


def metrics_text(metrics: Any) -> str:
    if not isinstance(metrics, Mapping) or not metrics:
        return "-"
    return "  ".join(f"{k}={number(v)}" for k, v in sorted(metrics.items()))


# -- what a job says ---------------------------------------------------------------------------------
def status(job: Job) -> Mapping[str, Any]:
    s = job.get("status")
    return s if isinstance(s, Mapping) else {}


def training(job: Job) -> Mapping[str, Any]:
    t = status(job).get("training")
    return t if isinstance(t, Mapping) else {}


def phase(job: Job) -> str:
    # The CRD defaults the phase to Pending; a job read from an older server may still lack it.
    return str(status(job).get("phase") or "Pending")


def is_final(job: Job) -> bool:
    return phase(job) in FINAL_PHASES


def name(job: Job) -> str:
    return str((job.get("metadata") or {}).get("name", "?"))


def namespace(job: Job) -> str:
    return str((job.get("metadata") or {}).get("namespace", ""))


def condition(job: Job, type_: str) -> Mapping[str, Any] | None:
    for c in status(job).get("conditions") or ():
        if isinstance(c, Mapping) and c.get("type") == type_:
            return c
    return None


def epoch_text(t: Mapping[str, Any]) -> str:
    shown = (t.get("display") or {}).get("epoch")
    if shown:
        return str(shown)
    epoch, max_epochs = t.get("epoch"), t.get("maxEpochs")
    if not isinstance(epoch, int):
        return "-"
    return f"{epoch + 1}" + (f"/{max_epochs}" if isinstance(max_epochs, int) and max_epochs else "")


def progress_text(t: Mapping[str, Any]) -> str:
    p = t.get("progress")
    return f"{p:.0f}%" if isinstance(p, (int, float)) else "-"


def eta_text(job: Job) -> str:
    t = training(job)
    if t.get("finished"):
        return "done"
    if is_final(job):
        return "-"
    eta = t.get("etaSeconds")
    return duration(eta) if isinstance(eta, (int, float)) else "-"


def best_text(t: Mapping[str, Any], full_path: bool = False) -> str:
    score = t.get("bestScore")
    best = (t.get("display") or {}).get("best")
    if not best and isinstance(score, (int, float)):
        best = (f"{t['monitor']}=" if t.get("monitor") else "") + number(score)
    if not best:
        return "-"
    ckpt = t.get("bestCheckpoint")
    if isinstance(ckpt, str) and ckpt:
        best += f"  ({ckpt if full_path else posixpath.basename(ckpt) or ckpt})"
    return best


def headline(job: Job) -> tuple[str, str] | None:
    """The one message worth a glance, with its style: why it failed, stopped early or seems stuck."""
    s, t = status(job), training(job)
    failure = s.get("failure") if isinstance(s.get("failure"), Mapping) else {}
    if phase(job) == "Failed":
        failed = condition(job, "Failed") or {}
        return str(failure.get("message") or failed.get("message") or "failed"), "red"
    for type_ in ("Stalled", "Unschedulable", "VolumeNotShared"):
        c = condition(job, type_)
        if c and c.get("status") == "True":
            return f"{type_}: {c.get('message', '')}", "yellow"
    if phase(job) == "Restarting" and failure.get("message"):
        return f"restarting after: {failure['message']}", "yellow"
    early = t.get("earlyStopped")
    if isinstance(early, Mapping) and early:
        epoch = early.get("epoch")
        at = f" at epoch {epoch + 1}" if isinstance(epoch, int) else ""
        return f"stopped early{at}: {early.get('message') or early.get('reason') or ''}".rstrip(": "), "cyan"
    error = t.get("error")
    if isinstance(error, Mapping) and error.get("message") and not t.get("finished"):
        return f"trainer error: {error['message']}", "red"
    return None


def _phase_text(job: Job) -> Text:
    return Text(phase(job), style=PHASE_STYLE.get(phase(job), ""))


# -- get: the table of jobs ----------------------------------------------------------------------------
def jobs_table(jobs: Iterable[Job], now: float, with_namespace: bool = False) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in (["NAMESPACE"] if with_namespace else []) + [
            "NAME", "PHASE", "EPOCH", "STEP", "PROGRESS", "ETA", "BEST", "RESTARTS", "AGE"]:
        table.add_column(column, no_wrap=column != "BEST")
    for job in sorted(jobs, key=lambda j: (namespace(j), name(j))):
        t, s = training(job), status(job)
        step = t.get("step")
        row = [name(job), _phase_text(job), epoch_text(t), str(step) if isinstance(step, int) else "-",
               progress_text(t), eta_text(job), best_text(t), str(s.get("restarts", 0)),
               age((job.get("metadata") or {}).get("creationTimestamp"), now)]
        table.add_row(*([namespace(job)] if with_namespace else []), *row)
    return table


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def queue_text(s: Mapping[str, Any]) -> str | None:
    """A queued job's Kueue queue and where it stands there: admitted, or Kueue's reason for waiting."""
    q = s.get("queue")
    if not isinstance(q, Mapping) or not q.get("name"):
        return None
    if q.get("admitted"):
        where = f"admitted to ClusterQueue {q['clusterQueue']}" if q.get("clusterQueue") else "admitted"
    else:
        where = ": ".join(str(x) for x in (q.get("reason") or "waiting", q.get("message")) if x)
    return f"{q['name']} ({where})"


def eviction_text(s: Mapping[str, Any]) -> str | None:
    """How often Kueue evicted the job, and the last time why."""
    n, last = s.get("evictions"), s.get("lastEviction")
    if not n:
        return None
    if not isinstance(last, Mapping):
        return str(n)
    why = ": ".join(str(x) for x in (last.get("reason"), last.get("message")) if x)
    return f"{n}, last at {last.get('time')} during attempt {last.get('attempt')} ({why})"


# -- get JOB / watch JOB: the progress view -------------------------------------------------------------
def job_view(job: Job, now: float) -> Panel:
    s, t = status(job), training(job)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    state = _phase_text(job)
    details = []
    if isinstance(s.get("attempt"), int):
        details.append(f"attempt {s['attempt']}")
    if isinstance(s.get("nodes"), int):
        details.append(f"{s.get('readyNodes', 0)}/{s['nodes']} nodes ready")
    details.append(plural(s.get("restarts", 0), "restart"))
    if s.get("evictions"):
        details.append(plural(s["evictions"], "eviction"))
    state.append("  (" + ", ".join(details) + ")", style="dim")
    grid.add_row("Phase", state)
    if queue_text(s):
        grid.add_row("Queue", queue_text(s))
    step = t.get("step")
    grid.add_row("Epoch", f"{epoch_text(t)}   step {step if isinstance(step, int) else '-'}")
    p = t.get("progress")
    bar = Table.grid(padding=(0, 1))
    bar.add_column(width=30)
    bar.add_column(no_wrap=True)
    bar.add_row(ProgressBar(total=100, completed=float(p) if isinstance(p, (int, float)) else 0, width=30),
                f"{progress_text(t)}   ETA {eta_text(job)}")
    grid.add_row("Progress", bar)
    grid.add_row("Metrics", metrics_text(t.get("metrics")))
    grid.add_row("Best", best_text(t))
    if t.get("testMetrics"):
        grid.add_row("Test", metrics_text(t.get("testMetrics")))
    if t.get("lastEventTime"):
        grid.add_row("Last event", f"{age(t.get('lastEventTime'), now)} ago")
    rows: list[RenderableType] = [grid]
    line = headline(job)
    if line:
        rows.append(Text(line[0], style=line[1]))
    return Panel(Group(*rows), title=f"{namespace(job)}/{name(job)}", title_align="left", box=box.ROUNDED)


# -- describe ---------------------------------------------------------------------------------------
def _fields(rows: Sequence[tuple[str, Any]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key, value in rows:
        if value not in (None, "", [], {}):
            grid.add_row(key, value if isinstance(value, Text) else str(value))
    return grid


def _section(title: str, body: RenderableType) -> Group:
    return Group(Text(title, style="bold"), Padding(body, (0, 0, 0, 2)))


def _spec_rows(spec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    model, data = spec.get("model") or {}, spec.get("data") or {}
    tr, out, run = spec.get("training") or {}, spec.get("output") or {}, spec.get("runPolicy") or {}
    nodes, gpus = spec.get("nodes", 1), spec.get("gpusPerNode", 0)
    monitor = tr.get("monitor") or {}
    early = tr.get("earlyStopping") or {}
    claim = out.get("claimName") or ("a claim per job" if out.get("volumeClaimTemplate") else None)
    policy = ", ".join(f"{k} {run[k]}" for k in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished",
                                                 "cleanPodPolicy", "suspend") if k in run)
    return [
        ("Model", model.get("name")),
        ("Data", f"{data.get('name', '-')}" + (f", batch size {data['batchSize']}" if "batchSize" in data else "")),
        ("Nodes", f"{nodes} x {gpus} GPU{'' if gpus == 1 else 's'}" if gpus else f"{nodes} (CPU)"),
        ("Training", ", ".join(p for p in (
            f"maxEpochs {tr['maxEpochs']}" if "maxEpochs" in tr else "",
            f"precision {tr['precision']}" if "precision" in tr else "",
            f"monitor {monitor.get('metric')} ({monitor.get('mode', 'min')})" if monitor.get("metric") else "",
            (f"early stopping (patience {early.get('patience')})" if early.get("enabled", True) else
             "no early stopping") if early else "") if p)),
        ("Output", claim),
        ("Image", spec.get("image")),
        ("Run policy", policy),
    ]


def _conditions(job: Job, now: float) -> Table | Text:
    conds = [c for c in status(job).get("conditions") or () if isinstance(c, Mapping)]
    if not conds:
        return Text("none yet", style="dim")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"):
        table.add_column(column, no_wrap=column != "MESSAGE")
    for c in conds:
        table.add_row(str(c.get("type")), str(c.get("status")), str(c.get("reason", "")),
                      age(c.get("lastTransitionTime"), now), str(c.get("message", "")))
    return table


def history_summary(history: Sequence[Mapping[str, Any]], monitor: str | None, mode: str | None) -> list[str]:
    """One line per metric: first -> last value over the recorded epochs, and the best with its epoch."""
    if not history:
        return []
    epochs = [h.get("epoch") for h in history if isinstance(h.get("epoch"), int)]
    lines = [f"{len(history)} epoch{'' if len(history) == 1 else 's'} recorded ({min(epochs) + 1}-{max(epochs) + 1})"]
    names = sorted({k for h in history for k in (h.get("metrics") or {})}, key=lambda k: (k != monitor, k))
    for metric in names:
        points = [(h["epoch"], v) for h in history if isinstance(h.get("epoch"), int)
                  for v in [(h.get("metrics") or {}).get(metric)] if isinstance(v, (int, float))]
        if not points:
            lines.append(f"{metric}: n/a")
            continue
        line = f"{metric}: {number(points[0][1])} -> {number(points[-1][1])}"
        if metric == monitor:
            pick = max if mode == "max" else min
            epoch, value = pick(points, key=lambda p: p[1])
            line += f"  (best {number(value)} at epoch {epoch + 1})"
        lines.append(line)
    return lines


def _history(t: Mapping[str, Any]) -> RenderableType:
    history = [h for h in t.get("history") or () if isinstance(h, Mapping)]
    lines = history_summary(history, t.get("monitor"), t.get("mode"))
    if not lines:
        return Text("no validated epoch yet", style="dim")
    names = sorted({k for h in history for k in (h.get("metrics") or {})}, key=lambda k: (k != t.get("monitor"), k))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("EPOCH", justify="right")
    table.add_column("STEP", justify="right")
    for metric in names:
        table.add_column(metric, justify="right")
    for h in history[-HISTORY_ROWS:]:
        m = h.get("metrics") or {}
        epoch = h.get("epoch")
        table.add_row(str(epoch + 1) if isinstance(epoch, int) else "-", str(h.get("step", "-")),
                      *(number(m.get(k)) if k in m else "" for k in names))
    return Group(Text("\n".join(lines)), table)


def _training_rows(job: Job, now: float) -> list[tuple[str, Any]]:
    t = training(job)
    ts = status(job).get("trainerStatus") if isinstance(status(job).get("trainerStatus"), Mapping) else {}
    step = t.get("step")
    early = t.get("earlyStopped") if isinstance(t.get("earlyStopped"), Mapping) else {}
    error = t.get("error") if isinstance(t.get("error"), Mapping) else {}
    top = [f"{number(k.get('score'))}  {k.get('path')}" for k in t.get("topK") or () if isinstance(k, Mapping)]
    return [
        ("Epoch", f"{epoch_text(t)}, step {step if isinstance(step, int) else '-'}"),
        ("Progress", f"{progress_text(t)}, ETA {eta_text(job)}" if t else None),
        ("Metrics", metrics_text(t.get("metrics")) if t.get("metrics") else None),
        ("Best", best_text(t, full_path=True) if t.get("bestScore") is not None or t.get("bestCheckpoint") else None),
        ("Top-k", "\n".join(top)),
        ("Last checkpoint", t.get("lastCheckpoint")),
        ("Resumed from", t.get("resumedFrom")),
        ("Early stopped", f"at epoch {early['epoch'] + 1}: {early.get('message') or early.get('reason', '')}"
         if isinstance(early.get("epoch"), int) else None),
        ("Test metrics", metrics_text(t.get("testMetrics")) if t.get("testMetrics") else None),
        ("Trainer error", f"{error.get('exception', 'error')}: {error.get('message', '')}" if error else None),
        ("Started", f"{t['startedCount']} time(s), world size {t.get('worldSize', '-')}, {t.get('precision', '')}"
         .rstrip(", ") if t.get("startedCount") else None),
        ("Skipped lines", t.get("skippedLines") or None),
        ("Last event", f"{age(t.get('lastEventTime'), now)} ago (seq {t.get('seq')})" if t.get("lastEventTime") else None),
        ("Kubeflow progress", (f"{ts.get('progressPercentage', '-')}%, ETA "
                               f"{duration(ts.get('estimatedRemainingSeconds'))}") if ts else None),
    ]


def _events(events: Sequence[Mapping[str, Any]], now: float) -> Table | Text:
    if not events:
        return Text("none", style="dim")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("TYPE", "REASON", "AGE", "FROM", "MESSAGE"):
        table.add_column(column, no_wrap=column != "MESSAGE")

    def when(e: Mapping[str, Any]) -> str:
        return str(e.get("lastTimestamp") or e.get("eventTime") or (e.get("metadata") or {}).get("creationTimestamp"))

    for e in sorted(events, key=lambda e: parse_time(when(e)) or 0.0):
        count = e.get("count") or 1
        source = (e.get("source") or {}).get("component") or e.get("reportingComponent") or ""
        table.add_row(str(e.get("type", "")), str(e.get("reason", "")),
                      age(when(e), now) + (f" (x{count})" if count > 1 else ""), source, str(e.get("message", "")))
    return table


def describe(job: Job, events: Sequence[Mapping[str, Any]], now: float) -> Group:
    meta, s = job.get("metadata") or {}, status(job)
    failure = s.get("failure") if isinstance(s.get("failure"), Mapping) else {}
    state = _phase_text(job)
    line = headline(job)
    if line:
        state.append(f"  {line[0]}", style=line[1])
    restarts = s.get("restarts", 0)
    return Group(
        _fields([("Name", meta.get("name")), ("Namespace", meta.get("namespace")),
                 ("Created", f"{meta.get('creationTimestamp')} ({age(meta.get('creationTimestamp'), now)} ago)")]),
        _section("Spec", _fields(_spec_rows(job.get("spec") or {}))),
        _section("Status", _fields([
            ("Phase", state),
            ("Attempt", f"{s['attempt']} ({plural(restarts, 'restart')})" if "attempt" in s else None),
            ("Nodes ready", f"{s.get('readyNodes', 0)}/{s['nodes']}" if "nodes" in s else None),
            ("Started", s.get("startTime")), ("Completed", s.get("completionTime")),
            ("Resume from", s.get("resumeFrom")),
            ("Queue", queue_text(s)),
            ("Workload", (s.get("queue") or {}).get("workload") if isinstance(s.get("queue"), Mapping) else None),
            ("Evictions", eviction_text(s)),
            ("Failure", failure.get("message")),
        ])),
        _section("Conditions", _conditions(job, now)),
        _section("Training", _fields(_training_rows(job, now)) if training(job)
                 else Text("no training event yet", style="dim")),
        _section("History", _history(training(job))),
        _section("Events", _events(events, now)),
    )


# -- text ------------------------------------------------------------------------------------------------
def render_text(renderable: RenderableType, width: int = 120) -> str:
    """The renderable as plain text (no colour, no cursor control): for pipes, logs and tests."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=False, no_color=True, highlight=False,
            color_system=None).print(renderable)
    return buffer.getvalue()
