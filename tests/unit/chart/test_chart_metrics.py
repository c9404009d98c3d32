"""The chart's metrics objects (the Service, the opt-in ServiceMonitor and dashboard ConfigMap) and the Grafana
dashboard it ships: every query names only metrics and labels the operator exports."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ltj_operator.metrics import OperatorMetrics
from unit.chart.chartlib import CHART, KUBE_VERSION, NAMESPACE, RELEASE, container, env_of, find, one

pytestmark = pytest.mark.unit

FULLNAME = f"{RELEASE}-ltj-operator"
DASHBOARD = CHART / "dashboards" / "ltj.json"
MONITORED = {"port": 9102, "serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "10s",
                                              "labels": {"release": "kube-prometheus-stack"}},
             "dashboard": {"enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "Training"}}}


def pod_labels(objects: list[dict[str, Any]]) -> dict[str, str]:
    return one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]


def test_the_metrics_port_has_a_service_by_default(render):
    objects = render()
    c = container(objects)
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in c["ports"]
    assert env_of(objects)["LTJ_METRICS_PORT"] == "8081"
    service = one(objects, "Service", f"{FULLNAME}-metrics", NAMESPACE)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= pod_labels(objects).items()
    assert "annotations" not in service["metadata"]


def test_service_monitor_and_dashboard_follow_their_values(render):
    objects = render({"metrics": MONITORED})
    assert env_of(objects)["LTJ_METRICS_PORT"] == "9102"
    service = one(objects, "Service", f"{FULLNAME}-metrics")
    assert service["spec"]["ports"][0]["port"] == 9102
    monitor = one(objects, "ServiceMonitor", FULLNAME, NAMESPACE)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # It selects the metrics Service, and no other Service of the release.
    services = [s for s in find(objects, "Service")
                if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert services == [service]
    assert spec["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s",
                                  "honorLabels": True}]

    dashboard = one(objects, "ConfigMap", f"{FULLNAME}-dashboard", "monitoring")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Training"}
    assert dashboard["data"] == {"ltj.json": DASHBOARD.read_text()}
    # Off by default, the dashboard goes to the release namespace when on.
    default_ns = render({"metrics": {"dashboard": {"enabled": True}}})
    assert one(default_ns, "ConfigMap", f"{FULLNAME}-dashboard")["metadata"]["namespace"] == NAMESPACE


def test_metrics_off(render):
    objects = render({"metrics": {"enabled": False}})
    assert env_of(objects)["LTJ_METRICS_PORT"] == "0"
    assert [p["name"] for p in container(objects)["ports"]] == ["health"]
    assert not find(objects, "Service")
    assert not find(render({"metrics": {"service": {"enabled": False}}}), "Service")


@pytest.mark.parametrize(("values", "message"), [
    ({"metrics": {"port": 8080}}, "metrics.port: must differ from healthPort, both are 8080"),
    ({"healthPort": 9000, "metrics": {"port": 9000}}, "metrics.port: must differ from healthPort, both are 9000"),
    ({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}, "metrics.serviceMonitor.enabled: "),
    ({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
     "set metrics.enabled and metrics.service.enabled too"),
])
def test_contradicting_metrics_values_are_refused_by_name(helm, values_file, values, message):
    proc = helm("template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, "-f", str(values_file(values)),
                check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


# --- the dashboard ----------------------------------------------------------------------------------------

# PromQL words that are not metric names.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{([^}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w$.:])([a-zA-Z_:][\w:]*)\b(?!\s*\()")
_LABEL_VALUES = re.compile(r"^label_values\((\w+),\s*(\w+)\)$")


def referenced(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression refers to."""
    labels = {m.group(1) for body in _MATCHERS.findall(expr) for m in re.finditer(r"(\w+)\s*(?:=~|!~|!=|=)", body)}
    labels |= {name.strip() for group in _GROUPING.findall(expr) for name in group.split(",") if name.strip()}
    bare = _GROUPING.sub("", _RANGE.sub("", _MATCHERS.sub("", _STRING.sub('""', expr))))
    return {n for n in _IDENTIFIER.findall(bare) if n not in KEYWORDS}, labels


def exported() -> tuple[set[str], dict[str, set[str]], set[str]]:
    """Every series name the operator's registry exports, the label names of each ltj_ series, and the ltj_
    metrics as queries name them (counters with _total, histograms without their suffixes)."""
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    own: set[str] = set()
    metrics = OperatorMetrics(CollectorRegistry())
    metrics.saw("ns", "job", "uid", {"phase": "Running"}, 0)  # so that ltj_jobs has samples
    for family in metrics.registry.collect():
        names.add(family.name)
        for sample in family.samples:
            names.add(sample.name)
            if family.name.startswith("ltj_"):
                labels.setdefault(sample.name, set()).update(sample.labels)
        if family.name.startswith("ltj_"):
            own.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names, labels, own


def dashboard_queries() -> tuple[list[str], list[str]]:
    """(panel expressions, templating queries) of the shipped dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries = [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs, queries


def test_the_expression_parser_finds_metrics_and_labels():
    """The check below is live: names in functions, ranges, matchers and groupings are told apart."""
    assert referenced('histogram_quantile(0.95, sum by (le) (rate(ltj_x_bucket{a=~"$v|b", c!="d"}[$__rate_interval])))'
                      ' / on(le) ltj_y offset 5m') == ({"ltj_x_bucket", "ltj_y"}, {"a", "c", "le"})


def test_every_dashboard_query_names_only_exported_metrics_and_their_labels():
    names, labels, own = exported()
    exprs, queries = dashboard_queries()
    assert len(exprs) >= 8
    used: set[str] = set()
    for expr in exprs:
        metrics, label_names = referenced(expr)
        assert metrics, expr
        assert metrics <= names, f"{expr}: not exported: {metrics - names}"
        known = set().union(*(labels[m] for m in metrics))
        assert label_names <= known, f"{expr}: labels {label_names - known} are not those of {metrics}"
        used |= metrics
    # Every metric of the operator is on the dashboard.
    assert own == {n.removesuffix("_bucket") for n in used}
    for query in queries:
        match = _LABEL_VALUES.match(query)
        assert match and match.group(2) in labels[match.group(1)], query


def test_every_panel_reads_the_chosen_data_source():
    dashboard = json.loads(DASHBOARD.read_text())
    (source,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    for panel in dashboard["panels"]:
        for item in (panel, *panel["targets"]):
            assert item["datasource"] == {"type": "prometheus", "uid": f"${{{source['name']}}}"}, panel["title"]
