"""helm template of charts/ltj-operator over the default and edge-case values: what each object says."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from unit.chart.chartlib import CHART, NAMESPACE, RELEASE, container, env_of, find, one

pytestmark = pytest.mark.unit

APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
CHART_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
FULLNAME = f"{RELEASE}-ltj-operator"
DIGEST = "sha256:" + "0123456789abcdef" * 4

# Value sets the chart must render (and lint) cleanly; each exercises a different branch.
EDGE_CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "watch-namespaces": {"watchNamespaces": ["team-a", "team-b"]},
    "custom-images": {
        "image": {"repository": "registry.example.com:5000/ml/ltj-operator", "tag": "1.2.3", "pullPolicy": "Always"},
        "defaultTrainerImage": "registry.example.com:5000/ml/ltj-trainer:1.2.3",
        "relayImage": f"registry.example.com:5000/ml/ltj-relay@{DIGEST}",
        "relayImagePullPolicy": "Always",
        "imagePullSecrets": [{"name": "regcred"}],
        "defaultImagePullSecrets": [{"name": "regcred"}, {"name": "mirror.example.com"}],
    },
    "digest": {"image": {"digest": DIGEST}},
    "resources-and-scheduling": {
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": 2, "memory": "1Gi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}}},
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"example.com/team": "ml-platform"},
        "podLabels": {"example.com/cost-center": "ml"},
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
    },
    "settings": {"logLevel": "DEBUG", "logFormat": "json", "resyncSeconds": 30, "workers": 8,
                 "stallDetection": {"factor": 2.5, "minSeconds": 120}, "relayTokenExpirationSeconds": 7200,
                 "healthPort": 9090},
    "stopped-no-rbac": {"replicaCount": 0, "rbac": {"create": False, "aggregatedRoles": {"create": False}},
                        "serviceAccount": {"create": False, "name": "existing-operator"},
                        "admissionPolicy": {"enabled": False}},
    "high-availability": {"replicaCount": 3, "leaderElection": {"leaseDurationSeconds": 30, "renewDeadlineSeconds": 20,
                                                                "retryPeriodSeconds": 4}},
    "overrides": {"fullnameOverride": "ml-operator", "rbac": {"aggregatedRoles": {"create": True,
                                                                                  "namePrefix": "ml-jobs"}}},
    "metrics-monitored": {"metrics": {"port": 9102, "service": {"annotations": {"prometheus.io/scrape": "true"}},
                                      "serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "10s",
                                                         "labels": {"release": "kube-prometheus-stack"}},
                                      "dashboard": {"enabled": True, "namespace": "monitoring",
                                                    "annotations": {"grafana_folder": "Training"}}}},
    "metrics-off": {"metrics": {"enabled": False}},
    "network-policy-off": {"networkPolicy": {"enabled": False}},
    "network-policy-scrapers": {"networkPolicy": {"metricsFrom": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]}},
    "admission-relaxed": {"admissionPolicy": {
        "validationActions": ["Warn", "Audit"], "safeVolumeSources": ["emptyDir", "nfs"],
        "namespaceSelector": {"matchExpressions": [{"key": "ltj.dev/admission", "operator": "NotIn",
                                                    "values": ["off"]}]}}},
}

STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/component", "app.kubernetes.io/managed-by", "helm.sh/chart")


def kopf_args(objects: list[dict[str, Any]]) -> list[str]:
    command = container(objects)["command"]
    assert command[:2] == ["kopf", "run"], command
    return command[2:]


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_lint_default_and_strict(helm, values_file, case):
    path = values_file(EDGE_CASES[case])
    for strict in ([], ["--strict"]):
        proc = helm("lint", str(CHART), *strict, "--kube-version", "1.34.0", "-f", str(path))
        assert "0 chart(s) failed" in proc.stdout, proc.stdout
        # Only the icon hint may remain; warnings or errors fail --strict anyway, this names them.
        problems = [ln for ln in proc.stdout.splitlines() if ln.startswith("[") and "icon is recommended" not in ln]
        assert not problems, proc.stdout


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_every_object_has_the_standard_labels(render, case):
    objects = render(EDGE_CASES[case])
    assert objects
    for obj in objects:
        labels = obj["metadata"].get("labels") or {}
        where = f"{obj['kind']}/{obj['metadata']['name']} ({case})"
        missing = [k for k in STANDARD_LABELS if k not in labels]
        assert not missing, f"{where}: missing labels {missing}"
        assert labels["app.kubernetes.io/name"] == "ltj-operator", where
        assert labels["app.kubernetes.io/instance"] == RELEASE, where
        assert labels["app.kubernetes.io/version"] == APP_VERSION, where
        assert labels["app.kubernetes.io/managed-by"] == "Helm", where
        assert labels["helm.sh/chart"] == f"ltj-operator-{CHART_VERSION}", where
        assert labels["app.kubernetes.io/component"] in ("operator", "rbac", "admission"), where
    for deploy in find(objects, "Deployment"):
        pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
        assert all(k in pod_labels for k in STANDARD_LABELS)
        # The selector must match the pod and must not hold labels that change on upgrade.
        selector = deploy["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        assert not {"app.kubernetes.io/version", "helm.sh/chart"} & selector.keys()


def test_default_render(render):
    objects = render()
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == sorted([
        ("ServiceAccount", FULLNAME), ("Deployment", FULLNAME), ("Service", f"{FULLNAME}-metrics"),
        ("NetworkPolicy", FULLNAME), ("ClusterRole", FULLNAME),
        ("ClusterRoleBinding", FULLNAME), ("ClusterRole", "ltj-edit"), ("ClusterRole", "ltj-view"),
        ("Role", f"{FULLNAME}-leader-election"), ("RoleBinding", f"{FULLNAME}-leader-election"),
        *[(kind, f"{FULLNAME}-{policy}") for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
          for policy in ("jobs", "relay-status")],
    ])
    # Namespaced objects go to the release namespace.
    for obj in objects:
        if obj["kind"] in ("ServiceAccount", "Deployment", "Service", "NetworkPolicy"):
            assert obj["metadata"]["namespace"] == NAMESPACE
    deploy = one(objects, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    # The Lease keeps a rollout's new pod standing by until the old one gives the lease up.
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == FULLNAME
    assert "automountServiceAccountToken" not in pod  # the operator needs its token
    c = container(objects)
    assert c["image"] == f"ltj-operator:{APP_VERSION}"
    assert c["imagePullPolicy"] == "IfNotPresent"
    args = kopf_args(objects)
    assert "--standalone" in args and "--all-namespaces" in args
    assert "--module=ltj_operator.handlers" in args
    assert "--liveness=http://0.0.0.0:8080/healthz" in args
    assert not [a for a in args if a.startswith("--namespace")]
    env = env_of(objects)
    assert env["LTJ_DEFAULT_TRAINER_IMAGE"] == f"ltj-trainer:{APP_VERSION}"
    assert env["LTJ_OPERATOR_IMAGE"] == f"ltj-operator:{APP_VERSION}"  # the relay runs from the operator image
    assert env["LTJ_WATCH_NAMESPACES"] == ""
    assert env["LTJ_LOG_LEVEL"] == "INFO"
    assert env["LTJ_DEFAULT_IMAGE_PULL_SECRETS"] == ""
    assert env["LTJ_LEASE_NAMESPACE"] == NAMESPACE
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FULLNAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    # Metrics are served and have a Service; a ServiceMonitor needs the Prometheus Operator's CRDs: opt-in.
    assert env["LTJ_METRICS_PORT"] == "8081"
    assert not find(objects, "PodMonitor") and not find(objects, "ServiceMonitor") and not find(objects, "ConfigMap")


def test_kopf_command_line_parses_with_kopf(render):
    """Every flag the chart passes is one `kopf run` accepts (parsed by kopf's own CLI, not run)."""
    from kopf.cli import main

    run = main.commands["run"]
    for case in ("default", "watch-namespaces", "settings"):
        args = kopf_args(render(EDGE_CASES[case]))
        ctx = run.make_context("run", list(args))
        assert ctx.params["standalone"] is True
        assert ctx.params["modules"] == ("ltj_operator.handlers",)
        if case == "watch-namespaces":
            assert ctx.params["namespaces"] == ("team-a", "team-b") and not ctx.params["clusterwide"]
        else:
            assert ctx.params["clusterwide"] is True and ctx.params["namespaces"] == ()


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_operator_accepts_the_environment_the_chart_sets(render, case):
    """The chart's env goes through the operator's own startup validation unchanged."""
    from ltj_operator.config import OperatorConfig

    values = EDGE_CASES[case]
    objects = render(values)
    env = env_of(objects)
    config = OperatorConfig.from_env(env)
    assert config.watch_namespaces == tuple(values.get("watchNamespaces", ()))
    assert config.log_level == values.get("logLevel", "INFO")
    assert config.health_port == values.get("healthPort", 8080)
    assert config.workers == values.get("workers", 4)
    assert config.resync_seconds == values.get("resyncSeconds", 60)
    assert config.stall_factor == (values.get("stallDetection") or {}).get("factor", 5)
    assert config.stall_min_seconds == (values.get("stallDetection") or {}).get("minSeconds", 600)
    assert config.relay_token_expiration_seconds == values.get("relayTokenExpirationSeconds", 3600)
    assert config.relay_image_pull_policy == values.get("relayImagePullPolicy", "IfNotPresent")
    assert config.operator_image == (values.get("relayImage") or container(objects)["image"])
    assert config.default_image_pull_secrets == tuple(s["name"] for s in values.get("defaultImagePullSecrets", ()))
    metrics = {"enabled": True, "port": 8081, **values.get("metrics", {})}
    assert config.metrics_port == (metrics["port"] if metrics["enabled"] else 0)
    assert config.network_policy is values.get("networkPolicy", {}).get("enabled", True)
    # Leader election always, over a Lease in the release namespace (kopf's peering stays off).
    election = {"leaseDurationSeconds": 15, "renewDeadlineSeconds": 10, "retryPeriodSeconds": 2,
                **values.get("leaderElection", {})}
    assert config.lease_namespace == NAMESPACE
    assert (config.lease_duration_seconds, config.lease_renew_deadline_seconds, config.lease_retry_period_seconds) == (
        election["leaseDurationSeconds"], election["renewDeadlineSeconds"], election["retryPeriodSeconds"])


def test_replicas_elect_a_leader_with_a_lease_in_the_release_namespace(render):
    from ltj_operator.leader import LEASE_NAME

    objects = render(EDGE_CASES["high-availability"])
    assert one(objects, "Deployment")["spec"]["replicas"] == 3
    role = one(objects, "Role", f"{FULLNAME}-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    # Only its own Lease may be read and renewed (a create cannot be limited to a name).
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [LEASE_NAME],
         "verbs": ["get", "update"]}]
    binding = one(objects, "RoleBinding", f"{FULLNAME}-leader-election")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]


@pytest.mark.parametrize(("election", "words"), [
    ({"leaseDurationSeconds": 10, "renewDeadlineSeconds": 10}, "renewDeadlineSeconds must be less than"),
    ({"renewDeadlineSeconds": 2, "retryPeriodSeconds": 2}, "retryPeriodSeconds must be less than"),
])
def test_lease_timing_that_would_let_two_leaders_act_is_refused(helm, values_file, election, words):
    proc = helm("template", "ltj", str(CHART), "-f", str(values_file({"leaderElection": election})), check=False)
    assert proc.returncode != 0 and words in proc.stderr, proc.stderr


def test_watch_namespaces_uses_roles_per_namespace(render):
    cluster_wide = render()
    objects = render({"watchNamespaces": ["team-a", "team-b"]})
    args = kopf_args(objects)
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args
    assert env_of(objects)["LTJ_WATCH_NAMESPACES"] == "team-a,team-b"

    full_rules = one(cluster_wide, "ClusterRole", FULLNAME)["rules"]
    cluster_rules = one(objects, "ClusterRole", FULLNAME)["rules"]
    # Cluster-wide, only reads of cluster-scoped objects: kopf's of CRDs and (for a namespace list) namespaces,
    # the operator's of Kueue's flavors and priority classes.
    cluster_scoped = {(("apiextensions.k8s.io",), ("customresourcedefinitions",)), (("",), ("namespaces",)),
                      (("kueue.x-k8s.io",), ("resourceflavors", "workloadpriorityclasses")),
                      (("scheduling.k8s.io",), ("priorityclasses",))}
    assert {(tuple(r["apiGroups"]), tuple(r["resources"])) for r in cluster_rules} == cluster_scoped
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in cluster_rules)
    for ns in ("team-a", "team-b"):
        role = one(objects, "Role", FULLNAME, ns)
        binding = one(objects, "RoleBinding", FULLNAME, ns)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FULLNAME}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
        # The Role holds exactly the namespaced part of the cluster-wide rules.
        expected = [r for r in full_rules if (tuple(r["apiGroups"]), tuple(r["resources"])) not in cluster_scoped]
        assert role["rules"] == expected
    # In the release namespace (unless watched) only the Lease's.
    assert [r["metadata"]["name"] for r in find(objects, "Role", namespace=NAMESPACE)] == [f"{FULLNAME}-leader-election"]


def test_custom_images_and_digest(render):
    objects = render(EDGE_CASES["custom-images"])
    c = container(objects)
    assert c["image"] == "registry.example.com:5000/ml/ltj-operator:1.2.3"
    assert c["imagePullPolicy"] == "Always"
    env = env_of(objects)
    assert env["LTJ_DEFAULT_TRAINER_IMAGE"] == "registry.example.com:5000/ml/ltj-trainer:1.2.3"
    assert env["LTJ_OPERATOR_IMAGE"] == f"registry.example.com:5000/ml/ltj-relay@{DIGEST}"
    assert env["LTJ_RELAY_IMAGE_PULL_POLICY"] == "Always"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]

    pinned = render(EDGE_CASES["digest"])
    assert container(pinned)["image"] == f"ltj-operator@{DIGEST}"
    # The relay follows the operator image, digest included.
    assert env_of(pinned)["LTJ_OPERATOR_IMAGE"] == f"ltj-operator@{DIGEST}"


def test_default_trainer_image_and_pull_secrets_reach_every_training_pod(render):
    """Chart values -> the operator's env -> every pod of a job that names neither (private registries)."""
    from ltj_operator.config import OperatorConfig
    from ltj_operator.render import render_pods
    from unit.operator.operator_helpers import make_job

    objects = render(EDGE_CASES["custom-images"])
    config = OperatorConfig.from_env(env_of(objects))
    pods = render_pods(make_job(nodes=2), 0, config)
    for pod in pods:
        assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror.example.com"}]
        assert pod["spec"]["containers"][0]["image"] == "registry.example.com:5000/ml/ltj-trainer:1.2.3"
    # The relay sidecar shares rank 0's pod, so the same secrets pull its image.
    (relay,) = pods[0]["spec"]["initContainers"]
    assert relay["image"] == f"registry.example.com:5000/ml/ltj-relay@{DIGEST}"


def test_resources_and_scheduling(render):
    values = EDGE_CASES["resources-and-scheduling"]
    objects = render(values)
    deploy = one(objects, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    c = container(objects)
    assert c["resources"] == values["resources"]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    meta = deploy["spec"]["template"]["metadata"]
    assert meta["annotations"] == values["podAnnotations"]
    assert meta["labels"]["example.com/cost-center"] == "ml"
    env = env_of(objects)
    assert env["HTTPS_PROXY"] == "http://proxy:3128" and "LTJ_LOG_LEVEL" in env
    # Default resources: requests set, a memory limit, no CPU limit (no throttling of the event loop).
    default = container(render())["resources"]
    assert default["requests"]["cpu"] and default["requests"]["memory"] and default["limits"]["memory"]
    assert "cpu" not in default["limits"]


def test_security_context_is_restricted(render):
    for case in sorted(EDGE_CASES):
        objects = render(EDGE_CASES[case])
        deploy = one(objects, "Deployment")
        pod = deploy["spec"]["template"]["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, case
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, case
        assert psc.get("runAsUser", 1) != 0, case
        csc = container(objects)["securityContext"]
        assert csc["allowPrivilegeEscalation"] is False, case
        assert csc["capabilities"] == {"drop": ["ALL"]}, case
        assert csc["readOnlyRootFilesystem"] is True, case
        assert not csc.get("privileged"), case
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), case
        # Read-only root: a small writable /tmp, and no hostPath volumes.
        assert {"name": "tmp", "mountPath": "/tmp"} in container(objects)["volumeMounts"], case
        assert all("hostPath" not in v for v in pod["volumes"]), case


def test_probes_use_kopfs_health_endpoint(render):
    for port in (8080, 9090):
        objects = render({"healthPort": port})
        c = container(objects)
        assert f"--liveness=http://0.0.0.0:{port}/healthz" in kopf_args(objects)
        assert c["ports"][0] == {"name": "health", "containerPort": port, "protocol": "TCP"}
        for probe in ("livenessProbe", "readinessProbe"):
            assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
            assert c[probe]["periodSeconds"] >= 1
        assert env_of(objects)["LTJ_HEALTH_PORT"] == str(port)


def test_log_level_maps_to_kopf_verbosity(render):
    expected = {"DEBUG": ["--verbose"], "INFO": [], "WARNING": ["--quiet"], "ERROR": ["--quiet"]}
    for level, flags in expected.items():
        args = kopf_args(render({"logLevel": level}))
        assert [a for a in args if a in ("--verbose", "--quiet", "--debug")] == flags, level
    assert "--log-format=json" in kopf_args(render({"logFormat": "json"}))


def test_stopped_without_rbac(render):
    objects = render(EDGE_CASES["stopped-no-rbac"])
    assert one(objects, "Deployment")["spec"]["replicas"] == 0
    # The metrics Service and the operator pod's NetworkPolicy.
    assert {o["kind"] for o in objects} == {"Deployment", "Service", "NetworkPolicy"}
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing-operator"


def test_aggregated_roles(render):
    objects = render()
    edit = one(objects, "ClusterRole", "ltj-edit")
    view = one(objects, "ClusterRole", "ltj-view")
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]

    def grants(role: dict[str, Any]) -> set[tuple[str, str]]:
        return {(res, verb) for r in role["rules"] for res in r["resources"] for verb in r["verbs"]}

    write = {"create", "update", "patch", "delete"}
    assert {("lightningtrainingjobs", v) for v in write | {"get", "list", "watch"}} <= grants(edit)
    # Status belongs to the operator and the relay: readable, never writable by users.
    assert ("lightningtrainingjobs/status", "get") in grants(edit)
    assert not {("lightningtrainingjobs/status", v) for v in write} & grants(edit)
    assert grants(view) == {(res, v) for res in ("lightningtrainingjobs", "lightningtrainingjobs/status")
                            for v in ("get", "list", "watch")}
    for role in (edit, view):
        assert all(r["apiGroups"] == ["ltj.dev"] for r in role["rules"])

    renamed = render(EDGE_CASES["overrides"])
    assert {o["metadata"]["name"] for o in find(renamed, "ClusterRole")} == {"ml-operator", "ml-jobs-edit",
                                                                             "ml-jobs-view"}


def test_names_follow_release_and_overrides(render):
    # A release named after the chart does not repeat it.
    assert one(render(release="ltj-operator"), "Deployment")["metadata"]["name"] == "ltj-operator"
    assert one(render(release="prod"), "Deployment")["metadata"]["name"] == "prod-ltj-operator"
    objects = render(EDGE_CASES["overrides"])
    assert {o["metadata"]["name"] for o in objects if o["kind"] != "ClusterRole"} == {
        "ml-operator", "ml-operator-metrics", "ml-operator-jobs", "ml-operator-relay-status",
        "ml-operator-leader-election"}


def test_admission_policies_follow_their_values(render):
    """Both policies with their bindings, on by default; what values change reaches the objects (their
    behaviour on the API server: tests/integration/test_chart.py)."""
    policies = ("jobs", "relay-status")
    objects = render()
    for policy in policies:
        name = f"{FULLNAME}-{policy}"
        spec = one(objects, "ValidatingAdmissionPolicy", name)["spec"]
        assert spec["failurePolicy"] == "Fail"
        assert {g for r in spec["matchConstraints"]["resourceRules"] for g in r["apiGroups"]} == {"ltj.dev"}
        binding = one(objects, "ValidatingAdmissionPolicyBinding", name)["spec"]
        assert binding == {"policyName": name, "validationActions": ["Deny"],
                           "matchResources": {"namespaceSelector": {}}}
    jobs = one(objects, "ValidatingAdmissionPolicy", f"{FULLNAME}-jobs")["spec"]
    safe = next(v["expression"] for v in jobs["variables"] if v["name"] == "unsafeVolumes")
    assert '["configMap","downwardAPI","emptyDir","persistentVolumeClaim","projected","secret"]' in safe
    # The operator's own account is never taken for a relay, whatever its name.
    (relay,) = one(objects, "ValidatingAdmissionPolicy", f"{FULLNAME}-relay-status")["spec"]["matchConditions"]
    assert f"!= 'system:serviceaccount:{NAMESPACE}:{FULLNAME}'" in relay["expression"]

    values = EDGE_CASES["admission-relaxed"]["admissionPolicy"]
    relaxed = render(EDGE_CASES["admission-relaxed"])
    for policy in policies:
        binding = one(relaxed, "ValidatingAdmissionPolicyBinding", f"{FULLNAME}-{policy}")["spec"]
        assert binding["validationActions"] == ["Warn", "Audit"]
        assert binding["matchResources"]["namespaceSelector"] == values["namespaceSelector"]
    jobs = one(relaxed, "ValidatingAdmissionPolicy", f"{FULLNAME}-jobs")["spec"]
    assert '["emptyDir","nfs"]' in next(v["expression"] for v in jobs["variables"] if v["name"] == "unsafeVolumes")
    assert any("sources other than emptyDir, nfs" in v.get("messageExpression", "") for v in jobs["validations"])

    off = render({"admissionPolicy": {"enabled": False}})
    assert not find(off, "ValidatingAdmissionPolicy") and not find(off, "ValidatingAdmissionPolicyBinding")


NETWORKPOLICIES_RULE = ("networking.k8s.io", "networkpolicies", "create")


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


@pytest.mark.parametrize("case", ["default", "watch-namespaces", "network-policy-off", "metrics-off",
                                  "network-policy-scrapers"])
def test_network_policies_follow_their_values(render, case):
    """networkPolicy.enabled turns on the operator's per-job policies (its env and the RBAC to create them)
    and the operator pod's own policy, which admits only the metrics scrape."""
    values = EDGE_CASES[case]
    objects = render(values)
    enabled = values.get("networkPolicy", {}).get("enabled", True)
    assert env_of(objects)["LTJ_NETWORK_POLICY"] == str(enabled).lower()
    roles = [o for o in objects if o["kind"] in ("ClusterRole", "Role") and o["metadata"]["name"] == FULLNAME]
    assert [NETWORKPOLICIES_RULE in _grants(r["rules"]) for r in roles if "pods" in str(r["rules"])] == (
        [enabled] * len(values.get("watchNamespaces", [None])))
    policies = find(objects, "NetworkPolicy")
    if not enabled:
        assert policies == []
        return
    (policy,) = policies
    assert policy["metadata"]["namespace"] == NAMESPACE
    spec = policy["spec"]
    pod = one(objects, "Deployment")["spec"]["template"]
    assert spec["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert spec["policyTypes"] == ["Ingress"]
    if not values.get("metrics", {}).get("enabled", True):
        assert spec["ingress"] == []  # nothing connects to the operator
        return
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert "metrics" in [p["name"] for p in container(objects)["ports"]]
    assert rule.get("from", []) == values.get("networkPolicy", {}).get("metricsFrom", [])
