"""One API, declared three times and held equal here: the CRD's spec schema (what the API server admits),
the operator's parser (operator/ltj_operator/spec.py) and the trainer's config (trainer_image/ltj_trainer/
config.py, rendered from the job by render.trainer_config, keys in ltj_api.trainer.CONFIG_KEYS).

Adding a trainer option is one change in each place: the field in the CRD's spec schema (with its bounds), its
parsing in spec.py, its key in ltj_api.trainer.CONFIG_KEYS with a parser in the trainer's config.py, a line in
render.trainer_config, and a value in tests/apideclaration.py's MAXIMAL_SPEC. Until all agree a test here fails:
a field the maximal job lacks, a field the parser ignores or refuses, a bound one layer enforces and another does
not, a rendered key that no CRD field feeds. The API server's side of the same cases is held by
tests/integration/test_api_declaration.py.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from apideclaration import CASES, MAXIMAL, Case, body, declared, fmt, get, leaves, objects, present, removed, replaced
from ltj_api import trainer as api
from ltj_operator.render import trainer_config
from ltj_operator.spec import Job, SpecError, parse_job

pytestmark = pytest.mark.unit

config = pytest.importorskip("ltj_trainer.config")

# Rendered keys that no single CRD field sets as-is: derived from several fields or from where the pod runs.
DERIVED_KEYS = {
    "model_args": "spec.model.args, a free-form mapping (the parser and the trainer check its keys alike)",
    "data_args": "spec.data.args, likewise",
    "accelerator": "from spec.gpusPerNode: gpu when > 0",
    "devices": "from spec.gpusPerNode: one process per GPU, or one on a CPU",
    "default_root_dir": "the job's directory on the output volume",
    "termination_log": "the container's termination message path",
}


def parsed(spec: dict[str, Any]) -> Job | SpecError:
    try:
        return parse_job(body(spec))
    except SpecError as exc:
        return exc


def trainer_verdict(raw: dict[str, Any]) -> bool:
    try:
        config.parse(raw, {})
    except config.ConfigError:
        return False
    return True


def same(a: Any, b: Any) -> bool:
    """Equal as the trainer reads it: 1 and 1.0 are one value (JSON keeps no int-float distinction)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b)
    return a == b


def test_the_maximal_job_sets_every_declared_field_and_no_other() -> None:
    fields = set(declared())
    set_ = {p for spec in MAXIMAL for p in present(spec)}
    assert sorted(fields - set_) == [], "fields of the CRD that tests/apideclaration.py's MAXIMAL_SPEC leaves unset"
    assert sorted(set_ - fields) == [], "fields the maximal job sets that the CRD does not declare"


@pytest.mark.parametrize("spec", MAXIMAL, ids=["volume-claim-template", "claim-name"])
def test_the_parser_accepts_the_maximal_job(spec: dict[str, Any]) -> None:
    job = parsed(spec)
    assert isinstance(job, Job), job
    assert job.spec.warnings == ()


@pytest.mark.parametrize("spec", MAXIMAL, ids=["volume-claim-template", "claim-name"])
def test_the_parser_reads_every_field(spec: dict[str, Any]) -> None:
    """Every field the maximal job sets (to a value other than its default) matters: without it the parser makes
    another job of the spec, or refuses it."""
    whole = parsed(spec)
    ignored = [fmt(path) for path, _ in leaves(spec) if parsed(removed(spec, path)) == whole]
    assert ignored == []


def test_the_parser_refuses_what_the_schema_does_not_declare() -> None:
    spec = MAXIMAL[0]
    paths = list(objects(spec))
    assert ("spec", "podTemplate", "tolerations", 0) in paths and ("spec", "training", "monitor") in paths
    for path in paths:
        extra = {**get(spec, path), "undeclaredField": 1}
        result = parsed(replaced(spec, path, extra) if len(path) > 1 else extra)
        assert isinstance(result, SpecError), fmt(path)
        assert result.errors == (f"{fmt(path)}.undeclaredField: unknown field",)


def test_the_cases_cover_every_kind_of_bound() -> None:
    # A guard against a walk that finds nothing: the parametrized tests below would then pass vacuously.
    assert len(CASES) > 300
    ids = {c.id for c in CASES}
    for expected in ("spec.nodes=257", "spec.training.valCheckInterval=0", "spec.training.precision='NotAnEnumValue'",
                     "spec.model.name='-x'", "spec.training.seed=4294967296",
                     "spec.podTemplate.tolerations[0].effect=''"):
        assert expected in ids
    assert any(c.keywords_accept for c in CASES) and any(not c.keywords_accept for c in CASES)


KEYWORD_CASES = [c for c in CASES if not c.rules]


@pytest.mark.parametrize("case", KEYWORD_CASES, ids=[c.id for c in KEYWORD_CASES])
def test_the_parser_enforces_the_schema_keywords(case: Case) -> None:
    """Fields without CEL rules: the schema's keywords are the API server's whole verdict, and the parser's."""
    result = parsed(case.spec)
    if case.keywords_accept:
        assert isinstance(result, Job), result
    else:
        assert isinstance(result, SpecError)
        assert any(e.startswith(fmt(case.path)) for e in result.errors), result.errors


def _rendered(case: Case) -> dict[str, Any] | None:
    result = parsed(case.spec)
    return trainer_config(result) if isinstance(result, Job) else None


def _trainer_fields() -> dict[str, str]:
    """CRD field -> trainer key, for each field whose every accepted value reaches the trainer config unchanged
    under one key (found by rendering, not listed by hand)."""
    base = trainer_config(parse_job(body(MAXIMAL[0])))
    changes: dict[str, list[tuple[str, ...] | None]] = {}
    for case in CASES:
        rendered = _rendered(case)
        if rendered is None:
            continue
        diff = tuple(k for k in rendered if not same(rendered[k], base[k]))
        value_diff = diff if len(diff) == 1 and same(rendered[diff[0]], case.value) else None
        if diff or value_diff:
            changes.setdefault(fmt(case.path), []).append(value_diff)
    return {path: seen[0][0] for path, seen in changes.items()
            if all(s is not None and s == seen[0] for s in seen)}


TRAINER_FIELDS = _trainer_fields()


def test_every_rendered_trainer_key_comes_from_one_crd_field_or_is_derived() -> None:
    rendered = trainer_config(parse_job(body(MAXIMAL[0])))
    assert tuple(rendered) == tuple(k for k in api.CONFIG_KEYS if k in rendered)  # only keys the trainer accepts
    fed = set(TRAINER_FIELDS.values())
    assert sorted(set(rendered) - fed - set(DERIVED_KEYS)) == [], "rendered keys no CRD field feeds"
    assert sorted(fed & set(DERIVED_KEYS)) == []
    assert len(fed) == len(TRAINER_FIELDS), "two CRD fields feed one trainer key"


TRAINER_CASES = [c for c in CASES if fmt(c.path) in TRAINER_FIELDS]


@pytest.mark.parametrize("case", TRAINER_CASES, ids=[c.id for c in TRAINER_CASES])
def test_the_trainer_accepts_and_refuses_like_the_parser(case: Case) -> None:
    """A value the operator would hand the trainer as-is: the trainer (run outside a pod, from a file) takes it
    exactly when the parser does, so neither layer is looser than the CRD."""
    raw = {**trainer_config(parse_job(body(MAXIMAL[0]))), TRAINER_FIELDS[fmt(case.path)]: case.value}
    assert trainer_verdict(raw) == isinstance(parsed(case.spec), Job)
