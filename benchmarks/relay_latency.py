"""Event-to-status latency of the relay, and its API writes per job per minute.

On a private local control plane (etcd + kube-apiserver + controllers, no nodes): a
LightningTrainingJob, the relay's ServiceAccount/Role/RoleBinding as the operator renders them, a
real ``ltj-relay`` process with a ``kubectl create token`` token, and an events file appended at a
steady rate by the trainer's Writer. A real watch on the job records when each seq becomes visible
in the API; latency = visible - appended (same clock, same process).

    .venv/bin/python benchmarks/relay_latency.py [--events 300] [--rate 20] [--min-interval 1.0]

Needs root (the local control plane creates a Linux bridge) and the binaries of hack/build-binaries.sh.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "crds" / "ltj.dev_lightningtrainingjobs.yaml"

from ltj_localcluster.cluster import down, ensure_binaries  # noqa: E402
from ltj_localcluster.controlplane import ControlPlane  # noqa: E402
from ltj_operator import constants as C  # noqa: E402
from ltj_operator import render  # noqa: E402
from ltj_operator.spec import parse_job, relay_name  # noqa: E402
from ltj_api import events as ev  # noqa: E402

FINAL_EVERY = 50  # one final-type event (test) per this many, plus fit_end at the end


class Watcher(threading.Thread):
    """Watches one job; records (monotonic time, status.training.seq) for each change of status.training."""

    def __init__(self, server: str, ctx: ssl.SSLContext, namespace: str, name: str, resource_version: str):
        super().__init__(daemon=True)
        url = urllib.parse.urlsplit(server)
        self.conn = http.client.HTTPSConnection(url.hostname or "127.0.0.1", url.port, context=ctx, timeout=600)
        self.path = (f"/apis/{C.GROUP}/{C.VERSION}/namespaces/{namespace}/{C.PLURAL}?watch=1"
                     f"&fieldSelector=metadata.name%3D{name}&resourceVersion={resource_version}"
                     "&allowWatchBookmarks=false&timeoutSeconds=600")
        self.seen: list[tuple[float, int]] = []
        self.changes = 0  # status.training writes observed (every relay write changes updateTime)
        self.lock = threading.Lock()
        self.stopped = False

    def run(self) -> None:
        self.conn.request("GET", self.path)
        resp = self.conn.getresponse()
        last: Any = None
        while not self.stopped:
            line = resp.readline()
            if not line:
                return
            t = time.monotonic()
            event = json.loads(line)
            training = ((event.get("object") or {}).get("status") or {}).get("training")
            if event.get("type") != "MODIFIED" or not training or training == last:
                continue
            last = training
            with self.lock:
                self.changes += 1
                self.seen.append((t, int(training.get("seq", 0))))

    def max_seq(self) -> int:
        with self.lock:
            return self.seen[-1][1] if self.seen else 0

    def visible_at(self, seq: int) -> float | None:
        with self.lock:
            for t, s in self.seen:
                if s >= seq:
                    return t
        return None


def kubectl(bin_dir: Path, kubeconfig: str, *args: str, input: str | None = None) -> str:
    return subprocess.run([str(bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", *args], input=input,
                          capture_output=True, text=True, check=True, timeout=60).stdout


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--rate", type=float, default=20.0, help="events per second")
    ap.add_argument("--min-interval", type=float, default=1.0, help="the relay's LTJ_RELAY_MIN_INTERVAL")
    ap.add_argument("--crd", default=str(CRD))
    ap.add_argument("--keep", action="store_true", help="keep the run directory (logs)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ltj-relay-bench-"))
    bin_dir = ensure_binaries()
    info = ControlPlane(work / "cp", bin_dir).start()
    relay_proc: subprocess.Popen | None = None
    try:
        kc = info.kubeconfig
        kubectl(bin_dir, kc, "apply", "--server-side", "-f", args.crd)
        for _ in range(60):  # `kubectl wait` fails at once while the new CRD has no conditions yet
            try:
                kubectl(bin_dir, kc, "wait", "--for=condition=Established", "--timeout=10s", f"crd/{C.CRD_NAME}")
                break
            except subprocess.CalledProcessError:
                time.sleep(0.5)
        else:
            raise RuntimeError("the CRD was not established")
        ns, name = "bench", "latency"
        kubectl(bin_dir, kc, "create", "namespace", ns)
        manifest = {"apiVersion": C.API_VERSION, "kind": C.KIND, "metadata": {"name": name, "namespace": ns},
                    "spec": {"model": {"name": "digits_cnn"}, "output": {"claimName": "shared-output"}}}
        kubectl(bin_dir, kc, "apply", "-f", "-", input=yaml.safe_dump(manifest))
        body = json.loads(kubectl(bin_dir, kc, "get", "ltj", name, "-n", ns, "-o", "json"))
        job = parse_job(body)
        rbac = [render.render_relay_service_account(job), render.render_relay_role(job),
                render.render_relay_role_binding(job)]
        kubectl(bin_dir, kc, "apply", "-f", "-", input=yaml.safe_dump_all(rbac))
        for _ in range(60):  # the token controller needs the namespace's ServiceAccount machinery up
            try:
                token = kubectl(bin_dir, kc, "create", "token", "-n", ns, relay_name(name), "--duration=1h").strip()
                break
            except subprocess.CalledProcessError:
                time.sleep(0.5)
        else:
            raise RuntimeError("could not create a token for the relay")
        (work / "token").write_text(token)

        cfg = yaml.safe_load(Path(kc).read_text())
        user = cfg["users"][0]["user"]
        ctx = ssl.create_default_context(cafile=str(Path(info.pki_dir) / "ca.crt"))
        ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        watcher = Watcher(info.server, ctx, ns, name, body["metadata"]["resourceVersion"])
        watcher.start()

        events = work / "output" / "events.jsonl"
        log = open(work / "relay.log", "wb")
        relay_proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ltj-relay"), "--job", name, "--namespace", ns, "--server", info.server,
             "--token-file", str(work / "token"), "--ca-file", str(Path(info.pki_dir) / "ca.crt"),
             "--events-file", str(events), "--min-interval", str(args.min_interval)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "LTJ_SA_DIR": "/nonexistent"})
        log.close()
        time.sleep(1.0)  # the relay is up and polling a file that does not exist yet

        w = ev.Writer(events)
        appended: dict[int, float] = {}
        final_seqs: set[int] = set()
        period = 1.0 / args.rate
        start = time.monotonic()
        epoch = step = 0
        for i in range(args.events):
            target = start + i * period
            time.sleep(max(0.0, target - time.monotonic()))
            if i == 0:
                e = w.write(ev.STARTED, attempt=0, max_epochs=args.events, monitor="val_loss", mode="min",
                            resumed_from=None)
            elif i == args.events - 1:
                e = w.write(ev.FIT_END, epoch=epoch, step=step, best_path=None, best_score=None, stopped_early=False)
            elif i % FINAL_EVERY == 0:
                e = w.write(ev.TEST, metrics={"test_loss": 1.0 / i}, ckpt_path="best")
            elif i % 2:
                epoch += 1
                step += 10
                e = w.write(ev.VALIDATION, epoch=epoch, step=step, metrics={"val_loss": 1.0 / i, "val_acc": 0.5})
            else:
                path = f"/output/checkpoints/m_epoch={epoch:04d}.ckpt"
                e = w.write(ev.CHECKPOINT, path=path, score=1.0 / i, epoch=epoch, step=step, kind="top_k",
                            top_k=[{"path": path, "score": 1.0 / i}], best_path=path, best_score=1.0 / i)
            appended[e.seq] = time.monotonic()
            if e.type in ("test", "fit_end"):
                final_seqs.add(e.seq)
        end_append = time.monotonic()
        deadline = end_append + 30
        while watcher.max_seq() < w.seq and time.monotonic() < deadline:
            time.sleep(0.05)
        duration = end_append - start
        relay_proc.send_signal(signal.SIGTERM)
        relay_rc = relay_proc.wait(20)
        watcher.stopped = True

        lat: list[float] = []
        lat_final: list[float] = []
        missing = 0
        for seq, t_app in appended.items():
            t_vis = watcher.visible_at(seq)
            if t_vis is None:
                missing += 1
                continue
            (lat_final if seq in final_seqs else lat).append(t_vis - t_app)
        with watcher.lock:
            writes_during = sum(1 for t, _ in watcher.seen if start <= t <= end_append + 0.001)
            total_writes = watcher.changes
        relay_log = (work / "relay.log").read_text(errors="replace")

        def row(label: str, v: list[float]) -> str:
            if not v:
                return f"| {label:<22} | {0:>5} | {'-':>8} | {'-':>8} | {'-':>8} | {'-':>8} |"
            return (f"| {label:<22} | {len(v):>5} | {1000 * percentile(v, 50):>8.0f} | {1000 * percentile(v, 90):>8.0f} "
                    f"| {1000 * percentile(v, 99):>8.0f} | {1000 * max(v):>8.0f} |")

        print()
        print(f"relay latency benchmark: {args.events} events at {args.rate:g}/s over {duration:.1f}s, "
              f"relay min interval {args.min_interval:g}s, {len(final_seqs)} final events (test, fit_end)")
        print("| events                 |     n |  p50 ms  |  p90 ms  |  p99 ms  |  max ms  |")
        print("|------------------------|-------|----------|----------|----------|----------|")
        print(row("all", lat + lat_final))
        print(row("non-final (throttled)", lat))
        print(row("final (immediate)", lat_final))
        print()
        print(f"API writes by the relay: {total_writes} in total, {writes_during} while appending "
              f"-> {60 * writes_during / duration:.1f} writes/job/minute "
              f"(events appended: {60 * len(appended) / duration:.0f}/minute)")
        print(f"relay log: {relay_log.count('wrote status.training')} writes, "
              f"{relay_log.count('failed')} failed, exit code {relay_rc}; events never visible: {missing}")
        if args.keep:
            print(f"run directory kept: {work}")
        return 0 if missing == 0 and relay_rc == 0 else 1
    finally:
        if relay_proc is not None and relay_proc.poll() is None:
            relay_proc.kill()
            relay_proc.wait(5)
        down(work / "cp")
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    sys.exit(main())
