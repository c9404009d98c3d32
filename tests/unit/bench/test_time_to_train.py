"""Pure parts of benchmarks/time_to_train.py: the PyTorchJob is ltj's pod for the same job, without
what only ltj sets; the report's table and CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import benchscript

pytestmark = pytest.mark.unit

bench = benchscript.load("time_to_train")

from ltj_operator import constants as C  # noqa: E402
from ltj_operator import render, spec  # noqa: E402
from ltj_operator.config import OperatorConfig  # noqa: E402


def test_the_pytorchjob_runs_ltjs_trainer_pod_with_the_training_operators_env() -> None:
    claim, job = bench.pytorch_job("digits", 4, "img:1")
    ours = render.render_pod(spec.parse_job({**bench.ltj_job("digits", 4), "metadata": {
        "name": "digits", "namespace": "-", "uid": bench.PYTORCHJOB_UID}}), 0, 0,
        OperatorConfig(default_trainer_image="img:1"))
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"}
    for replica in replicas.values():
        assert replica["replicas"] == 1 and replica["restartPolicy"] == "OnFailure"
        pod = replica["template"]
        # The same trainer config, security context and volumes the trainer mounts; no relay.
        assert pod["metadata"]["annotations"][C.ANNOTATION_TRAINER_CONFIG] == \
            ours["metadata"]["annotations"][C.ANNOTATION_TRAINER_CONFIG]
        assert pod["spec"]["securityContext"] == ours["spec"]["securityContext"]
        assert "initContainers" not in pod["spec"]
        [container] = pod["spec"]["containers"]
        assert container["name"] == "pytorch" and container["image"] == "img:1"
        assert {v["name"] for v in pod["spec"]["volumes"]} == {m["name"] for m in container["volumeMounts"]}
        # The distributed env is the training-operator's to set; ltj's own is left out.
        names = [e["name"] for e in container["env"]]
        assert sorted(names) == ["LTJ_CONFIG", "LTJ_JOB_NAME", "LTJ_LOG_EVERY_N_STEPS"]
    assert claim["kind"] == "PersistentVolumeClaim" and claim["metadata"] == {"name": "digits-output"}
    # Both tolerate the same 2 failures of a 2-rank job: the peer counts restarts of every rank.
    assert job["spec"]["runPolicy"]["backoffLimit"] == 2 * 2


def test_report_writes_medians_side_by_side(tmp_path: Path) -> None:
    runs = [bench.Run("ltj", "clean", {"submit_to_first_step_s": v, "submit_to_succeeded_s": 2 * v})
            for v in (10.0, 30.0, 20.0)]
    runs += [bench.Run("pytorchjob", "clean", {"submit_to_first_step_s": 40.0, "submit_to_succeeded_s": 50.0}),
             bench.Run("pytorchjob", "kill", {"kill_to_resumed_step_s": 15.0, "steps_lost": 6.0})]
    text = bench.report(runs, tmp_path, repeats=3)
    assert "| submit -> first training step (s) | 20.0 | 40.0 | 0.50 |" in text
    assert "| submit -> Succeeded (s) | 40.0 | 50.0 | 0.80 |" in text
    assert "| steps lost to the kill | - | 6.0 | - |" in text
    with open(tmp_path / "time_to_train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 + 2 + 2 and rows[0]["repeat"] == "1" and rows[2]["system"] == "ltj"
    assert (tmp_path / "time_to_train.png").stat().st_size > 10_000
