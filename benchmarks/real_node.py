"""What the sample job costs on the real node against the node agent, side by side in one run.

For each system, on a fresh local cluster: submit crds/samples/cpu-digits-2node.yaml (unchanged) and
record submit -> both trainer pods Running and submit -> job Succeeded, ``--repeats`` times, the
median reported. The systems:
- **agent**: the node agent runs pods as processes of this checkout's venv; the operator runs
  in-process beside it (the fast path of `make demo` and most e2e tests);
- **real-node**: kubelet + containerd run the images built from the Dockerfiles; the operator is
  installed by Helm and runs as a pod; the job's pods find each other through CoreDNS.
Also printed: the images' sizes and build times (cold: the cache's record of the last real build;
warm: a cache hit measured now) and the cost of bringing each cluster up.

    .venv/bin/python benchmarks/real_node.py [--repeats 3] [--out benchmarks/results]

Needs root and the real node's prerequisites (`make real-node`).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "crds" / "samples" / "cpu-digits-2node.yaml"

from ltj_localcluster import imagebuild, install  # noqa: E402
from ltj_localcluster.cluster import LocalCluster, NodePool  # noqa: E402

SYSTEMS = ("agent", "real-node")


def run_sample(kubectl: list[str], namespace: str, timeout: float = 900) -> dict[str, float]:
    """Applies the sample in ``namespace``; seconds from the apply to both trainer pods Running and to
    the job's phase Succeeded (polled every 0.2 s)."""
    name = yaml.safe_load(SAMPLE.read_text())["metadata"]["name"]
    subprocess.run([*kubectl, "create", "namespace", namespace], check=True, capture_output=True)
    t0 = time.monotonic()
    subprocess.run([*kubectl, "apply", "-n", namespace, "-f", str(SAMPLE)], check=True, capture_output=True)
    running = None
    while time.monotonic() - t0 < timeout:
        out = subprocess.run([*kubectl, "get", "pods,ltj", "-n", namespace, "-o", "json"], capture_output=True,
                             text=True)
        if out.returncode == 0:
            items = json.loads(out.stdout)["items"]
            trainers = [i for i in items if i["kind"] == "Pod"
                        and i["metadata"].get("labels", {}).get("ltj.dev/job-name") == name]
            if running is None and len(trainers) == 2 and all(p["status"].get("phase") == "Running" for p in trainers):
                running = time.monotonic() - t0
            phase = next(((i.get("status") or {}).get("phase") for i in items if i["kind"] == "LightningTrainingJob"),
                         None)
            if phase in ("Succeeded", "Failed"):
                if phase != "Succeeded":
                    raise RuntimeError(f"{namespace}/{name} ended {phase}")
                return {"pods_running_s": running if running is not None else float("nan"),
                        "succeeded_s": time.monotonic() - t0}
        time.sleep(0.2)
    raise TimeoutError(f"{namespace}/{name} did not finish within {timeout:.0f}s")


def measure(system: str, repeats: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"ltj-bench-{system}-") as run_dir:
        real = system == "real-node"
        t0 = time.monotonic()
        cluster = LocalCluster(run_dir, NodePool(nodes=1 if real else 2), real_node=real)
        info = cluster.up()
        kubectl = [str(Path(info.bin_dir) / "kubectl"), f"--kubeconfig={info.kubeconfig}"]
        operator = None
        try:
            if real:
                out = install.helm_install(Path(info.bin_dir) / "helm", info.kubeconfig,
                                           cluster.images["operator"].ref, cluster.images["trainer"].ref)
                if out.returncode != 0:
                    raise RuntimeError(out.stdout + out.stderr)
            else:
                operator = install.run_in_process(kubectl, info.kubeconfig, Path(run_dir) / "operator.log")
            up_s = time.monotonic() - t0
            for i in range(repeats):
                r = run_sample(kubectl, f"bench-{i}")
                rows.append({"system": system, "run": i, "cluster_up_s": round(up_s, 1),
                             **{k: round(v, 2) for k, v in r.items()}})
                print(f"  {system} run {i}: pods Running {r['pods_running_s']:.2f} s, "
                      f"Succeeded {r['succeeded_s']:.2f} s", flush=True)
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(30)
            cluster.down()
    return rows


def images_table() -> list[dict[str, Any]]:
    t0 = time.monotonic()
    images = imagebuild.ensure_images()
    warm = time.monotonic() - t0
    return [{"image": img.ref, "size_mib": round(img.size_bytes / 2**20), "cold_build_s": round(img.build_seconds, 1),
             "warm_s": round(warm, 2)} for img in images.values()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    imgs = images_table()
    rows = [row for system in SYSTEMS for row in measure(system, a.repeats)]

    with open(a.out / "real_node.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    med = {s: {k: statistics.median(r[k] for r in rows if r["system"] == s)
               for k in ("cluster_up_s", "pods_running_s", "succeeded_s")} for s in SYSTEMS}
    lines = [f"# The sample job on the real node vs the node agent (median of {a.repeats}, seconds)", "",
             "| | agent | real node | real / agent |", "| --- | ---: | ---: | ---: |"]
    for key, label in (("pods_running_s", "submit -> both pods Running"), ("succeeded_s", "submit -> Succeeded"),
                       ("cluster_up_s", "cluster up + operator installed")):
        a_, r_ = med["agent"][key], med["real-node"][key]
        lines.append(f"| {label} | {a_:.2f} | {r_:.2f} | {r_ / a_:.2f} |")
    lines += ["", "| image | size (MiB) | cold build (s) | warm, all images (s) |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {i['image']} | {i['size_mib']} | {i['cold_build_s']} | {i['warm_s']} |" for i in imgs]
    (a.out / "real_node.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
