"""The ltj operator on a local cluster: installed with its Helm chart, running as a pod, as users run it."""

from __future__ import annotations

import subprocess
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
