"""Kueue's registration for a controller out of the cluster: which of its webhooks the API server calls,
and where."""

from __future__ import annotations

import base64

import pytest
import yaml

from ltj_localcluster.kueue import WEBHOOK_CONFIGS, webhook_configurations

pytestmark = pytest.mark.unit


def _hook(name: str, group: str, path: str) -> dict:
    return {"name": name, "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"name": "webhook-service", "namespace": "system", "path": path}},
            "rules": [{"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["things"]}]}


# The shape of Kueue's config/components/webhook/manifests.yaml (before kustomize names them).
MANIFESTS = yaml.safe_dump_all([
    {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
     "metadata": {"name": "mutating-webhook-configuration"},
     "webhooks": [_hook("mpod.kb.io", "", "/mutate--v1-pod"),
                  _hook("mworkload.kb.io", "kueue.x-k8s.io", "/mutate-kueue-x-k8s-io-v1beta2-workload")]},
    {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
     "metadata": {"name": "validating-webhook-configuration"},
     "webhooks": [_hook("vjob.kb.io", "batch", "/validate-batch-v1-job"),
                  _hook("vworkload.kb.io", "kueue.x-k8s.io", "/validate-kueue-x-k8s-io-v1beta2-workload")]},
])


def test_only_kueues_own_webhooks_are_registered_at_the_loopback_url() -> None:
    configs = webhook_configurations(MANIFESTS, 9555, b"PEM")
    assert [(c["kind"], c["metadata"]["name"]) for c in configs] == list(WEBHOOK_CONFIGS.items())
    mutating, validating = (c["webhooks"] for c in configs)
    assert [h["name"] for h in mutating] == ["mworkload.kb.io"]
    assert [h["name"] for h in validating] == ["vworkload.kb.io"]
    assert mutating[0]["clientConfig"] == {"url": "https://127.0.0.1:9555/mutate-kueue-x-k8s-io-v1beta2-workload",
                                           "caBundle": base64.b64encode(b"PEM").decode()}
    assert mutating[0]["failurePolicy"] == "Fail" and mutating[0]["rules"][0]["apiGroups"] == ["kueue.x-k8s.io"]


def test_manifests_without_kueues_webhooks_are_an_error() -> None:
    docs = list(yaml.safe_load_all(MANIFESTS))
    docs[1]["webhooks"] = docs[1]["webhooks"][:1]
    with pytest.raises(ValueError, match="no kueue.x-k8s.io webhooks in Kueue's ValidatingWebhookConfiguration"):
        webhook_configurations(yaml.safe_dump_all(docs), 9555, b"PEM")
