"""The commands users copy name what exists.

Every kubectl and helm command in README.md, docs/helm.md, docs/cluster-requirements.md, the chart's
README and the notes helm prints after an install names an object that the chart renders for the
documented release (in the namespace the command looks in), or one that the operator makes per job
(named with a placeholder such as <job>), or a file of the repository; helm commands use the
documented release and namespace. The cluster requirements' list of per-job objects and their
NetworkPolicy selectors match what the operator renders.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pytest
import yaml

from ltj_operator import constants as C
from ltj_operator.config import OperatorConfig
from ltj_operator.render import render_children, render_pods
from unit.chart.chartlib import CHART, KUBE_VERSION, REPO
from unit.operator.operator_helpers import make_job

pytestmark = pytest.mark.unit

DOCS = [REPO / "README.md", REPO / "docs" / "helm.md", REPO / "docs" / "cluster-requirements.md",
        CHART / "README.md"]
REQUIREMENTS = REPO / "docs" / "cluster-requirements.md"
CRD = yaml.safe_load((REPO / "crds" / "ltj.dev_lightningtrainingjobs.yaml").read_text())
SAMPLE_JOBS = {doc["metadata"]["name"] for path in (REPO / "crds" / "samples").glob("*.yaml")
               for doc in yaml.safe_load_all(path.read_text()) if doc}
# Files users write themselves (the README's `kubectl apply -f job.yaml`), and stdin.
USER_FILES = {"job.yaml", "-"}
# How the docs write a job's name and a rank in the names of per-job objects.
JOB_PLACEHOLDERS = ("<job>", "<name>")
RANK_PLACEHOLDER = "<i>"
JOB = "jobx"
# Notes branches: the defaults, and a stopped operator watching one namespace.
NOTES_VALUES = [{}, {"replicaCount": 0, "watchNamespaces": ["team-a"]}]

KINDS = {
    **dict.fromkeys(("deployment", "deployments", "deploy"), "Deployment"),
    **dict.fromkeys(("pod", "pods", "po"), "Pod"),
    **dict.fromkeys(("service", "services", "svc"), "Service"),
    **dict.fromkeys(("persistentvolumeclaim", "persistentvolumeclaims", "pvc"), "PersistentVolumeClaim"),
    **dict.fromkeys(("serviceaccount", "serviceaccounts", "sa"), "ServiceAccount"),
    **dict.fromkeys(("secret", "secrets"), "Secret"),
    **dict.fromkeys(("role", "roles"), "Role"),
    **dict.fromkeys(("rolebinding", "rolebindings"), "RoleBinding"),
    **dict.fromkeys(("clusterrole", "clusterroles"), "ClusterRole"),
    **dict.fromkeys(("clusterrolebinding", "clusterrolebindings"), "ClusterRoleBinding"),
    **dict.fromkeys(("crd", "crds", "customresourcedefinition", "customresourcedefinitions"),
                    "CustomResourceDefinition"),
    **dict.fromkeys(("event", "events", "ev"), "Event"),
    **dict.fromkeys(("namespace", "namespaces", "ns"), "Namespace"),
    **dict.fromkeys(("node", "nodes", "no"), "Node"),
    **dict.fromkeys(("storageclass", "storageclasses", "sc"), "StorageClass"),
    **dict.fromkeys(("endpointslice", "endpointslices"), "EndpointSlice"),
    **dict.fromkeys(("networkpolicy", "networkpolicies", "netpol"), "NetworkPolicy"),
    **dict.fromkeys((CRD["spec"]["names"]["plural"], CRD["spec"]["names"]["singular"],
                     *CRD["spec"]["names"]["shortNames"]), C.KIND),
}
# The cluster's own objects: names there are the reader's (their namespaces, nodes, classes).
CLUSTER_KINDS = {"Namespace", "Node", "StorageClass", "EndpointSlice"}
# Flags followed by a value (kubectl's and helm's) in the commands the docs show.
VALUE_FLAGS = {"-n", "--namespace", "-f", "--filename", "-o", "--output", "-l", "--selector", "--for", "--timeout",
               "--clusterrole", "--role", "--user", "-c", "--container", "--set", "--set-string", "--values",
               "--kube-version", "--version", "-p", "--patch"}
HELM_RELEASE_VERBS = {"install", "upgrade", "uninstall", "status", "rollback", "history", "template"}

_FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`([^`]+)`")
_SHELL_FENCES = {"", "bash", "sh", "shell", "console"}


# --- finding the commands -----------------------------------------------------------------------


def shell_commands(text: str) -> list[list[str]]:
    """The kubectl and helm invocations on lines that start with one (prompts, comments,
    continuations and chains handled), as argument lists."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip().removeprefix("$ ")
        if line.split(" ", 1)[0] not in ("kubectl", "helm"):
            continue  # prose, or another program
        words = shlex.split(line, comments=True)
        segment: list[str] = []
        for word in [*words, ";"]:
            if word in ("&&", "||", "|", ";"):
                if segment and segment[0] in ("kubectl", "helm"):
                    out.append(segment)
                segment = []
            else:
                segment.append(word)
    return out


def markdown_commands(text: str) -> list[list[str]]:
    commands = [c for lang, body in _FENCE.findall(text) if lang in _SHELL_FENCES for c in shell_commands(body)]
    for span in _INLINE.findall(_FENCE.sub("", text)):
        commands += shell_commands(span.replace("\n", " "))
    return commands


@dataclass
class Args:
    positional: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    switches: set[str] = field(default_factory=set)

    def get(self, *names: str) -> str | None:
        return next((self.options[n] for n in names if n in self.options), None)


def parse(words: list[str]) -> Args:
    args = Args()
    rest = iter(words)
    for word in rest:
        if word.startswith("-") and word != "-":
            key, eq, value = word.partition("=")
            if eq:
                args.options[key] = value
            elif key in VALUE_FLAGS:
                args.options[key] = next(rest)
            else:
                args.switches.add(key)
        else:
            args.positional.append(word)
    return args


# --- what exists --------------------------------------------------------------------------------


def per_job_objects() -> list[dict[str, Any]]:
    job = make_job(name=JOB, nodes=2)
    # A job naming its own ServiceAccount gets the relay's token Secret (and no trainer account).
    named = make_job(name=JOB, nodes=2, podTemplate={"serviceAccountName": "dataset-reader"})
    return (render_children(job, OperatorConfig()) + render_pods(job, 0, OperatorConfig())
            + [c for c in render_children(named, OperatorConfig()) if c["kind"] == "Secret"])


OPERATOR_OBJECTS = per_job_objects()


def render_chart(helm, values_file, values: dict[str, Any], release: str, namespace: str) -> list[dict[str, Any]]:
    out = helm("template", release, str(CHART), "--kube-version", KUBE_VERSION, "--namespace", namespace,
               "--include-crds", "-f", str(values_file(values))).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_notes(helm, values_file, tmp_path: Path, values: dict[str, Any], release: str, namespace: str) -> str:
    """NOTES.txt as helm prints it after `helm install`: helm template leaves the notes out and
    `helm install --dry-run` needs a cluster, so a copy of the chart renders them into a ConfigMap."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = chart / "templates" / "NOTES.txt"
    (chart / "templates" / "_notes-check.tpl").write_text(
        '{{- define "notes-check" -}}\n' + notes.read_text() + "\n{{- end }}\n")
    notes.unlink()
    (chart / "templates" / "notes-check.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include "notes-check" . | toJson }}\n')
    out = helm("template", release, str(chart), "--kube-version", KUBE_VERSION, "--namespace", namespace,
               "--show-only", "templates/notes-check.yaml", "-f", str(values_file(values))).stdout
    return yaml.safe_load(out)["data"]["notes"]


def _concrete(name: str) -> str:
    for placeholder in JOB_PLACEHOLDERS:
        name = name.replace(placeholder, JOB)
    return name.replace(RANK_PLACEHOLDER, "0")


def _is_placeholder(name: str) -> bool:
    return name.startswith("<") and name.endswith(">")


def _labels_match(selector: str, labels: dict[str, str]) -> bool:
    pairs = [term.split("=", 1) if "=" in term else (term, None) for term in selector.split(",")]
    return all(key in labels and (value is None or labels[key] == _concrete(value)) for key, value in pairs)


@dataclass
class Checker:
    """Checks commands against what a release of the chart renders and what the operator makes."""

    release: str
    namespace: str
    chart_objects: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)

    def fail(self, where: str, words: list[str], why: str) -> None:
        self.problems.append(f"{where}: `{shlex.join(words)}`: {why}")

    def chart_crds(self) -> set[str]:
        return {o["metadata"]["name"] for o in self.chart_objects if o["kind"] == "CustomResourceDefinition"}

    def check(self, where: str, words: list[str]) -> None:
        if words[0] == "helm":
            self.check_helm(where, words, parse(words[1:]))
        else:
            self.check_kubectl(where, words, parse(words[1:]))

    def check_helm(self, where: str, words: list[str], args: Args) -> None:
        verb, *operands = args.positional
        if verb not in HELM_RELEASE_VERBS:
            return self.fail(where, words, f"teach this test about `helm {verb}`")
        if not operands:
            return  # the command's name in prose, e.g. "`helm install` fails"
        if operands[0] != self.release:
            self.fail(where, words, f"release {operands[0]!r}, but the docs install {self.release!r}")
        if verb != "template" and args.get("-n", "--namespace") != self.namespace:
            self.fail(where, words, f"the release lives in namespace {self.namespace!r}")
        if verb in ("install", "upgrade", "template") and (not operands[1:] or (REPO / operands[1]).resolve() != CHART):
            self.fail(where, words, f"the chart is {CHART.relative_to(REPO)}")

    def check_kubectl(self, where: str, words: list[str], args: Args) -> None:
        if not args.positional:
            return  # "`kubectl`" in prose
        verb, *operands = args.positional
        namespace = args.get("-n", "--namespace")
        if verb in ("version", "api-resources", "cluster-info"):
            return
        if verb == "ltj":
            return  # the kubectl plugin: its commands are ltj_cli's, tested in tests/unit/cli
        if verb == "explain":
            return self.check_field(where, words, operands[0])
        if verb == "rollout":
            operands = operands[1:]
        elif verb == "create" and not args.get("-f", "--filename"):
            # `create <kind> <new name>`: what it refers to is in its flags.
            for flag, kind in (("--clusterrole", "ClusterRole"), ("--role", "Role")):
                if flag in args.options:
                    self.check_named(where, words, kind, args.options[flag], namespace)
            return
        elif verb not in ("get", "describe", "delete", "logs", "wait", "apply", "patch", "label", "annotate",
                          "port-forward"):
            return self.fail(where, words, f"teach this test about `kubectl {verb}`")
        path = args.get("-f", "--filename")
        if path is not None:
            return self.check_file(where, words, args, path)
        patch = args.get("-p", "--patch")
        if verb == "patch" and patch is not None and operands and KINDS.get(operands[0].lower()) == C.KIND:
            for leaf in _leaves(json.loads(patch)):  # every field a documented patch sets is the CRD's
                self.check_field(where, words, ".".join([operands[0], *leaf]))
        for kind, name in self.references(where, words, operands):
            if name is not None:
                self.check_named(where, words, kind, name, namespace)
            selector = args.get("-l", "--selector")
            if selector and kind not in CLUSTER_KINDS and not any(
                    o["kind"] == kind and _labels_match(selector, o["metadata"].get("labels") or {})
                    for o in [*OPERATOR_OBJECTS, *self.chart_objects]):
                self.fail(where, words, f"no {kind} the operator or the chart makes has the labels {selector}")

    def references(self, where: str, words: list[str], operands: list[str]) -> list[tuple[str, str | None]]:
        """(kind, name or None) of `type/name ...` or `type[,type...] [name ...]` operands."""
        if operands and "/" in operands[0]:
            pairs = [tuple(o.split("/", 1)) for o in operands if "/" in o]
        elif operands:
            names = [o for o in operands[1:] if "=" not in o]  # label/annotate take key=value after the name
            pairs = [(t, n) for t in operands[0].split(",") for n in (names or [None])]
        else:
            pairs = []
        out = []
        for alias, name in pairs:
            if alias.lower() not in KINDS:
                self.fail(where, words, f"unknown resource type {alias!r}")
            else:
                out.append((KINDS[alias.lower()], name))
        return out

    def check_named(self, where: str, words: list[str], kind: str, name: str, namespace: str | None) -> None:
        if kind in CLUSTER_KINDS:
            return
        if kind == C.KIND:
            if not _is_placeholder(name) and name not in SAMPLE_JOBS:
                self.fail(where, words, f"job {name!r} is not a sample's job")
            return
        chart = [o for o in self.chart_objects if o["kind"] == kind and o["metadata"]["name"] == name]
        if chart:
            homes = {o["metadata"].get("namespace") for o in chart}
            if None not in homes and namespace not in homes:
                self.fail(where, words, f"{kind} {name} is in namespace {sorted(homes)}, the command looks in "
                                        f"{namespace or 'the current namespace'}")
            return
        if any(o["kind"] == kind and o["metadata"]["name"] == _concrete(name) for o in OPERATOR_OBJECTS):
            return
        self.fail(where, words, f"no {kind} {name!r}: the chart (release {self.release!r}) does not render it "
                                f"and the operator makes none of that name for a job {JOB!r}")

    def check_file(self, where: str, words: list[str], args: Args, path: str) -> None:
        if path in USER_FILES:
            return
        file = REPO / path
        if not file.is_file():
            return self.fail(where, words, f"no file {path}")
        docs = [d for d in yaml.safe_load_all(file.read_text()) if d]
        if any(d.get("kind") == "CustomResourceDefinition" and d["metadata"]["name"] in self.chart_crds()
               for d in docs) and not {"--server-side", "--force-conflicts"} <= args.switches:
            # Helm creates the CRD, so Helm's field manager owns its fields: a server-side apply of a
            # changed CRD conflicts unless forced (tests/integration/test_chart.py runs the notes' command).
            self.fail(where, words, "a CRD the chart installs is applied with --server-side --force-conflicts")

    def check_field(self, where: str, words: list[str], path: str) -> None:
        kind, *fields = path.split(".")
        if KINDS.get(kind.lower()) != C.KIND:
            return self.fail(where, words, f"teach this test to explain {kind!r}")
        schema = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for part in fields:
            schema = (schema.get("properties") or {}).get(part)
            if schema is None:
                return self.fail(where, words, f"the CRD has no field {path}")


def _leaves(obj: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The field paths a merge patch sets."""
    if isinstance(obj, dict) and obj:
        return [leaf for key, value in obj.items() for leaf in _leaves(value, (*path, key))]
    return [path]


def documented_release() -> tuple[str, str]:
    """Release name and namespace of docs/helm.md's first `helm install`."""
    for words in markdown_commands((REPO / "docs" / "helm.md").read_text()):
        args = parse(words[1:])
        if words[0] == "helm" and args.positional[:1] == ["install"] and len(args.positional) > 1:
            return args.positional[1], args.get("-n", "--namespace") or "default"
    raise AssertionError("docs/helm.md has no `helm install <release> ...` command")


def check_all(checker: Checker, sources: Iterable[tuple[str, list[list[str]]]]) -> int:
    count = 0
    for where, commands in sources:
        for words in commands:
            checker.check(where, words)
            count += 1
    return count


# --- the tests ----------------------------------------------------------------------------------


def test_commands_in_the_docs_name_what_exists(helm, values_file):
    release, namespace = documented_release()
    checker = Checker(release, namespace, render_chart(helm, values_file, {}, release, namespace))
    count = check_all(checker, [(str(p.relative_to(REPO)), markdown_commands(p.read_text())) for p in DOCS])
    assert count > 20, "the docs' commands were not found"
    assert not checker.problems, "\n".join(checker.problems)


@pytest.mark.parametrize("values", NOTES_VALUES, ids=["default", "stopped-namespaced"])
def test_commands_in_the_printed_notes_name_what_exists(helm, values_file, tmp_path, values):
    release, namespace = documented_release()
    notes = render_notes(helm, values_file, tmp_path, values, release, namespace)
    checker = Checker(release, namespace, render_chart(helm, values_file, values, release, namespace))
    count = check_all(checker, [("NOTES.txt", shell_commands(notes))])
    assert count >= 8, notes
    assert not checker.problems, "\n".join(checker.problems)


def test_the_checker_catches_wrong_names(helm, values_file):
    """The check is live: the mistakes it exists for are reported."""
    release, namespace = "ltj-operator", "ltj-system"
    checker = Checker(release, namespace, render_chart(helm, values_file, {}, release, namespace))
    wrong = [
        f"kubectl -n {namespace} rollout status deployment/{release}-ltj-operator",  # not this release's name
        f"kubectl rollout status deployment/{release}",  # the current namespace, not the release's
        "kubectl create rolebinding x --clusterrole=ltj-admin --user=alice",
        "kubectl apply --server-side -f crds/ltj.dev_lightningtrainingjobs.yaml",
        "kubectl apply -f crds/samples/missing.yaml",
        "kubectl get pods <job>-worker-0",
        "kubectl get pods -l ltj.dev/job=<job>",
        "kubectl explain ltj.spec.trainer",
        f"helm upgrade ltj charts/ltj-operator -n {namespace}",
        f"helm uninstall {release}",
        f"helm install {release} ./chart -n {namespace}",
        "kubectl scale deployment/x --replicas=0",
    ]
    check_all(checker, [("example", [shlex.split(c) for c in wrong])])
    assert len(checker.problems) == len(wrong), "\n".join(checker.problems)


def test_requirements_list_every_object_the_operator_makes_per_job():
    table = re.search(r"^## What the operator creates in job namespaces\n(.*?)^## ", REQUIREMENTS.read_text(),
                      re.MULTILINE | re.DOTALL)
    assert table, "docs/cluster-requirements.md lost its section on per-job objects"
    documented = set()
    for kind, names in re.findall(r"^\| (\w+) \| ([^|]*) \|", table.group(1), re.MULTILINE):
        for name in re.findall(r"`([^`]+)`", names):
            documented |= {(kind, _concrete(name.replace(RANK_PLACEHOLDER, str(rank)))) for rank in range(2)}
    rendered = {(o["kind"], o["metadata"]["name"]) for o in OPERATOR_OBJECTS}
    assert rendered <= documented, f"made but not documented: {rendered - documented}"
    assert {k for k, _ in documented} <= {k for k, _ in rendered} | {"Event"}, "documented but never made"


def test_requirements_network_policies_select_the_jobs_pods():
    text = REQUIREMENTS.read_text()
    policies = [d for lang, body in _FENCE.findall(text) if lang == "yaml" for d in yaml.safe_load_all(body)
                if d and d.get("kind") == "NetworkPolicy"]
    assert len(policies) == 2
    pods = [o for o in OPERATOR_OBJECTS if o["kind"] == "Pod"]
    with_relay = {p["metadata"]["name"] for p in pods if p["spec"].get("initContainers")}
    assert with_relay == {f"{JOB}-node-0"}

    def selected(selector: dict[str, Any]) -> set[str]:
        return {p["metadata"]["name"] for p in pods
                if selector["matchLabels"].items() <= p["metadata"]["labels"].items()}

    for policy in policies:
        spec = policy["spec"]
        peers = [peer for rule in spec.get("ingress", []) for peer in rule.get("from", [])]
        peers += [peer for rule in spec.get("egress", []) for peer in rule.get("to", [])]
        if any("ipBlock" in peer for peer in peers):
            # The API server rule: exactly the pods whose relay writes the status.
            assert selected(spec["podSelector"]) == with_relay, policy["metadata"]["name"]
        else:
            assert selected(spec["podSelector"]) == {p["metadata"]["name"] for p in pods}
        for peer in peers:
            if "podSelector" in peer and "namespaceSelector" not in peer:
                assert selected(peer["podSelector"]) == {p["metadata"]["name"] for p in pods}, peer
