"""The API server and the operator's parser judge a job alike: the maximal job and every boundary case of
tests/apideclaration.py, sent as server-side dry runs with strict field validation (an undeclared field is
refused, not pruned). tests/unit/test_api_declaration.py holds the parser and the trainer to the same cases;
together they keep the CRD, spec.py and the trainer config one API.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Iterator

import pytest

from apideclaration import CASES, MAXIMAL, body, fmt, get, objects, replaced
from kubetest import Kube
from ltj_api import GROUP, PLURAL, VERSION
from ltj_operator.spec import Job, SpecError, parse_job

pytestmark = pytest.mark.integration

# What only the parser can judge, and why the CRD cannot: here the API server admits what the operator refuses.
PARSER_ONLY = {
    "spec.training.resume": "a checkpoint path outside the job's own directory, which contains the job's uid "
                            "(CEL sees no uid at admission)",
}


class DryRun:
    """Server-side dry-run creates: the API server's verdict without storing anything."""

    def __init__(self, kubeconfig: str, namespace: str):
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        self._client = client.ApiClient(configuration)
        self._objects = client.CustomObjectsApi(self._client)
        self._exc = client.ApiException
        self.namespace = namespace

    def refusal(self, spec: dict[str, Any]) -> str | None:
        """None when the API server admits a job of ``spec``, else its message."""
        manifest = {**body(spec), "metadata": {"name": "maximal"}}
        try:
            self._objects.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest,
                                                          dry_run="All", field_validation="Strict")
        except self._exc as exc:
            assert exc.status in (400, 422), exc  # 400: strict decoding refused an undeclared field
            return json.loads(exc.body)["message"]
        return None

    def close(self) -> None:
        self._client.close()


@pytest.fixture(scope="module")
def api(kube: Kube) -> Iterator[DryRun]:
    namespace = f"api-declaration-{uuid.uuid4().hex[:5]}"
    kube.kubectl("create", "namespace", namespace)
    client = DryRun(kube.kubeconfig, namespace)
    yield client
    client.close()
    kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def parser_refusal(spec: dict[str, Any]) -> str | None:
    try:
        assert isinstance(parse_job(body(spec)), Job)
    except SpecError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("spec", MAXIMAL, ids=["volume-claim-template", "claim-name"])
def test_the_api_server_admits_the_maximal_job(api: DryRun, spec: dict[str, Any]) -> None:
    assert api.refusal(spec) is None


def test_the_api_server_refuses_undeclared_fields_like_the_parser(api: DryRun) -> None:
    spec = MAXIMAL[0]
    for path in objects(spec):
        extra = {**get(spec, path), "undeclaredField": 1}
        case = replaced(spec, path, extra) if len(path) > 1 else extra
        refusal = api.refusal(case)
        assert refusal is not None and f'unknown field "{fmt(path)}.undeclaredField"' in refusal, (fmt(path), refusal)
        assert parser_refusal(case) is not None


def test_the_api_server_and_the_parser_judge_every_case_alike(api: DryRun) -> None:
    # One test over all cases: each is a dry run of a few milliseconds, a parametrized test's overhead is more.
    disagree = []
    for case in CASES:
        server, parser = api.refusal(case.spec), parser_refusal(case.spec)
        if (server is None) != (parser is None) and not (server is None and fmt(case.path) in PARSER_ONLY):
            disagree.append(f"{case.id}: API server {server or 'admits'}; parser {parser or 'admits'}")
    assert disagree == []
