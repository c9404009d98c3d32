"""Kueue (sigs.k8s.io/kueue) beside a running control plane: its CRDs, and its controller as a process
on this machine instead of a Deployment, configured with LightningTrainingJob as an external framework.

Out of a cluster Kueue has no Service for the API server to call and no Secret mounted with its
certificates, so:
- its webhook server listens on loopback with a serving certificate for 127.0.0.1 from the cluster's
  CA, and the registrations of its own resources' webhooks (those for kueue.x-k8s.io, from the
  module's manifests) name that URL and CA: the pod, Job and other integrations' webhooks stay
  unregistered, so Kueue never stands in the way of a pod or Job create here;
- internal certificate management is off (it waits for a Secret's files that nothing mounts), and so
  is the visibility server (it wants certificates of its own);
- the metrics server is off, but the controller still reads a certificate from the fixed path
  /etc/kueue/metrics/certs at start: it runs in a mount namespace of its own where that path is a
  bind mount of the run dir's copy, so clusters side by side do not share it;
- leader election is off: one replica.
Conversion webhooks are not registered: the CRDs are served without them, which is sound while every
client speaks v1beta2, their storage version.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from ltj_api import GROUP, KIND, VERSION

from . import pki as pkimod
from .controlplane import ClusterInfo, free_port, http_ok, record_pid, wait_ready

log = logging.getLogger(__name__)

API_GROUP = "kueue.x-k8s.io"
NAMESPACE = "kueue-system"
# How Kueue's configuration names a job kind that an external controller (the ltj operator) runs.
LTJ_FRAMEWORK = f"{KIND}.{VERSION}.{GROUP}"
# Where the controller reads its metrics certificate, whatever the configuration says.
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")
# The names Kueue's own manifests give the registrations (kustomize prefixes them with "kueue-").
# Kueue's waitForPodsReady: an admitted Workload whose pods are not all ready this long after its admission
# (or after losing one, recoveryTimeout's default) is evicted. Long enough for any test's gang to come up,
# short enough for a test to see a gang that never does evicted.
PODS_READY_TIMEOUT = "60s"
WEBHOOK_CONFIGS = {"MutatingWebhookConfiguration": "kueue-mutating-webhook-configuration",
                   "ValidatingWebhookConfiguration": "kueue-validating-webhook-configuration"}


def configuration(health_port: int, webhook_port: int, cert_dir: Path) -> dict[str, Any]:
    """The controller's config.kueue.x-k8s.io/v1beta2 Configuration (see the module docstring)."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "featureGates": {"VisibilityOnDemand": False},
        # Only jobs that name a queue are Kueue's; an unlabelled LightningTrainingJob runs as without Kueue.
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": ["batch/job"], "externalFrameworks": [LTJ_FRAMEWORK]},
        # As a production cluster may have it: the operator keeps its Workloads' PodsReady condition, which
        # this times. No blocking of later admissions meanwhile; requeuing after such an eviction with
        # Kueue's default backoff.
        "waitForPodsReady": {"timeout": PODS_READY_TIMEOUT, "blockAdmission": False},
    }


def webhook_configurations(manifests: str, webhook_port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """Kueue's webhook registrations from its ``manifests`` (config/components/webhook/manifests.yaml),
    cut down to the webhooks of Kueue's own resources and pointed at ``https://127.0.0.1:<port>``."""
    out = []
    for doc in yaml.safe_load_all(manifests):
        if not doc or doc.get("kind") not in WEBHOOK_CONFIGS:
            continue
        hooks = []
        for hook in doc.get("webhooks") or []:
            groups = {g for rule in hook.get("rules") or [] for g in rule.get("apiGroups") or []}
            if groups != {API_GROUP}:
                continue
            path = hook["clientConfig"]["service"]["path"]
            hooks.append({**hook, "clientConfig": {"url": f"https://127.0.0.1:{webhook_port}{path}",
                                                   "caBundle": base64.b64encode(ca_bundle).decode()}})
        if not hooks:
            raise ValueError(f"no {API_GROUP} webhooks in Kueue's {doc['kind']}")
        out.append({"apiVersion": doc["apiVersion"], "kind": doc["kind"],
                    "metadata": {"name": WEBHOOK_CONFIGS[doc["kind"]]}, "webhooks": hooks})
    if len(out) != len(WEBHOOK_CONFIGS):
        raise ValueError(f"Kueue's webhook manifests lack one of {sorted(WEBHOOK_CONFIGS)}")
    return out


class Kueue:
    """The Kueue controller of the cluster ``info``, from ``kueue_dir`` (hack/build-binaries.sh --kueue:
    the binary, crds/ and webhooks.yaml). Its files go to ``<run dir>/kueue``, its log to
    ``<run dir>/logs/kueue.log``."""

    def __init__(self, info: ClusterInfo, kueue_dir: str | os.PathLike[str]) -> None:
        self.info = info
        self.kueue_dir = Path(kueue_dir)
        self.run_dir = Path(info.run_dir)
        self.dir = self.run_dir / "kueue"
        self.log_file = self.run_dir / "logs" / "kueue.log"
        self.health_port: int | None = None
        self.webhook_port: int | None = None

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        proc = subprocess.run([str(Path(self.info.bin_dir) / "kubectl"), f"--kubeconfig={self.info.kubeconfig}",
                               *args], input=input, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {proc.stderr.strip()}")
        return proc.stdout

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/readyz"

    def start(self, timeout: float = 120) -> None:
        """CRDs, then the controller, then (once it serves them) its webhook registrations: a
        registration whose server is not up yet would refuse every create of a Kueue object."""
        t0 = time.monotonic()
        crds = sorted((self.kueue_dir / "crds").glob("*.yaml"))
        # Server-side: the Workload CRD is too big for the last-applied annotation of a client-side apply.
        self.kubectl("apply", "--server-side", "--field-manager=ltj-localcluster",
                     *(f"--filename={c}" for c in crds))
        names = [yaml.safe_load(c.read_text())["metadata"]["name"] for c in crds]
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names))
        self.kubectl("apply", "--server-side", "--field-manager=ltj-localcluster", "-f", "-",
                     input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))

        self.health_port, self.webhook_port = free_port(), free_port()
        certs = self._certificates()
        config = self.dir / "config.yaml"
        config.write_text(yaml.safe_dump(configuration(self.health_port, self.webhook_port, certs)))
        METRICS_CERT_DIR.mkdir(parents=True, exist_ok=True)  # an empty mount point on the host
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            # unshare and sh exec, so the recorded pid is the controller's.
            proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                 'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(certs), str(METRICS_CERT_DIR),
                 str(self.kueue_dir / "kueue"), f"--config={config}"],
                env={**os.environ, "KUBECONFIG": self.info.kubeconfig},
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        record_pid(self.run_dir, "kueue", proc.pid)
        wait_ready(proc, "kueue", lambda: http_ok(self.ready_url), self.log_file, timeout)
        hooks = webhook_configurations((self.kueue_dir / "webhooks.yaml").read_text(), self.webhook_port,
                                       Path(self.info.pki_dir, "ca.crt").read_bytes())
        self.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=ltj-localcluster", "-f", "-",
                     input=yaml.safe_dump_all(hooks))
        log.info("kueue ready in %.1fs (webhooks on 127.0.0.1:%d)", time.monotonic() - t0, self.webhook_port)

    def _certificates(self) -> Path:
        """The webhook server's certificate for 127.0.0.1 from the cluster's CA, as tls.crt/tls.key in
        the directory returned (also what the controller finds at METRICS_CERT_DIR)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        pki = pkimod.Pki(Path(self.info.pki_dir))
        pkimod.issue_server(pki, "kueue-webhook", "kueue-webhook", ("127.0.0.1",))
        certs = self.dir / "certs"
        certs.mkdir(exist_ok=True)
        shutil.copyfile(pki.crt("kueue-webhook"), certs / "tls.crt")
        shutil.copyfile(pki.key("kueue-webhook"), certs / "tls.key")
        os.chmod(certs / "tls.key", 0o600)
        return certs
