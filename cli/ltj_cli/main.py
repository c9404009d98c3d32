"""``kubectl ltj``: get, watch, logs, plot and describe LightningTrainingJobs.

Installed as ``kubectl-ltj`` on PATH, kubectl runs it as ``kubectl ltj ...``. Flags as kubectl's:
``-n/--namespace``, ``--kubeconfig``, ``--context`` (before or after the command), ``$KUBECONFIG``.
Exit codes: 0 done; 1 an error (on stderr), or ``watch JOB`` ending with the job Failed; 2 bad usage;
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.text import Text

from . import logs, plot, view
from .cluster import CliError, Cluster, JobLogs, connect

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _console(file: Any = None) -> Any:
    from rich.console import Console

    out = file or sys.stdout
    # Piped output gets plain text at a width that keeps table rows on one line.
    width = None if out.isatty() or "COLUMNS" in os.environ else 160
    return Console(file=out, highlight=False, width=width)


def _key(job: dict[str, Any]) -> tuple[str, str]:
    return view.namespace(job), view.name(job)


# -- commands ----------------------------------------------------------------------------------------
def cmd_get(cluster: Cluster, args: argparse.Namespace) -> int:
    console = _console()
    if args.job:
        console.print(view.job_view(cluster.job(args.job), time.time()))
        return EXIT_OK
    jobs = cluster.jobs(args.all_namespaces)
    if not jobs:
        where = "any namespace" if args.all_namespaces else f"{cluster.namespace} namespace"
        sys.stderr.write(f"No LightningTrainingJobs found in {where}.\n")
        return EXIT_OK
    console.print(view.jobs_table(jobs, time.time(), with_namespace=args.all_namespaces))
    return EXIT_OK


def cmd_watch(cluster: Cluster, args: argparse.Namespace) -> int:
    """Redraws on every change the API's watch reports; ``watch JOB`` ends when the job is final."""
    console = _console()
    jobs: dict[tuple[str, str], dict[str, Any]] = {}

    def render(now: float) -> Any:
        if args.job:
            job = next(iter(jobs.values()), None)
            return view.job_view(job, now) if job else Text(f"waiting for {args.job}...")
        return view.jobs_table(jobs.values(), now, with_namespace=args.all_namespaces)

    if args.job:
        cluster.job(args.job)  # a clear error for a job that does not exist, before waiting on it
    live = None
    if console.is_terminal:
        from rich.live import Live

        # Redrawn each second from the last state seen, so ages and ETAs tick without API calls.
        live = Live(get_renderable=lambda: render(time.time()), console=console, refresh_per_second=1)
        live.start()
    try:
        for kind, job in cluster.watch_jobs(args.job, args.all_namespaces):
            if kind == "DELETED":
                jobs.pop(_key(job), None)
                if args.job:
                    sys.stderr.write(f"error: {args.job} was deleted\n")
                    return EXIT_ERROR
            else:
                jobs[_key(job)] = job
            if live is None:
                console.print(render(time.time()))  # a pipe gets one rendering per change
            if args.job and kind != "DELETED" and view.is_final(job):
                return EXIT_OK if view.phase(job) == "Succeeded" else EXIT_ERROR
    finally:
        if live is not None:
            live.stop()
    return EXIT_OK


def cmd_logs(cluster: Cluster, args: argparse.Namespace) -> int:
    job = cluster.job(args.job)
    nodes = (job.get("spec") or {}).get("nodes", 1)
    if args.rank is not None and not 0 <= args.rank < nodes:
        raise CliError(f"--rank: {args.rank} is not a rank of {args.job}, which has {nodes} node(s): 0 to {nodes - 1}")
    ranks = [args.rank] if args.rank is not None else list(range(nodes))
    return logs.stream(JobLogs(cluster, args.job), ranks, args.follow)


def cmd_plot(cluster: Cluster, args: argparse.Namespace) -> int:
    job = cluster.job(args.job)
    t = view.training(job)
    history = [h for h in t.get("history") or () if isinstance(h, dict)]
    monitor, mode = t.get("monitor"), t.get("mode")
    try:
        chosen = plot.choose(history, args.metric, monitor)  # says why when there is nothing to plot
        if args.output:
            metrics = chosen if args.metric else plot.metric_names(history, monitor)
            path = plot.png(history, metrics, Path(args.output), f"{view.namespace(job)}/{view.name(job)}",
                            monitor, mode)
            sys.stdout.write(f"wrote {path}\n")
            return EXIT_OK
        (metric,) = chosen
        columns = shutil.get_terminal_size((100, 24)).columns
        chart = plot.text_chart(plot.series(history, metric), metric, width=min(120, max(20, columns - 16)),
                                height=args.height, mode=mode if metric == monitor else None)
    except plot.PlotError as e:
        raise CliError(str(e)) from e
    sys.stdout.write(chart + "\n")
    others = [m for m in plot.metric_names(history, monitor) if m != metric]
    if others:
        sys.stdout.write(f"\nother metrics: {', '.join(others)}  (kubectl ltj plot {args.job} METRIC)\n")
    return EXIT_OK


def cmd_describe(cluster: Cluster, args: argparse.Namespace) -> int:
    job = cluster.job(args.job)
    _console().print(view.describe(job, cluster.events(job), time.time()))
    return EXIT_OK


# -- the command line ----------------------------------------------------------------------------------
def _connection_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("-n", "--namespace", default=default, help="the namespace (default: the context's)")
    parser.add_argument("--kubeconfig", default=default, help="the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", default=default, help="the kubeconfig context to use")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kubectl ltj", description="Watch and inspect LightningTrainingJobs.")
    _connection_flags(top, None)
    # After the command too (kubectl ltj get -n team), without overwriting a value given before it.
    flags = argparse.ArgumentParser(add_help=False)
    _connection_flags(flags, argparse.SUPPRESS)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[Cluster, argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[flags], help=help, description=help)
        p.set_defaults(run=fn)
        return p

    p = add("get", cmd_get, "the jobs with their progress, or one job's progress view")
    p.add_argument("job", nargs="?", metavar="JOB")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="jobs of every namespace")
    p = add("watch", cmd_watch, "like get, redrawn on every change; with JOB, until the job is final "
                                "(exit code 0 if it succeeded, 1 if it failed)")
    p.add_argument("job", nargs="?", metavar="JOB")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="jobs of every namespace")
    p = add("logs", cmd_logs, "every rank's trainer log, prefixed [rank R]; waits for the pods")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--rank", type=int, help="only this node rank")
    p.add_argument("-f", "--follow", action="store_true", help="follow, across gang restarts, until the job is final")
    p = add("plot", cmd_plot, "a metric's curve over the epochs, from the job's per-epoch history")
    p.add_argument("job", metavar="JOB")
    p.add_argument("metric", nargs="?", metavar="METRIC", help="default: the monitored metric")
    p.add_argument("-o", "--output", metavar="FILE.png", help="write a PNG (every metric, or METRIC) with matplotlib")
    p.add_argument("--height", type=int, default=12, help="terminal chart height in lines")
    p = add("describe", cmd_describe, "the job in full: spec, status, conditions, training, history, events")
    p.add_argument("job", metavar="JOB")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits with 2 and the usage on bad input
    try:
        cluster = connect(args.kubeconfig, args.context, args.namespace)
        return args.run(cluster, args)
    except CliError as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
