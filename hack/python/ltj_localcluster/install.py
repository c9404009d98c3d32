"""The ltj operator on a local cluster: installed with its Helm chart (a pod, as users run it), or
run from this checkout beside the node agent, whose pods are processes of the repo's venv."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "ltj-operator"
CRD = REPO / "crds" / "ltj.dev_lightningtrainingjobs.yaml"
RELEASE = "ltj"
NAMESPACE = "ltj-system"


def chart_flags(operator_image: str, trainer_image: str) -> list[str]:
    """helm flags installing the chart (CRD included) with both images by value and a pull policy that
    works without a registry: the images are already on the nodes."""
    repo, _, tag = operator_image.rpartition(":")
    return ["--namespace", NAMESPACE, "--create-namespace", "--set", f"image.repository={repo}",
            "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never", "--set", "relayImagePullPolicy=Never",
            "--set", f"defaultTrainerImage={trainer_image}"]


def helm_install(helm: str | Path, kubeconfig: str, operator_image: str, trainer_image: str,
                 *extra: str) -> subprocess.CompletedProcess:
    """`helm upgrade --install` of the chart with ``chart_flags``; ``extra``: more helm flags."""
    return subprocess.run(
        [str(helm), f"--kubeconfig={kubeconfig}", "upgrade", "--install", RELEASE, str(CHART),
         *chart_flags(operator_image, trainer_image), "--wait", "--timeout", "5m", *extra],
        capture_output=True, text=True, timeout=600)


def run_in_process(kubectl: list[str], kubeconfig: str, log_path: Path) -> subprocess.Popen:
    """Applies the CRD and starts `kopf run` of this checkout's operator for every namespace."""
    subprocess.run([*kubectl, "apply", "--server-side", "-f", str(CRD)], check=True, capture_output=True)
    for _ in range(60):  # right after the apply the CRD may have no condition yet: retry
        if subprocess.run([*kubectl, "wait", "--for=condition=Established", "--timeout=30s",
                           "crd/lightningtrainingjobs.ltj.dev"], capture_output=True).returncode == 0:
            break
        time.sleep(1)
    env = {**os.environ, "KUBECONFIG": kubeconfig, "LTJ_DEFAULT_TRAINER_IMAGE": "ltj-trainer:dev",
           "LTJ_OPERATOR_IMAGE": "ltj-operator:dev"}
    with open(log_path, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
                                 "-m", "ltj_operator.handlers"], env=env, stdout=out, stderr=out)
