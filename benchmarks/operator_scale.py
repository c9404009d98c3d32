"""Operator scale benchmark: ltj-operator side by side with Kubeflow's training-operator and a floor.

    .venv/bin/python benchmarks/operator_scale.py [--sizes 1,50,200] [--scale 100,1000] [--systems ltj,peer,floor]

Systems, each on its own fresh private control plane (etcd, kube-apiserver with an audit log,
controller-manager, scheduler) with two kwok nodes (sigs.k8s.io/kwok: pods bound to them go Running
at once without running anything), one system at a time:
- ltj:   our operator as a subprocess (`python -m ltj_operator`), LightningTrainingJob, 2 nodes.
- peer:  Kubeflow training-operator v1 (benchmarks/peers/build-training-operator.sh), PyTorchJob with
         a Master and one Worker, run out-of-cluster (self-signed webhook certs, no webhook config).
- floor: a plain client creating the same pods (as render.py renders them) and their Service (plus
         the relay's ServiceAccount, which admission needs for rank 0) directly, with
         --floor-concurrency connections: the API server's own limit for that work. `floor-all`
         also creates every other child our operator creates (render.render_children: Role,
         RoleBinding, the trainer's ServiceAccount, NetworkPolicy);
         `floor-job` creates the floor's objects for a LightningTrainingJob it creates first, and
         patches the job's status to Running once when both pods run: the least work any operator
         of this CRD adds to the floor.
- ltj-kueue (only when named in --systems): ltj's jobs queued through Kueue (its controller beside
         the control plane, built on first use) from a LocalQueue whose ClusterQueue has quota for
         all of them: beside ltj, the latency Kueue's admission adds.

Workloads: N jobs (--sizes) of 2 pods each submitted at once, in a fresh namespace and a fresh
operator process each. Measured: per job, submit -> both pods exist (first watch event) and
submit -> job status Running (ltj, floor-job: status.phase; peer: the Running condition; floor,
floor-all: both pods Running); totals from the first submit (workloads of <= 10 jobs run --repeats times, larger ones
--repeats-large times, the median run reported); API requests by the operator's user agents counted in the
API server's audit log (submit .. all Running + settle); the operator's peak RSS (VmHWM) and CPU
seconds in that window. Scale (--scale): jobs whose pods finish at once (ltj.dev/kwok-exit-code=0)
up to each size, then, with the operator idle: its RSS, its API requests per minute, and the time
one new job takes to get its pods and to run.

Writes benchmarks/out/operator_scale.csv (long format: section,system,n,metric,value) and
operator_scale.png, and prints the tables. Needs root (the local control plane makes a Linux bridge),
the binaries of hack/build-binaries.sh (kwok included, built on first use), and Go for the peer
(built once, cached).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from opbench.cluster import Cluster
from opbench.measure import ScalePoint, Workload, median_run, run_scale, run_workload
from opbench.report import print_report, plot, workload_rows, write_csv
from opbench.systems import PEER_FAST_ARGS, Floor, Ltj, LtjKueue, Peer, System

OUT = Path(__file__).resolve().parent / "out"
SYSTEMS = ("ltj", "peer", "peer-fast", "floor", "floor-all", "floor-job", "ltj-kueue")
# ltj-kueue runs only when asked for: its cluster needs Kueue's controller (built on first use).
DEFAULT_SYSTEMS = SYSTEMS[:-1]
OPERATORS = ("ltj", "peer", "peer-fast", "ltj-kueue")  # the systems with an operator process (the scale phase measures it)
SMALL_N = 10  # workloads this small are repeated (--repeats): one job's latency is a few round trips


def parse_sizes(text: str, flag: str) -> list[int]:
    """'1,50,200' -> [1, 50, 200]; '' -> []; errors name the flag."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            n = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag}: {part!r} is not an integer") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"{flag}: sizes must be >= 1, got {n}")
        out.append(n)
    return sorted(set(out))




def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=lambda s: parse_sizes(s, "--sizes"), default=[1, 50, 200],
                    help="jobs submitted at once per workload [1,50,200]")
    ap.add_argument("--scale", type=lambda s: parse_sizes(s, "--scale"), default=[100, 1000],
                    help="jobs present for the steady-state points ('' to skip) [100,1000]")
    ap.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                    help=f"from {','.join(SYSTEMS)} [{','.join(DEFAULT_SYSTEMS)}]")
    ap.add_argument("--scale-systems", default="ltj,peer-fast",
                    help="systems that also run the scale phase (the peer's default rate limit makes filling slow)")
    ap.add_argument("--peer-args", default="", help="extra training-operator flags, e.g. '--controller-threads=4'")
    ap.add_argument("--repeats", type=int, default=5,
                    help=f"runs of each workload of at most {SMALL_N} jobs; the median one is reported [5]")
    ap.add_argument("--repeats-large", type=int, default=3,
                    help="runs of each larger workload (machine noise moves one run by a third) [3]")
    ap.add_argument("--floor-concurrency", type=int, default=16)
    ap.add_argument("--settle", type=float, default=2.0, help="seconds of quiet before and after each workload")
    ap.add_argument("--idle-window", type=float, default=60.0,
                    help="seconds over which idle API requests are counted (>= our 60 s resync period)")
    ap.add_argument("--ltj-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment for our operator (e.g. LTJ_WORKERS=8); repeatable")
    ap.add_argument("--profile", action="store_true",
                    help="sample our operator with py-spy during each workload (raw stacks under the output dir)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--keep", action="store_true", help="keep the run directory (logs, audit logs)")
    args = ap.parse_args(argv)
    for flag in ("repeats", "repeats_large"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')}: must be >= 1")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    scale_systems = {s.strip() for s in args.scale_systems.split(",") if s.strip()}
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"--systems: unknown system {s!r} (choose from {', '.join(SYSTEMS)})")
    for s in scale_systems - set(OPERATORS):
        ap.error(f"--scale-systems: {s!r} runs no operator process to measure (choose from {', '.join(OPERATORS)})")

    from ltj_localcluster.cluster import ensure_binaries

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ltj-scale-bench-"))
    logs = work / "logs"
    logs.mkdir()
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)

    ltj_env = dict(kv.split("=", 1) for kv in args.ltj_env)
    impls: dict[str, System] = {"ltj": Ltj(ltj_env), "ltj-kueue": LtjKueue(ltj_env), "peer": Peer(args.peer_args.split()),
                                "peer-fast": Peer([*PEER_FAST_ARGS, *args.peer_args.split()], "peer-fast"),
                                "floor": Floor(False, args.floor_concurrency),
                                "floor-all": Floor(True, args.floor_concurrency),
                                "floor-job": Floor(False, args.floor_concurrency, with_job=True)}
    bin_dir = ensure_binaries(kwok=True, kueue=any(impls[name].kueue for name in systems))
    for name in systems:
        impls[name].build()
    results: list[Workload] = []
    points: list[ScalePoint] = []
    # Every system on a fresh control plane of its own: the API server's cost of the same work grows with
    # what an earlier system left behind (deleted namespaces, Events), so sharing one would favour the first.
    try:
        for name in systems:
            cluster = Cluster(work / name, bin_dir, log, kueue=impls[name].kueue)
            log(f"{name}: starting a fresh control plane")
            cluster.up()
            try:
                system = impls[name]
                system.setup(cluster.kubectl)
                for n in args.sizes:
                    runs = [run_workload(cluster, system, n, logs, args.settle, log,
                                         out / "profiles" if args.profile else None, run=i)
                            for i in range(args.repeats if n <= SMALL_N else args.repeats_large)]
                    results.append(median_run(runs))
                if args.scale and name in scale_systems:
                    points.extend(run_scale(cluster, system, args.scale, logs, args.idle_window, log))
            finally:
                cluster.down()
    finally:
        if args.keep:
            log(f"run directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    rows = workload_rows(results)
    print()
    text = print_report(rows, points)
    write_csv(out / "operator_scale.csv", rows, points)
    plot(out / "operator_scale.png", rows, points)
    (out / "operator_scale.md").write_text(text + "\n")
    log(f"wrote {out / 'operator_scale.csv'}, {out / 'operator_scale.png'}, {out / 'operator_scale.md'} "
        f"(whole run {time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
