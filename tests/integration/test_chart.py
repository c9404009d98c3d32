"""The Helm chart on the real local API server: install, the operator running with the chart's
ServiceAccount credentials (a TokenRequest token, not admin) through a real job, least privilege,
the aggregated user roles, Pod Security, upgrade and uninstall.

The chart's Deployment is installed with replicaCount=0: no container image can run here, and the
operator runs in-process instead, with the exact command line and environment the Deployment gives
it, under the chart's ServiceAccount.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetest import Kube, absent, dump, job, status, wait_for, wait_status
from unit.chart.chartlib import CHART, REPO, container, env_of, find, one

pytestmark = [pytest.mark.integration]

OPERATOR_PKG = REPO / "operator" / "ltj_operator"
# How RBAC refusals read in the operator's log: kopf's warnings for its observers, and the API's message.
RBAC_REFUSAL = re.compile(r'Not enough permissions|is forbidden: User "[^"]*" cannot')


# --- helm against the local cluster ---------------------------------------------------------------


@dataclass(frozen=True)
class Helm:
    bin: Path
    env: dict[str, str]

    def __call__(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.bin), *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def helm(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, "KUBECONFIG": kube.kubeconfig, "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_CACHE_HOME": str(home / "cache"), "HELM_DATA_HOME": str(home / "data")}
    return Helm(kube.bin_dir / "helm", env)


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    values: dict[str, Any]
    objects: list[dict[str, Any]]  # what helm rendered for the cluster (helm get manifest)
    notes: str

    @property
    def fullname(self) -> str:
        return one(self.objects, "Deployment")["metadata"]["name"]

    @property
    def service_account(self) -> str:
        return one(self.objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]


def _values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(json.dumps(values))
    return path


def install(helm: Helm, kube: Kube, tmp_path: Path, name: str, namespace: str, values: dict[str, Any],
            upgrade: bool = False) -> Release:
    """helm install (or upgrade) --wait; returns what the release holds now."""
    values = {"replicaCount": 0, **values}
    verb = ["upgrade"] if upgrade else ["install"]
    out = helm(*verb, name, str(CHART), "--namespace", namespace, "--wait", "--timeout", "120s",
               "-f", str(_values_file(tmp_path, values))).stdout
    manifest = helm("get", "manifest", name, "--namespace", namespace).stdout
    notes = helm("get", "notes", name, "--namespace", namespace).stdout
    assert out.strip(), "helm printed nothing"
    return Release(name, namespace, values, [d for d in yaml.safe_load_all(manifest) if d], notes)


@pytest.fixture
def operator_ns(kube: Kube, namespace: str) -> Iterator[str]:
    """The release's namespace (the per-test `namespace` is where jobs go)."""
    name = f"{namespace[:50]}-op"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def release_name(namespace: str) -> str:
    return f"ltj-{namespace[-5:]}"  # the namespace fixture's random suffix: unique per test


# --- the operator with the chart's credentials ------------------------------------------------------


def token_kubeconfig(kube: Kube, release: Release, path: Path) -> Path:
    """A kubeconfig holding a bound token of the chart's ServiceAccount (TokenRequest API)."""
    from ltj_localcluster.controlplane import ClusterInfo

    token = kube.kubectl("create", "token", release.service_account, "-n", release.namespace,
                         "--duration=2h").stdout.strip()
    info = ClusterInfo.load(kube.run_dir)
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "chart-sa",
        "clusters": [{"name": "local", "cluster": {"server": info.server,
                                                   "certificate-authority": str(Path(info.pki_dir) / "ca.crt")}}],
        "users": [{"name": "chart-sa", "user": {"token": token}}],
        "contexts": [{"name": "chart-sa", "context": {"cluster": "local", "user": "chart-sa"}}],
    }))
    return path


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@contextmanager
def chart_operator(release: Release, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """kopf in-process with the Deployment's command line and environment, as the chart's ServiceAccount.

    Yields the operator's log lines (kopf's and ours, collected from the root logger); after the block
    the operator has stopped, and the log holds no RBAC refusal (kopf only warns about those)."""
    from kopf.testing import KopfRunner

    c = container(release.objects)
    assert c["command"][0] == "kopf"
    for name, value in env_of(release.objects).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("LTJ_LOG_LEVEL", "DEBUG")  # kopf then logs each handled watch event (checked below)
    collect = _Collect()
    logging.getLogger().addHandler(collect)
    runner = KopfRunner(c["command"][1:], timeout=60)
    runner.__enter__()
    try:
        yield collect.lines
    finally:
        runner.__exit__(None, None, None)
        logging.getLogger().removeHandler(collect)
    assert runner.exception is None, runner.output[-5000:]
    refusals = [ln for ln in collect.lines if RBAC_REFUSAL.search(ln)]
    assert not refusals, "RBAC refusals in the operator's log:\n" + "\n".join(refusals[:20])
    assert any("ltj operator configured" in ln for ln in collect.lines), "no operator log collected"


def health_port() -> int:
    from ltj_localcluster.controlplane import free_port

    return free_port()


def probe(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as rsp:
        assert rsp.status == 200
        return json.loads(rsp.read() or b"{}")


def children(kube: Kube, namespace: str, name: str) -> dict[str, set[str]]:
    """kind -> names of the job's children, found by the contract's labels."""
    items = kube.get("pods,services,serviceaccounts,secrets,roles,rolebindings", "-n", namespace,
                     "-l", f"ltj.dev/job-name={name}")["items"]
    out: dict[str, set[str]] = {}
    for item in items:
        out.setdefault(item["kind"], set()).add(item["metadata"]["name"])
    return out


def small_job(name: str, nodes: int, claim: str | None = None, account: str | None = None) -> dict[str, Any]:
    manifest = job(name, nodes=nodes, training={"maxEpochs": 1, "earlyStopping": {"enabled": False}})
    if claim:
        manifest["spec"]["output"] = {"claimName": claim}
    if account:
        manifest["spec"]["podTemplate"] = {"serviceAccountName": account}
    return manifest


def run_job_flow(kube: Kube, release: Release, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 nodes: int, claim: str, account: str | None = None) -> None:
    """The operator with the chart's credentials takes a job to Running on kwok's nodes (training
    with them, the relay's token included, is the e2e tier's: tests/e2e/test_real_cluster.py). With
    `account`, the job's pods run as that ServiceAccount and the relay's token comes from a Secret."""
    kubeconfig = token_kubeconfig(kube, release, tmp_path / "sa.kubeconfig")
    # The token really is the ServiceAccount's, with its rights and not more.
    who = subprocess.run([str(kube.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", "auth", "whoami", "-o",
                          "jsonpath={.status.userInfo.username}"], capture_output=True, text=True, timeout=30)
    assert who.stdout == f"system:serviceaccount:{release.namespace}:{release.service_account}", who.stderr
    name = f"chart-{uuid.uuid4().hex[:5]}"
    with chart_operator(release, kubeconfig, monkeypatch) as log:
        port = release.values["healthPort"]
        wait_for(lambda: _probe_ok(port), 30, what="kopf's health endpoint")
        kube.kubectl("apply", "-n", namespace, "-f", "-",
                     input=yaml.safe_dump(small_job(name, nodes, claim, account)))
        # Every child carries blockOwnerDeletion, which the cluster's OwnerReferencesPermissionEnforcement
        # allows the operator through the chart's lightningtrainingjobs/finalizers rule.
        expected = {"Pod": {f"{name}-node-{i}" for i in range(nodes)}, "Service": {name},
                    "ServiceAccount": {f"{name}-relay"} | ({f"{name}-trainer"} if account is None else set()),
                    "Role": {f"{name}-relay"}, "RoleBinding": {f"{name}-relay"},
                    **({"Secret": {f"{name}-relay-token"}} if account else {})}
        wait_for(lambda: children(kube, namespace, name) == expected, 90,
                 what=f"{name}'s pods, service and relay RBAC")
        accounts = {p["spec"]["serviceAccountName"] for p in kube.get("pods", "-n", namespace, "-l",
                                                                      f"ltj.dev/job-name={name}")["items"]}
        assert accounts == ({account} if account else {f"{name}-relay"} | ({f"{name}-trainer"} if nodes > 1
                                                                             else set()))
        st = wait_status(kube, namespace, name, lambda st: st.get("phase") not in (None, "Pending"), 120,
                         "out of Pending")
        assert st["phase"] == "Running" and st["readyNodes"] == nodes, dump(kube, namespace)
        assert probe(port) is not None  # still healthy at the end
        assert any("Handler 'pod_event' succeeded" in ln for ln in log), "pod watch events never arrived"


def assert_owner_references_are_enforced(kube: Kube, namespace: str) -> None:
    """The cluster runs the OwnerReferencesPermissionEnforcement admission plugin (as OpenShift does): an
    object whose owner reference to a job sets blockOwnerDeletion is refused to a user who may not update
    the jobs' finalizers, and admitted once they may."""
    user = f"dora-{namespace[-5:]}"
    kube.kubectl("create", "role", "configmaps", "--verb=create", "--resource=configmaps", "-n", namespace)
    kube.kubectl("create", "rolebinding", "dora-configmaps", "--role=configmaps", f"--user={user}", "-n", namespace)
    child = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "child", "namespace": namespace,
             "ownerReferences": [{"apiVersion": "ltj.dev/v1alpha1", "kind": "LightningTrainingJob", "name": "owner",
                                  "uid": str(uuid.uuid4()), "controller": True, "blockOwnerDeletion": True}]}}

    def create() -> subprocess.CompletedProcess:
        return kube.kubectl(f"--as={user}", "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(child),
                            check=False)

    refused = create()
    assert refused.returncode != 0 and "cannot set blockOwnerDeletion" in refused.stderr, refused.stderr
    kube.kubectl("create", "role", "finalizers", "--verb=update", "--resource=lightningtrainingjobs.ltj.dev/finalizers",
                 "-n", namespace)
    kube.kubectl("create", "rolebinding", "dora-finalizers", "--role=finalizers", f"--user={user}", "-n", namespace)
    admitted = create()
    assert admitted.returncode == 0, admitted.stderr


def _probe_ok(port: int) -> bool:
    try:
        probe(port)
        return True
    except OSError:
        return False


# --- tests -----------------------------------------------------------------------------------------


def test_cluster_wide_install_runs_a_job_with_the_charts_credentials(kube, helm, namespace, operator_ns, tmp_path,
                                                                      monkeypatch, static_claim):
    rel = install(helm, kube, tmp_path, release_name(namespace), operator_ns,
                  {"healthPort": health_port(), "metrics": {"port": health_port()},
                   "rbac": {"create": True, "aggregatedRoles": {"create": False, "namePrefix": "ltj"}}})
    assert "--all-namespaces" in container(rel.objects)["command"]
    # NOTES tell the user how to submit a first job and watch it.
    assert "kubectl -n default apply -f crds/samples/cpu-digits-2node.yaml" in rel.notes
    assert "kubectl -n default get ltj -w" in rel.notes
    assert_owner_references_are_enforced(kube, namespace)
    run_job_flow(kube, rel, namespace, tmp_path, monkeypatch, nodes=2, claim=static_claim)


def test_namespaced_install_runs_a_job_with_only_roles_in_the_watched_namespace(kube, helm, namespace, operator_ns,
                                                                                 tmp_path, monkeypatch, static_claim):
    rel = install(helm, kube, tmp_path, release_name(namespace), operator_ns,
                  {"healthPort": health_port(), "metrics": {"port": health_port()}, "watchNamespaces": [namespace],
                   "rbac": {"create": True, "aggregatedRoles": {"create": False, "namePrefix": "ltj"}}})
    sa = f"system:serviceaccount:{operator_ns}:{rel.service_account}"

    def can(*args: str) -> bool:
        proc = kube.kubectl("auth", "can-i", f"--as={sa}", *args, check=False)
        return proc.stdout.strip() == "yes"

    assert can("create", "pods", "-n", namespace)
    assert not can("create", "pods", "-n", operator_ns)  # only the watched namespace
    assert not can("list", "pods", "--all-namespaces")
    assert not can("list", "lightningtrainingjobs.ltj.dev", "--all-namespaces")
    assert can("list", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can("get", "secrets", "-n", namespace)
    # Workload identity with the chart's rights: the pods run as the user's account, the relay's token
    # comes from a Secret the operator creates (and cannot read).
    kube.kubectl("create", "serviceaccount", "dataset-reader", "-n", namespace)
    run_job_flow(kube, rel, namespace, tmp_path, monkeypatch, nodes=1, claim=static_claim, account="dataset-reader")
    # NOTES point at the watched namespace.
    assert f"kubectl -n {namespace} get ltj -w" in rel.notes


# Where the operator (or kopf on its behalf) makes each call; every rule in the chart must be listed
# here and every listed call must still be in the code. Regexes over operator/ltj_operator (without the
# relay, which runs with its own per-job token) or over kopf's own source.
# A child already there is read (its metadata) to see whether the job controls it.
OWNER_CHECK = [("op", r"else kube\.ensure\b"), ("op", r"accept=PARTIAL_METADATA")]
EVIDENCE: dict[tuple[str, str, str], list[tuple[str, str]]] = {
    ("ltj.dev", "lightningtrainingjobs", "list"): [("op", r"@kopf\.on\.event\(C\.GROUP, C\.VERSION, C\.PLURAL")],
    ("ltj.dev", "lightningtrainingjobs", "watch"): [("op", r"@kopf\.on\.event\(C\.GROUP, C\.VERSION, C\.PLURAL")],
    ("ltj.dev", "lightningtrainingjobs", "get"): [("op", r"kube\.get_job\("),
                                                  ("op", r'request\("GET", _item\(C\.API_VERSION, C\.KIND')],
    ("ltj.dev", "lightningtrainingjobs", "delete"): [("op", r"kube\.delete_job\("),
                                                     ("op", r"def delete_job\(.*\n.*self\._delete\(")],
    ("ltj.dev", "lightningtrainingjobs/status", "patch"): [("op", r"kube\.patch_job_status\("),
                                                           ("op", r'request\("PATCH", [^\n]*\+ "/status"')],
    # Not a call: the children's owner references set blockOwnerDeletion, which clusters with the
    # OwnerReferencesPermissionEnforcement admission plugin allow only with this right.
    ("ltj.dev", "lightningtrainingjobs/finalizers", "update"): [("op", r'"blockOwnerDeletion": True')],
    ("", "pods", "list"): [("op", r"kube\.pod_views\("), ("op", r"self\.list_pods\("),
                           ("op", r'request\("GET", _collection\("v1", "Pod"')],
    ("", "pods", "watch"): [("op", r'@kopf\.on\.event\("v1", "pods"')],
    ("", "pods", "create"): [("op", r"render\.render_pod\("), ("op", r"kube\.create\(m\)\) for m in manifests")],
    ("", "pods", "get"): [("op", r'kube\.get\("v1", "Pod"')],
    ("", "pods", "delete"): [("op", r"kube\.delete_pod\(")],
    ("", "persistentvolumeclaims", "create"): [("op", r"pvc = render_pvc\(job\)")],
    ("", "persistentvolumeclaims", "get"): [("op", r"kube\.claim_access_modes\("),
                                            ("op", r'self\.get\("v1", "PersistentVolumeClaim"')],
    ("", "services", "create"): [("op", r"render_service\(job\)[,\]]")],
    ("", "services", "get"): [("op", r"render_service\(job\)[,\]]"), *OWNER_CHECK],
    ("", "serviceaccounts", "create"): [("op", r"render_relay_service_account\(job\),"),
                                        ("op", r"render_trainer_service_account\(job\)")],
    ("", "serviceaccounts", "get"): [("op", r"render_relay_service_account\(job\),"), *OWNER_CHECK],
    ("", "secrets", "create"): [("op", r"render_relay_token_secret\(job\)")],
    ("rbac.authorization.k8s.io", "roles", "create"): [("op", r"render_relay_role\(job\)[,\]]")],
    ("rbac.authorization.k8s.io", "roles", "get"): [("op", r"render_relay_role\(job\)[,\]]"), *OWNER_CHECK],
    ("rbac.authorization.k8s.io", "rolebindings", "create"): [("op", r"render_relay_role_binding\(job\),")],
    ("rbac.authorization.k8s.io", "rolebindings", "get"): [("op", r"render_relay_role_binding\(job\),"),
                                                           *OWNER_CHECK],
    # Granted only with networkPolicy.enabled (the default, which this test installs).
    ("networking.k8s.io", "networkpolicies", "create"): [("op", r"\[render_network_policy\(job\)\] if config\.network_policy")],
    ("networking.k8s.io", "networkpolicies", "get"): [("op", r"\[render_network_policy\(job\)\] if config\.network_policy"),
                                                      *OWNER_CHECK],
    ("", "events", "create"): [("op", r"kopf\.event\("), ("kopf", r"EVENTS = Selector\('v1', 'events'\)")],
    # Kueue: a queued job's Workload, watched, read each pass, created once, marked Finished at the end.
    ("kueue.x-k8s.io", "workloads", "list"): [("op", r"@kopf\.on\.event\(C\.KUEUE_GROUP, C\.KUEUE_VERSION, "
                                                     r"C\.KUEUE_WORKLOADS")],
    ("kueue.x-k8s.io", "workloads", "watch"): [("op", r"@kopf\.on\.event\(C\.KUEUE_GROUP, C\.KUEUE_VERSION, "
                                                      r"C\.KUEUE_WORKLOADS")],
    ("kueue.x-k8s.io", "workloads", "get"): [("op", r'kube\.get\(C\.KUEUE_API, "Workload"'),
                                             ("op", r'path = _item\(C\.KUEUE_API, "Workload"'), *OWNER_CHECK],
    ("kueue.x-k8s.io", "workloads", "create"): [("op", r"render\.render_workload\("),
                                                ("op", r"kube\.ensure\(manifest\)")],
    ("kueue.x-k8s.io", "workloads/status", "patch"): [
        ("op", r"kube\.finish_workload\("), ("op", r'request\("PATCH", path \+ "/status", content_type=')],
    # Cluster-scoped: the flavors of a queued job's admission, and the class of its Workload's priority.
    ("kueue.x-k8s.io", "resourceflavors", "get"): [("op", r'kube\.get_cluster\(C\.KUEUE_API, "ResourceFlavor"')],
    ("kueue.x-k8s.io", "workloadpriorityclasses", "get"): [
        ("op", r"kube\.get_cluster\(kueue\.PRIORITY_CLASS_API\[group_kind\]"),
        ("op", r'WORKLOAD_PRIORITY_CLASS = \("kueue\.x-k8s\.io", "WorkloadPriorityClass"\)')],
    ("scheduling.k8s.io", "priorityclasses", "get"): [
        ("op", r"kube\.get_cluster\(kueue\.PRIORITY_CLASS_API\[group_kind\]"),
        ("op", r'POD_PRIORITY_CLASS = \("scheduling\.k8s\.io", "PriorityClass"\)')],
    ("scheduling.k8s.io", "priorityclasses", "list"): [
        ("op", r'kube\.list_cluster\(\s*kueue\.PRIORITY_CLASS_API\[kueue\.POD_PRIORITY_CLASS\], "PriorityClass"\)')],
    # kopf's resource observer watches CRDs (warns and stops noticing CRD changes without it).
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"): [
        ("kopf", r"resource = await insights\.backbone\.wait_for\(references\.CRDS\)")],
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"): [
        ("kopf", r"resource = await insights\.backbone\.wait_for\(references\.CRDS\)")],
    # kopf's namespace observer, only when serving a list of namespaces (watchNamespaces set).
    ("", "namespaces", "list"): [("kopf", r"if not settings\.scanning\.disabled and not clusterwide:")],
    ("", "namespaces", "watch"): [("kopf", r"if not settings\.scanning\.disabled and not clusterwide:")],
}


# The cluster-scoped resources the operator reads (a ClusterRole holds them in a namespaced install too).
CLUSTER_SCOPED = {("kueue.x-k8s.io", "resourceflavors"), ("kueue.x-k8s.io", "workloadpriorityclasses"),
                  ("scheduling.k8s.io", "priorityclasses")}


def _sources() -> dict[str, str]:
    import kopf

    op = "\n".join(p.read_text() for p in sorted(OPERATOR_PKG.rglob("*.py")) if "relay" not in p.parts)
    kopf_dir = Path(kopf.__file__).parent
    return {"op": op, "kopf": "\n".join(p.read_text() for p in sorted(kopf_dir.rglob("*.py")))}


def _relay_grants() -> set[tuple[str, str, str]]:
    """What the operator grants each job's relay, from its own renderer (RBAC: it must hold it)."""
    from ltj_operator import render, spec

    body = job("grant-check", nodes=1)
    body["metadata"].update(namespace="ns", uid="00000000-0000-0000-0000-000000000000", generation=1)
    role = render.render_relay_role(spec.parse_job(body))
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def _rule_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    assert all("resourceNames" not in r and "nonResourceURLs" not in r for r in rules)
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def test_every_rule_is_used_by_the_operator(kube, helm, namespace, operator_ns, tmp_path):
    """Least privilege: each (group, resource, verb) the chart grants is used by the code, or granted on."""
    sources = _sources()
    used = {key for key, evidence in EVIDENCE.items()
            if all(re.search(pattern, sources[where]) for where, pattern in evidence)}
    stale = sorted(set(EVIDENCE) - used)
    assert not stale, f"the code no longer makes these calls; drop the rules (and the evidence): {stale}"
    grants = _relay_grants()
    assert grants, "the relay's Role grants nothing?"

    rel = install(helm, kube, tmp_path, release_name(namespace), operator_ns,
                  {"rbac": {"create": True, "aggregatedRoles": {"create": False, "namePrefix": "ltj"}}})
    installed = kube.get("clusterrole", rel.fullname)
    granted = _rule_set(installed["rules"])
    assert granted == _rule_set(one(rel.objects, "ClusterRole", rel.fullname)["rules"])
    namespace_rules = {k for k in granted if k[1] == "namespaces"}
    assert not namespace_rules, "cluster-wide kopf never lists namespaces"
    unused = sorted(granted - used - grants)
    assert not unused, f"rules no code uses (least privilege): {unused}"
    # And the other way round: everything used or granted on is in the rules.
    missing = sorted((used | grants) - granted - {k for k in used if k[1] == "namespaces"})
    assert not missing, f"calls without a rule: {missing}"
    # No rule lets the operator escalate around RBAC or read secrets (it creates the relay's token Secret).
    assert not {v for _, _, v in granted} & {"escalate", "bind", "impersonate", "*"}
    assert not {r for _, r, _ in granted} & {"*", "clusterroles", "clusterrolebindings"}
    assert {v for _, r, v in granted if r == "secrets"} == {"create"}

    # Namespaced mode: the namespaces observer is the only extra, and only there.
    rendered = helm("template", "x", str(CHART), "--kube-version", "1.34.0", "--set",
                    f"watchNamespaces={{{namespace}}}").stdout
    objects = [d for d in yaml.safe_load_all(rendered) if d]
    cluster = _rule_set(one(objects, "ClusterRole", "x-ltj-operator")["rules"])
    role = _rule_set(one(objects, "Role", "x-ltj-operator")["rules"])
    assert cluster == {k for k in used if k[0] == "apiextensions.k8s.io" or k[1] == "namespaces"
                       or k[:2] in CLUSTER_SCOPED}
    assert role == granted - cluster


def test_ltj_edit_user_submits_and_watches_jobs_only_in_their_namespace(kube, helm, namespace, operator_ns, tmp_path):
    prefix = f"ltj-{namespace[-5:]}"
    rel = install(helm, kube, tmp_path, release_name(namespace), operator_ns,
                  {"rbac": {"create": True, "aggregatedRoles": {"create": True, "namePrefix": prefix}}})
    assert {o["metadata"]["name"] for o in find(rel.objects, "ClusterRole")} >= {f"{prefix}-edit", f"{prefix}-view"}
    alice, bob, carol = (f"{n}-{namespace[-5:]}" for n in ("alice", "bob", "carol"))
    kube.kubectl("create", "rolebinding", "alice-ltj", f"--clusterrole={prefix}-edit", f"--user={alice}",
                 "-n", namespace)

    def can(user: str, *args: str) -> bool:
        return kube.kubectl("auth", "can-i", f"--as={user}", *args, check=False).stdout.strip() == "yes"

    ltj = "lightningtrainingjobs.ltj.dev"
    for verb in ("create", "get", "list", "watch", "patch", "delete"):
        assert can(alice, verb, ltj, "-n", namespace), verb
    assert can(alice, "get", ltj, "--subresource=status", "-n", namespace)
    assert not can(alice, "patch", ltj, "--subresource=status", "-n", namespace)
    assert not can(alice, "patch", "pods", "--subresource=status", "-n", namespace)
    assert not can(alice, "patch", "pods", "-n", namespace)
    assert not can(alice, "create", ltj, "-n", operator_ns)
    assert not can(alice, "list", ltj, "--all-namespaces")

    def as_user(user: str, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        return kube.kubectl(f"--as={user}", *args, check=False, **kw)

    # Real requests, not only can-i: create, watch, and the refused writes.
    manifest = yaml.safe_dump(small_job("alices-job", 1))
    created = as_user(alice, "create", "-n", namespace, "-f", "-", input=manifest)
    assert created.returncode == 0, created.stderr
    watch = as_user(alice, "get", "--raw",
                    f"/apis/ltj.dev/v1alpha1/namespaces/{namespace}/lightningtrainingjobs?watch=1&timeoutSeconds=2")
    assert watch.returncode == 0, watch.stderr
    assert json.loads(watch.stdout.splitlines()[0])["object"]["metadata"]["name"] == "alices-job"
    patched = as_user(alice, "patch", "ltj", "alices-job", "-n", namespace, "--subresource=status", "--type=merge",
                      "-p", '{"status":{"phase":"Succeeded"}}')
    assert patched.returncode != 0 and "forbidden" in patched.stderr.lower(), patched.stderr
    elsewhere = as_user(alice, "create", "-n", operator_ns, "-f", "-", input=manifest)
    assert elsewhere.returncode != 0 and "forbidden" in elsewhere.stderr.lower(), elsewhere.stderr
    assert not status(kube, namespace, "alices-job").get("phase") == "Succeeded"

    # Aggregation: the built-in edit and view roles now carry the job rights.
    kube.kubectl("create", "rolebinding", "bob-edit", "--clusterrole=edit", f"--user={bob}", "-n", namespace)
    kube.kubectl("create", "rolebinding", "carol-view", "--clusterrole=view", f"--user={carol}", "-n", namespace)
    wait_for(lambda: can(bob, "create", ltj, "-n", namespace), 30, what="aggregation into edit")
    wait_for(lambda: can(carol, "get", ltj, "--subresource=status", "-n", namespace), 30, what="aggregation into view")
    assert can(carol, "watch", ltj, "-n", namespace)
    assert not can(carol, "create", ltj, "-n", namespace)
    assert not can(bob, "patch", ltj, "--subresource=status", "-n", namespace)
    kube.kubectl("delete", "ltj", "alices-job", "-n", namespace, "--wait=false")


@pytest.fixture
def policy_release(kube, helm, namespace, operator_ns, tmp_path) -> Iterator[Release]:
    """A release with its admission policies (on by default) and its own ltj-edit; uninstalled afterwards,
    because its policies are cluster-wide and would judge the jobs of every later test."""
    rel = install(helm, kube, tmp_path, release_name(namespace), operator_ns,
                  {"rbac": {"create": True, "aggregatedRoles": {"create": True, "namePrefix": f"ltj-{namespace[-5:]}"}}})
    # The API server applies a new policy once its informer has it, a moment after helm is done.
    token_job = small_job("token", 1)
    token_job["spec"]["podTemplate"] = TOKEN_POD_TEMPLATE
    wait_for(lambda: "denied request" in kube.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-",
                                                      input=yaml.safe_dump(token_job), check=False).stderr,
             30, what="the job policy in force")
    yield rel
    helm("uninstall", rel.name, "--namespace", operator_ns, "--wait", "--timeout", "120s", check=False)


# (podTemplate, what the refusal of the ltj-edit user says); the edit user may submit each of them.
BEYOND_LTJ_EDIT: dict[str, tuple[dict[str, Any], str]] = {
    "host-path": ({"volumes": [{"name": "host", "hostPath": {"path": "/etc"}}]},
                  "spec.podTemplate.volumes: host: only users who may create pods in"),
    "ephemeral-claim": ({"volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}]},
        "spec.podTemplate.volumes: scratch: only users who may create pods in"),
    "secret-env": ({"env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]},
                   "may not get all of spec.podTemplate.env[DB_PASSWORD]: secrets/db"),
    "secret-env-from": ({"envFrom": [{"secretRef": {"name": "db"}}]},
                        "may not get all of spec.podTemplate.envFrom: secrets/db"),
    "secret-volume": ({"volumes": [{"name": "creds", "secret": {"secretName": "db"}}]},
                      "may not get all of spec.podTemplate.volumes[creds]: secrets/db"),
    "projected-secret": ({"volumes": [{"name": "creds", "projected": {"sources": [{"secret": {"name": "db"}}]}}]},
                         "may not get all of spec.podTemplate.volumes[creds]: secrets/db"),
    "pull-secret": ({"imagePullSecrets": [{"name": "db"}]},
                    "may not get all of spec.podTemplate.imagePullSecrets: secrets/db"),
    "config-map": ({"envFrom": [{"configMapRef": {"name": "settings"}}]},
                   "may not get all of spec.podTemplate.envFrom: configmaps/settings"),
    "service-account": ({"serviceAccountName": "dataset-reader"},
                        "spec.podTemplate.serviceAccountName: only users who may create pods in"),
}
# What a job may hold whoever submits it: volume sources that reach nothing outside the job's pods.
SAFE_POD_TEMPLATE = {"volumes": [
    {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
    {"name": "data", "persistentVolumeClaim": {"claimName": "dataset", "readOnly": True}},
    {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
]}
# The pods' ServiceAccount token is the relay's on rank 0: nobody's job may project it without naming
# an account of its own.
TOKEN_POD_TEMPLATE = {"volumes": [{"name": "token", "projected": {"sources": [
    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]}}]}


def test_admission_policy_lets_a_job_reach_only_what_its_author_may(kube, namespace, policy_release):
    prefix = f"ltj-{namespace[-5:]}"
    alice, bob = (f"{n}-{namespace[-5:]}" for n in ("alice", "bob"))
    kube.kubectl("create", "rolebinding", "alice-ltj", f"--clusterrole={prefix}-edit", f"--user={alice}",
                 "-n", namespace)
    kube.kubectl("create", "rolebinding", "bob-edit", "--clusterrole=edit", f"--user={bob}", "-n", namespace)
    kube.kubectl("create", "secret", "generic", "db", "--from-literal=password=hunter2", "-n", namespace)
    kube.kubectl("create", "configmap", "settings", "--from-literal=mode=fast", "-n", namespace)
    wait_for(lambda: kube.kubectl("auth", "can-i", f"--as={bob}", "create", "lightningtrainingjobs.ltj.dev", "-n",
                                  namespace, check=False).stdout.strip() == "yes", 30, what="aggregation into edit")

    def submit(user: str, pod_template: dict[str, Any], verb: str = "create", name: str = "job",
               dry_run: bool = True) -> subprocess.CompletedProcess:
        manifest = small_job(name, 1)
        manifest["spec"]["podTemplate"] = pod_template
        return kube.kubectl(f"--as={user}", verb, *(["--dry-run=server"] if dry_run else []), "-n", namespace,
                            "-f", "-", input=yaml.safe_dump(manifest), check=False)

    for case, (pod_template, message) in BEYOND_LTJ_EDIT.items():
        refused = submit(alice, pod_template)
        assert refused.returncode != 0 and "denied request" in refused.stderr, (case, refused.stderr)
        assert message in refused.stderr, (case, refused.stderr)
        allowed = submit(bob, pod_template)
        assert allowed.returncode == 0, (case, allowed.stderr)
    for user in (alice, bob):
        assert submit(user, SAFE_POD_TEMPLATE).returncode == 0
        token = submit(user, TOKEN_POD_TEMPLATE)
        assert token.returncode != 0 and "denied request" in token.stderr, token.stderr
    assert "projected serviceAccountToken sources need spec.podTemplate.serviceAccountName" in submit(
        bob, TOKEN_POD_TEMPLATE).stderr
    # With a named account every rank runs as it, so the token projected is that account's own.
    named = {**TOKEN_POD_TEMPLATE, "serviceAccountName": "dataset-reader"}
    assert submit(bob, named).returncode == 0, submit(bob, named).stderr
    assert submit(alice, named).returncode != 0

    # An existing job: alice may change what does not reach further (suspend it), not its pods.
    created = submit(bob, BEYOND_LTJ_EDIT["secret-env"][0], name="bobs-job", dry_run=False)
    assert created.returncode == 0, created.stderr

    def patch(user: str, spec: dict[str, Any]) -> subprocess.CompletedProcess:
        return kube.kubectl(f"--as={user}", "patch", "ltj", "bobs-job", "-n", namespace, "--type=merge", "-p",
                            json.dumps({"spec": spec}), check=False)

    assert patch(alice, {"runPolicy": {"suspend": True}}).returncode == 0
    image = patch(alice, {"image": "registry.example.com/alices-trainer:1"})
    assert image.returncode != 0 and "may not get all of" in image.stderr, image.stderr
    assert patch(bob, {"image": "registry.example.com/bobs-trainer:1"}).returncode == 0


def test_admission_policy_lets_a_relay_write_only_its_jobs_training_status(kube, namespace, policy_release,
                                                                             tmp_path):
    from integration.test_relay import Admin, create_job, relay_token
    from ltj_operator.relay.kube import ApiError, Endpoint, JobStatusClient

    admin = Admin(kube)
    for name in ("mine", "other"):
        create_job(admin, namespace, name)
        kube.kubectl("patch", "ltj", name, "-n", namespace, "--subresource=status", "--type=merge", "-p",
                     json.dumps({"status": {"phase": "Running", "attempt": 1, "restarts": 1}}))
    # Even where RBAC lets it (a Role granted by hand), a relay's token writes no other job's status.
    kube.kubectl("create", "role", "extra", "--verb=patch", "--resource=lightningtrainingjobs.ltj.dev/status",
                 "--resource-name=other", "-n", namespace)
    kube.kubectl("create", "rolebinding", "extra", "--role=extra", f"--serviceaccount={namespace}:mine-relay",
                 "-n", namespace)
    endpoint = Endpoint(admin.server, relay_token(admin, namespace, "mine", tmp_path / "token"),
                        Path(kube.run_dir) / "pki" / "ca.crt")
    mine, other = (JobStatusClient(endpoint, namespace, job) for job in ("mine", "other"))
    wait_for(lambda: "denied request" in kube.kubectl(
        f"--as=system:serviceaccount:{namespace}:mine-relay", "patch", "ltj", "mine", "-n", namespace,
        "--subresource=status", "--type=merge", "--dry-run=server", "-p", '{"status":{"phase":"Failed"}}',
        check=False).stderr, 30, what="the relay policy in force")

    # The relay's own writes (relay/core.py): a merge patch, then a JSON patch fenced on the seq.
    mine.merge_patch({"status": {"training": {"seq": 1, "epoch": 0}}})
    progress = {"progressPercentage": 40, "lastUpdatedTime": "2025-01-01T00:00:00Z"}
    mine.json_patch([{"op": "test", "path": "/status/training/seq", "value": 1},
                     {"op": "replace", "path": "/status/training", "value": {"seq": 2, "epoch": 1}},
                     {"op": "add", "path": "/status/trainerStatus", "value": progress}])

    def refused(client: JobStatusClient, status_patch: dict[str, Any]) -> str:
        with pytest.raises(ApiError) as err:
            client.merge_patch({"status": status_patch})
        assert err.value.status == 403, err.value
        return err.value.message

    for field, value in (("phase", "Succeeded"), ("attempt", 0), ("restarts", 0), ("conditions", [])):
        message = refused(mine, {field: value, "training": {"seq": 3}})
        assert f"a relay writes only status.training and status.trainerStatus, not status.{field}" in message, message
    assert "is not the relay of other" in refused(other, {"training": {"seq": 9}})
    mine.close()
    other.close()
    assert status(kube, namespace, "mine") == {"phase": "Running", "attempt": 1, "restarts": 1,
                                               "training": {"seq": 2, "epoch": 1}, "trainerStatus": progress}
    assert "training" not in status(kube, namespace, "other")


def test_operator_pod_passes_restricted_pod_security(kube, helm, namespace, operator_ns, tmp_path):
    """The operator pod is admitted by Pod Security `restricted` (server-side dry run of the real pod)."""
    kube.kubectl("label", "namespace", operator_ns, "pod-security.kubernetes.io/enforce=restricted")
    rel = install(helm, kube, tmp_path, release_name(namespace), operator_ns,
                  {"rbac": {"create": True, "aggregatedRoles": {"create": False, "namePrefix": "ltj"}}})
    template = one(rel.objects, "Deployment")["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "psa-check", **template["metadata"]},
           "spec": template["spec"]}
    ok = kube.kubectl("create", "--dry-run=server", "-n", operator_ns, "-f", "-", input=json.dumps(pod), check=False)
    assert ok.returncode == 0, ok.stderr
    # The check is live: the same pod allowed to escalate privileges is refused.
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    bad = kube.kubectl("create", "--dry-run=server", "-n", operator_ns, "-f", "-", input=json.dumps(pod),
                       check=False)
    assert bad.returncode != 0 and "violates PodSecurity" in bad.stderr, bad.stderr


def test_notes_crd_upgrade_command_applies_over_a_crd_helm_created(kube, helm, namespace, operator_ns, tmp_path):
    """The CRD upgrade command the notes print, run as printed, updates a CRD that Helm created."""
    # A chart copy whose CRD has a group of its own: Helm creates it (it skips an existing CRD, and the
    # session's is one) and the CRD every other test uses stays untouched.
    group = f"c{namespace[-5:]}.ltj.dev"
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    crd_file = chart / "crds" / "ltj.dev_lightningtrainingjobs.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    crd["spec"]["group"] = group
    crd["metadata"]["name"] = crd_name = f"{crd['spec']['names']['plural']}.{group}"
    for clash in ("shortNames", "categories"):
        crd["spec"]["names"].pop(clash, None)
    crd_file.write_text(yaml.safe_dump(crd))
    name = release_name(namespace)
    helm("install", name, str(chart), "--namespace", operator_ns, "--wait", "--timeout", "120s",
         "--set", "replicaCount=0", "--set", "rbac.create=false", "--set", "rbac.aggregatedRoles.create=false")
    try:
        notes = helm("get", "notes", name, "--namespace", operator_ns).stdout
        (command,) = [line.split() for line in notes.splitlines() if "crds/ltj.dev_lightningtrainingjobs.yaml" in line]
        # The next version's CRD, where the command's relative path finds it; the changed description is
        # a field Helm's create made Helm's field manager own.
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "the next version"
        (tmp_path / "crds").mkdir()
        (tmp_path / "crds" / "ltj.dev_lightningtrainingjobs.yaml").write_text(yaml.safe_dump(crd))

        def run(words: list[str]) -> subprocess.CompletedProcess:
            assert words[0] == "kubectl", words
            return subprocess.run([str(kube.bin_dir / "kubectl"), f"--kubeconfig={kube.kubeconfig}", *words[1:]],
                                  cwd=tmp_path, capture_output=True, text=True, timeout=60)

        # The check is live: without --force-conflicts the same apply conflicts with Helm's ownership.
        unforced = run([w for w in command if w != "--force-conflicts"])
        assert unforced.returncode != 0 and "conflict" in unforced.stderr, unforced.stderr
        applied = run(command)
        assert applied.returncode == 0, applied.stderr
        live = kube.get("crd", crd_name)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert live["description"] == "the next version"
    finally:
        helm("uninstall", name, "--namespace", operator_ns, "--wait", "--timeout", "120s", check=False)
        kube.kubectl("delete", "crd", crd_name, "--wait=false", check=False)


def _labelled(kube: Kube, release: str) -> set[str]:
    """kind/name (namespace) of every object in the cluster with the release's instance label."""
    kinds = kube.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io")]
    out = kube.kubectl("get", ",".join(kinds), "-A", "-l", f"app.kubernetes.io/instance={release}",
                       "-o", "json").stdout
    return {f"{i['kind']}/{i['metadata']['name']} ({i['metadata'].get('namespace', '')})"
            for i in json.loads(out)["items"]}


def test_upgrade_and_uninstall_leave_no_orphans(kube, helm, namespace, operator_ns, tmp_path):
    name = release_name(namespace)
    prefix = f"ltj-{namespace[-5:]}"
    values = {"rbac": {"create": True, "aggregatedRoles": {"create": True, "namePrefix": prefix}}}
    rel = install(helm, kube, tmp_path, name, operator_ns, values)

    def rendered(r: Release) -> set[str]:
        return {f"{o['kind']}/{o['metadata']['name']} ({o['metadata'].get('namespace', '')})" for o in r.objects}

    def live() -> set[str]:
        # ReplicaSets carry the pod template's labels (the Deployment owns them), Endpoints and
        # EndpointSlices their Service's (the endpoint controllers make and remove them with it).
        return {o for o in _labelled(kube, name) if not o.startswith(("ReplicaSet/", "Endpoints/", "EndpointSlice/"))}

    assert live() == rendered(rel)
    # Upgrade to namespaced RBAC: the Role and RoleBinding appear, the rules move out of the ClusterRole.
    narrow = install(helm, kube, tmp_path, name, operator_ns, {**values, "watchNamespaces": [namespace],
                                                                "logLevel": "DEBUG"}, upgrade=True)
    assert one(narrow.objects, "Role", rel.fullname, namespace)
    assert live() == rendered(narrow)
    deployed = kube.get("deployment", rel.fullname, "-n", operator_ns)["spec"]["template"]["spec"]
    assert {"name": "LTJ_LOG_LEVEL", "value": "DEBUG"} in deployed["containers"][0]["env"]
    assert f"--namespace={namespace}" in deployed["containers"][0]["command"]
    # Back to cluster-wide: helm deletes what is no longer rendered.
    wide = install(helm, kube, tmp_path, name, operator_ns, values, upgrade=True)
    assert not find(wide.objects, "Role", namespace=namespace)  # only the leader election's, in the release's
    assert live() == rendered(wide)
    assert absent(kube, "role", rel.fullname, "-n", namespace)

    helm("uninstall", name, "--namespace", operator_ns, "--wait", "--timeout", "120s")
    # ReplicaSets (labelled through the pod template) go with the garbage collector.
    wait_for(lambda: not _labelled(kube, name), 60, what="no objects of the release left")
    secrets = kube.get("secrets", "-n", operator_ns, "-l", f"owner=helm,name={name}")["items"]
    assert not secrets, "helm's release records left behind"
    # The CRD stays (Helm never deletes crds/; deleting it would delete every job): documented.
    assert kube.kubectl("get", "crd", "lightningtrainingjobs.ltj.dev", check=False).returncode == 0
