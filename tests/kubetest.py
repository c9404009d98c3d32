"""Test support: the local cluster as tests use it, polling, and LightningTrainingJob helpers."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from ltj_api import GROUP, PLURAL, VERSION

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = REPO / "crds"
SAMPLE = REPO / "crds" / "samples" / "cpu-digits-2node.yaml"
TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Kube:
    """The running local cluster as tests use it: kubectl, a client, and the cluster's paths."""

    kubeconfig: str
    bin_dir: Path
    run_dir: Path

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                              capture_output=True, text=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str = "condition", *, interval: float = 0.5,
             diagnose: Callable[[], str] | None = None) -> Any:
    """Polls until predicate returns a truthy value; returns it, or fails naming what it waited for
    (with ``diagnose()``'s output, when given). The suite's one polling helper: a predicate that can
    tell a hopeless wait early (a process that exited) raises instead of returning a falsy value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    extra = f"\n{diagnose()}" if diagnose else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r}){extra}")


def install_crd(kube: Kube) -> None:
    kube.kubectl("apply", "--server-side", "-f", str(CRD_DIR / "ltj.dev_lightningtrainingjobs.yaml"))
    # Right after the apply, `kubectl wait` can fail before the CRD has any condition: retry.
    wait_for(lambda: kube.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                                  "crd/lightningtrainingjobs.ltj.dev", check=False).returncode == 0,
             90, interval=1, what="the CRD to be Established")


def sample() -> dict[str, Any]:
    return yaml.safe_load(SAMPLE.read_text())


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (patch wins); returns a new dict."""
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def job(name: str, **spec_patch: Any) -> dict[str, Any]:
    """The CPU sample under another name, with ``spec_patch`` merged into its spec."""
    manifest = sample()
    manifest["metadata"] = {"name": name}
    manifest["spec"] = merge(manifest["spec"], spec_patch)
    return manifest


def apply(kube: Kube, namespace: str, manifest: dict[str, Any]) -> str:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    return manifest["metadata"]["name"]


def absent(kube: Kube, *args: str) -> bool:
    """Whether ``kubectl get ARGS`` finds nothing. Only NotFound counts: any other failure (a wrong kind, an
    unreachable server) raises rather than passing for an absence."""
    return kube.kubectl("get", *args, "--ignore-not-found", "-o", "name").stdout.strip() == ""


def get_job(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return kube.get("ltj", name, "-n", namespace)


def status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return get_job(kube, namespace, name).get("status") or {}


def condition(st: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), None)


def wait_status(kube: Kube, namespace: str, name: str, pred, timeout: float, what: str) -> dict[str, Any]:
    return wait_for(lambda: (lambda st: st if pred(st) else None)(status(kube, namespace, name)),
                    timeout, interval=1, what=f"{name}: {what}")


def wait_terminal(kube: Kube, namespace: str, name: str, timeout: float = 600) -> dict[str, Any]:
    return wait_status(kube, namespace, name, lambda st: st.get("phase") in TERMINAL, timeout, "a terminal phase")


def pods(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return kube.get("pods", "-n", namespace, "-l", f"ltj.dev/job-name={name}")["items"]


def volume_dir(kube: Kube, namespace: str, name: str) -> Path:
    """The host directory behind the job's output claim (a hostPath volume of the local cluster's provisioner)."""
    pvc = kube.get("pvc", f"{name}-output", "-n", namespace)
    pv = kube.get("pv", pvc["spec"]["volumeName"])
    return Path(pv["spec"]["hostPath"]["path"])


def job_output_dir(kube: Kube, namespace: str, name: str) -> Path:
    """The job's own directory (event log, checkpoints) on the host, inside its claim's subPath."""
    from ltj_api.trainer import job_dir

    manifest = get_job(kube, namespace, name)
    sub = (manifest["spec"].get("output") or {}).get("subPath") or name
    return Path(job_dir(name, manifest["metadata"]["uid"], str(volume_dir(kube, namespace, name) / sub)))


def events(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    from ltj_api import events as ev

    return ev.as_dicts(ev.read_all(job_output_dir(kube, namespace, name) / ev.FILENAME))


def dump(kube: Kube, namespace: str) -> str:
    """Diagnostics for a failed assertion."""
    out = [kube.kubectl("get", "ltj,pods,svc,pvc", "-n", namespace, "-o", "wide", check=False).stdout]
    for item in kube.get("ltj", "-n", namespace)["items"]:
        out.append(json.dumps(item.get("status"), indent=1)[:4000])
    out.append(kube.kubectl("get", "events", "-n", namespace, "--sort-by=.metadata.creationTimestamp",
                            check=False).stdout[-6000:])
    return "\n".join(out)


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str
    causes: tuple[tuple[str, str], ...]  # (field, message)


class Api:
    """The job API through the kubernetes client: refusals come back as values, with each cause's field
    (a 422 lists them), so a test can say which field a rule named."""

    def __init__(self, kubeconfig: str):
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        self._client = client.ApiClient(configuration)
        self._objects = client.CustomObjectsApi(self._client)
        self._exc = client.ApiException

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any] | Refusal:
        try:
            return fn(*args, **kwargs)
        except self._exc as exc:
            data = json.loads(exc.body)
            causes = tuple((c.get("field", ""), c.get("message", ""))
                           for c in (data.get("details") or {}).get("causes") or [])
            return Refusal(exc.status, data.get("message", ""), causes)

    def create(self, ns: str, manifest: dict[str, Any], dry_run: bool = True,
               field_validation: str | None = None) -> dict[str, Any] | Refusal:
        extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        if field_validation is not None:
            extra["field_validation"] = field_validation  # Strict: an undeclared field is refused, not pruned
        return self._call(self._objects.create_namespaced_custom_object, GROUP, VERSION, ns, PLURAL,
                          manifest, **extra)

    def get(self, ns: str, name: str) -> dict[str, Any] | Refusal:
        return self._call(self._objects.get_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, name)

    def merge_patch(self, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | Refusal:
        return self._call(self._objects.patch_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, name,
                          patch, _content_type="application/merge-patch+json")

    def close(self) -> None:
        self._client.close()
