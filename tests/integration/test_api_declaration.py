"""The API server and the operator's parser judge a job alike: the maximal job and every boundary case of
tests/apideclaration.py, sent as server-side dry runs with strict field validation (an undeclared field is
refused, not pruned). tests/unit/test_api_declaration.py holds the parser and the trainer to the same cases;
together they keep the CRD, spec.py and the trainer config one API.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator

import pytest

from apideclaration import CASES, MAXIMAL, body, fmt, get, objects, replaced
from kubetest import Api, Kube, Refusal
from ltj_operator.spec import Job, SpecError, parse_job

pytestmark = pytest.mark.integration

# What only the parser can judge, and why the CRD cannot: here the API server admits what the operator refuses.
PARSER_ONLY = {
    "spec.training.resume": "a checkpoint path outside the job's own directory, which contains the job's uid "
                            "(CEL sees no uid at admission)",
}


class DryRun:
    """Server-side dry-run creates in one namespace: the API server's verdict without storing anything."""

    def __init__(self, api: Api, namespace: str):
        self.api, self.namespace = api, namespace

    def refusal(self, spec: dict[str, Any]) -> str | None:
        """None when the API server admits a job of ``spec``, else its message."""
        result = self.api.create(self.namespace, {**body(spec), "metadata": {"name": "maximal"}},
                                 field_validation="Strict")
        if not isinstance(result, Refusal):
            return None
        assert result.status in (400, 422), result  # 400: strict decoding refused an undeclared field
        return result.message


@pytest.fixture(scope="module")
def api(kube: Kube) -> Iterator[DryRun]:
    namespace = f"api-declaration-{uuid.uuid4().hex[:5]}"
    kube.kubectl("create", "namespace", namespace)
    client = Api(kube.kubeconfig)
    yield DryRun(client, namespace)
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
