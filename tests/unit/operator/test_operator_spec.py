"""spec.py: defaults, typed values, and every invalid field reported with its path."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from ltj_operator import constants as C
from ltj_operator.spec import (JobSpec, SpecError, TrainingSpec, applied_job, parse_job, parse_or_error, parse_spec,
                               thaw)
from unit.operator.operator_helpers import UID, job_body, make_job

pytestmark = pytest.mark.unit

SAMPLES = Path(__file__).resolve().parents[3] / "crds" / "samples"


def test_minimal_spec_gets_the_documented_defaults() -> None:
    job = make_job()
    s = job.spec
    assert (s.nodes, s.gpus_per_node, s.procs_per_node, s.world_size) == (1, 0, 1, 1)
    assert s.image is None and s.image_pull_policy is None
    assert s.data.name == "digits" and s.data.batch_size == 64 and s.data.num_workers == 0
    assert s.training == TrainingSpec()
    assert s.training.monitor.metric == "val_loss" and s.training.monitor.mode == "min"
    assert s.training.early_stopping.enabled and s.training.early_stopping.patience == 3
    assert s.training.checkpoint.save_top_k == 3 and s.training.resume == "last"
    assert s.run_policy.backoff_limit == 3 and s.run_policy.clean_pod_policy == "Running"
    assert s.run_policy.active_deadline_seconds is None and s.run_policy.ttl_seconds_after_finished is None
    assert not s.run_policy.suspend and s.run_policy.retryable_exit_codes == frozenset()
    # Output subPath defaults to the job's name; a one-node template defaults to ReadWriteOnce.
    assert s.output.sub_path == "mnist"
    assert s.output.volume_claim_template is not None
    assert s.output.volume_claim_template.access_modes == ("ReadWriteOnce",)
    assert s.output.claim("mnist") == "mnist-output"
    assert job.meta.namespace == "team-a" and job.meta.generation == 1


def test_multi_node_template_defaults_to_read_write_many() -> None:
    job = make_job(nodes=3)
    assert job.spec.output.volume_claim_template.access_modes == ("ReadWriteMany",)


def test_full_spec_is_typed_and_frozen() -> None:
    job = make_job(
        image="registry.example/ltj-trainer:2", imagePullPolicy="Always", nodes=2, gpusPerNode=4,
        model={"name": "resnet", "args": {"depth": 50, "layers": [1, 2]}},
        data={"name": "parquet", "args": {"path": "/d"}, "batchSize": 32, "numWorkers": 4},
        training={"maxEpochs": 7, "precision": "bf16", "valCheckInterval": 200, "seed": 7, "testAfterFit": False,
                  "resume": f"/output/mnist-{UID}/checkpoints/x.ckpt", "monitor": {"metric": "val_acc", "mode": "max"},
                  "earlyStopping": {"enabled": False, "patience": 0, "minDelta": 0.5},
                  "checkpoint": {"saveTopK": -1}},
        resources={"requests": {"cpu": 4, "memory": "8Gi"}, "limits": {"memory": "16Gi"}},
        output={"claimName": "shared", "subPath": "runs/a", "volumeClaimTemplate": None},
        runPolicy={"backoffLimit": 0, "activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 0,
                   "cleanPodPolicy": "All", "suspend": True, "retryableExitCodes": [1, 3]},
    )
    s = job.spec
    assert s.world_size == 8 and s.procs_per_node == 4
    assert s.training.val_check_interval == 200 and isinstance(s.training.val_check_interval, int)
    assert s.training.early_stopping.min_delta == 0.5
    assert s.resources.requests == {"cpu": "4", "memory": "8Gi"}
    assert s.output.claim_name == "shared" and s.output.claim("x") == "shared" and s.output.sub_path == "runs/a"
    assert s.run_policy.retryable_exit_codes == frozenset({1, 3})
    assert thaw(s.model.args) == {"depth": 50, "layers": [1, 2]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.nodes = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.model.args["depth"] = 1  # type: ignore[index]


def test_a_named_service_account_is_kept() -> None:
    assert make_job(podTemplate={"serviceAccountName": "dataset-reader"}).spec.pod_template.service_account_name == (
        "dataset-reader")
    assert make_job().spec.pod_template.service_account_name is None
    # Another job's relay account is the policy's to judge (whoever may create pods may use it directly).
    assert make_job(podTemplate={"serviceAccountName": "other-relay"}).spec.pod_template.service_account_name


def test_fraction_val_check_interval_stays_a_float() -> None:
    assert make_job(training={"valCheckInterval": 1}).spec.training.val_check_interval == 1.0
    assert isinstance(make_job(training={"valCheckInterval": 1}).spec.training.val_check_interval, float)
    assert make_job(training={"valCheckInterval": 0.25}).spec.training.val_check_interval == 0.25


def test_empty_metric_is_fine_to_name_when_early_stopping_is_off_only_if_set() -> None:
    job = make_job(training={"earlyStopping": {"enabled": False}})
    assert job.spec.training.monitor.metric == "val_loss"


def test_operator_owned_env_is_dropped_with_a_warning() -> None:
    job = make_job(podTemplate={"env": [{"name": "MASTER_ADDR", "value": "x"}, {"name": "NCCL_DEBUG", "value": "INFO"},
                                        {"name": "LTJ_MAX_EPOCHS", "value": "3"}]})
    names = [e["name"] for e in job.spec.pod_template.env]
    assert names == ["NCCL_DEBUG", "LTJ_MAX_EPOCHS"]
    assert len(job.spec.warnings) == 1 and "spec.podTemplate.env[0].name: MASTER_ADDR" in job.spec.warnings[0]


# (spec overrides or a whole-body mutation, the path the error must name, a word of the message)
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown top-level field", {"replicas": 2}, "spec.replicas", "unknown field"),
    ("unknown nested field", {"training": {"maxEpoch": 3}}, "spec.training.maxEpoch", "unknown field"),
    ("image with spaces", {"image": "a b"}, "spec.image", "spaces"),
    ("image not a string", {"image": 5}, "spec.image", "string"),
    ("pull policy", {"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy", "one of"),
    ("model missing", {"model": None}, "spec.model", "must be set"),
    ("model name missing", {"model": {"name": None, "args": {}}}, "spec.model.name", "must be set"),
    ("model name syntax", {"model": {"name": "my model"}}, "spec.model.name", "registered name"),
    ("model args not an object", {"model": {"name": "m", "args": [1]}}, "spec.model.args", "object"),
    ("model args keys", {"model": {"name": "m", "args": {"not-ident": 1}}}, "spec.model.args.not-ident", "identifier"),
    ("data args keys", {"data": {"args": {"1x": 1}}}, "spec.data.args.1x", "identifier"),
    ("model args too large", {"model": {"name": "m", "args": {"table": "x" * 70_000}}}, "spec.model.args", "too large"),
    ("data args too large", {"data": {"args": {"rows": [1] * 40_000}}}, "spec.data.args", "too large"),
    ("data name", {"data": {"name": ""}}, "spec.data.name", "empty"),
    ("batch size zero", {"data": {"batchSize": 0}}, "spec.data.batchSize", ">= 1"),
    ("batch size bool", {"data": {"batchSize": True}}, "spec.data.batchSize", "integer"),
    ("num workers negative", {"data": {"numWorkers": -1}}, "spec.data.numWorkers", ">= 0"),
    ("max epochs zero", {"training": {"maxEpochs": 0}}, "spec.training.maxEpochs", ">= 1"),
    ("max epochs float", {"training": {"maxEpochs": 2.5}}, "spec.training.maxEpochs", "integer"),
    ("precision", {"training": {"precision": "fp8"}}, "spec.training.precision", "fp16, bf16, fp32"),
    ("val check zero", {"training": {"valCheckInterval": 0}}, "spec.training.valCheckInterval", "> 0"),
    ("val check fractional batches", {"training": {"valCheckInterval": 2.5}}, "spec.training.valCheckInterval",
     "whole number"),
    ("seed negative", {"training": {"seed": -1}}, "spec.training.seed", ">= 0"),
    ("seed too big", {"training": {"seed": 2**32}}, "spec.training.seed", "<="),
    ("test after fit", {"training": {"testAfterFit": "yes"}}, "spec.training.testAfterFit", "true or false"),
    ("resume relative", {"training": {"resume": "ckpt/last.ckpt"}}, "spec.training.resume", "absolute"),
    ("resume best without top k", {"training": {"resume": "best", "checkpoint": {"saveTopK": 0}}},
     "spec.training.resume", "saveTopK"),
    ("metric empty with early stopping", {"training": {"monitor": {"metric": " "}}}, "spec.training.monitor.metric",
     "must be set when spec.training.earlyStopping.enabled is true"),
    ("metric empty without early stopping",
     {"training": {"monitor": {"metric": ""}, "earlyStopping": {"enabled": False}}},
     "spec.training.monitor.metric", "must not be empty"),
    ("metric braces", {"training": {"monitor": {"metric": "val_{x}"}}}, "spec.training.monitor.metric", "braces"),
    ("mode", {"training": {"monitor": {"mode": "lowest"}}}, "spec.training.monitor.mode", "min, max"),
    ("patience", {"training": {"earlyStopping": {"patience": -2}}}, "spec.training.earlyStopping.patience", ">= 0"),
    ("min delta", {"training": {"earlyStopping": {"minDelta": -0.1}}}, "spec.training.earlyStopping.minDelta",
     ">= 0"),
    ("early stopping enabled", {"training": {"earlyStopping": {"enabled": 1}}},
     "spec.training.earlyStopping.enabled", "true or false"),
    ("save top k", {"training": {"checkpoint": {"saveTopK": -2}}}, "spec.training.checkpoint.saveTopK", ">= -1"),
    ("nodes zero", {"nodes": 0}, "spec.nodes", ">= 1"),
    ("nodes too many", {"nodes": 257}, "spec.nodes", "<= 256"),
    ("gpus negative", {"gpusPerNode": -1}, "spec.gpusPerNode", ">= 0"),
    ("gpus too many", {"gpusPerNode": 17}, "spec.gpusPerNode", "<= 16"),
    ("gpu in resources", {"resources": {"limits": {"nvidia.com/gpu": 1}}}, "spec.resources.limits[nvidia.com/gpu]",
     "gpusPerNode"),
    ("bad quantity", {"resources": {"requests": {"memory": "lots"}}}, "spec.resources.requests[memory]", "quantity"),
    ("bad resource name", {"resources": {"requests": {"bad name": "1"}}}, "spec.resources.requests[bad name]",
     "resource name"),
    ("output missing", {"output": None}, "spec.output", "must be set"),
    ("output both", {"output": {"claimName": "c"}}, "spec.output", "exactly one"),
    ("output neither", {"output": {"volumeClaimTemplate": None, "subPath": "x"}}, "spec.output", "exactly one"),
    ("claim name syntax", {"output": {"claimName": "Bad_Claim", "volumeClaimTemplate": None}},
     "spec.output.claimName", "PersistentVolumeClaim"),
    ("storage missing", {"output": {"volumeClaimTemplate": {"storage": None, "accessModes": ["ReadWriteMany"]}}},
     "spec.output.volumeClaimTemplate.storage", "must be set"),
    ("storage syntax", {"output": {"volumeClaimTemplate": {"storage": "1 GB"}}},
     "spec.output.volumeClaimTemplate.storage", "quantity"),
    ("access mode", {"output": {"volumeClaimTemplate": {"accessModes": ["ReadWriteSometimes"]}}},
     "spec.output.volumeClaimTemplate.accessModes[0]", "one of"),
    ("access mode duplicate", {"output": {"volumeClaimTemplate": {"accessModes": ["ReadWriteMany", "ReadWriteMany"]}}},
     "spec.output.volumeClaimTemplate.accessModes[1]", "duplicate"),
    ("storage class syntax", {"output": {"volumeClaimTemplate": {"storageClassName": "Fast SSD"}}},
     "spec.output.volumeClaimTemplate.storageClassName", "StorageClass"),
    ("sub path absolute", {"output": {"subPath": "/abs"}}, "spec.output.subPath", "relative"),
    ("sub path dotdot", {"output": {"subPath": "a/../b"}}, "spec.output.subPath", "'..'"),
    ("pod labels value", {"podTemplate": {"metadata": {"labels": {"team": "a b"}}}},
     "spec.podTemplate.metadata.labels[team]", "valid value"),
    ("pod labels key", {"podTemplate": {"metadata": {"labels": {"-bad": "x"}}}},
     "spec.podTemplate.metadata.labels[-bad]", "label key"),
    ("annotations value type", {"podTemplate": {"metadata": {"annotations": {"a": 1}}}},
     "spec.podTemplate.metadata.annotations[a]", "string"),
    ("node selector", {"podTemplate": {"nodeSelector": {"gpu": ["a"]}}}, "spec.podTemplate.nodeSelector[gpu]",
     "string"),
    ("toleration operator", {"podTemplate": {"tolerations": [{"key": "k", "operator": "In"}]}},
     "spec.podTemplate.tolerations[0].operator", "Exists, Equal"),
    ("toleration effect", {"podTemplate": {"tolerations": [{"key": "k", "effect": "Never"}]}},
     "spec.podTemplate.tolerations[0].effect", "NoSchedule"),
    ("toleration exists with value", {"podTemplate": {"tolerations": [{"operator": "Exists", "value": "v"}]}},
     "spec.podTemplate.tolerations[0].value", "empty"),
    ("toleration unknown", {"podTemplate": {"tolerations": [{"key": "k", "keys": "x"}]}},
     "spec.podTemplate.tolerations[0].keys", "unknown field"),
    ("affinity not object", {"podTemplate": {"affinity": "near"}}, "spec.podTemplate.affinity", "object"),
    ("priority class", {"podTemplate": {"priorityClassName": "High Priority"}},
     "spec.podTemplate.priorityClassName", "PriorityClass"),
    ("service account syntax", {"podTemplate": {"serviceAccountName": "Dataset Reader"}},
     "spec.podTemplate.serviceAccountName", "ServiceAccount name"),
    ("service account of the relay", {"podTemplate": {"serviceAccountName": "mnist-relay"}},
     "spec.podTemplate.serviceAccountName", "the operator makes for this job"),
    ("service account of the trainer", {"podTemplate": {"serviceAccountName": "mnist-trainer"}},
     "spec.podTemplate.serviceAccountName", "the operator makes for this job"),
    ("pull secret typo", {"podTemplate": {"imagePullSecrets": [{"nam": "x"}]}},
     "spec.podTemplate.imagePullSecrets[0].nam", "unknown field"),
    ("pull secret name", {"podTemplate": {"imagePullSecrets": [{"nam": "x"}]}},
     "spec.podTemplate.imagePullSecrets[0].name", "must be set"),
    ("env name", {"podTemplate": {"env": [{"name": "1BAD", "value": "x"}]}}, "spec.podTemplate.env[0].name",
     "environment variable"),
    ("env duplicate", {"podTemplate": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
     "spec.podTemplate.env[1].name", "duplicate"),
    ("env value and valueFrom", {"podTemplate": {"env": [{"name": "A", "value": "1", "valueFrom": {"x": {}}}]}},
     "spec.podTemplate.env[0].valueFrom", "not be set together"),
    ("env value type", {"podTemplate": {"env": [{"name": "A", "value": 1}]}}, "spec.podTemplate.env[0].value",
     "string"),
    ("env list", {"podTemplate": {"env": {"A": "1"}}}, "spec.podTemplate.env", "list"),
    ("envFrom both", {"podTemplate": {"envFrom": [{"configMapRef": {"name": "a"}, "secretRef": {"name": "b"}}]}},
     "spec.podTemplate.envFrom[0]", "exactly one"),
    ("envFrom name", {"podTemplate": {"envFrom": [{"secretRef": {}}]}}, "spec.podTemplate.envFrom[0].secretRef.name",
     "must be set"),
    ("volume reserved", {"podTemplate": {"volumes": [{"name": "ltj-output", "emptyDir": {}}]}},
     "spec.podTemplate.volumes[0].name", "reserved"),
    ("volume duplicate", {"podTemplate": {"volumes": [{"name": "d", "emptyDir": {}}, {"name": "d", "emptyDir": {}}]}},
     "spec.podTemplate.volumes[1].name", "duplicate"),
    ("volume without source", {"podTemplate": {"volumes": [{"name": "d"}]}}, "spec.podTemplate.volumes[0]",
     "volume source"),
    ("volume name syntax", {"podTemplate": {"volumes": [{"name": "D_1", "emptyDir": {}}]}},
     "spec.podTemplate.volumes[0].name", "volume name"),
    ("mount of unknown volume", {"podTemplate": {"volumeMounts": [{"name": "nope", "mountPath": "/d"}]}},
     "spec.podTemplate.volumeMounts[0].name", "not one of spec.podTemplate.volumes"),
    ("mount over output", {"podTemplate": {"volumes": [{"name": "d", "emptyDir": {}}],
                                           "volumeMounts": [{"name": "d", "mountPath": "/output/data"}]}},
     "spec.podTemplate.volumeMounts[0].mountPath", "hide"),
    ("mount relative", {"podTemplate": {"volumes": [{"name": "d", "emptyDir": {}}],
                                        "volumeMounts": [{"name": "d", "mountPath": "data"}]}},
     "spec.podTemplate.volumeMounts[0].mountPath", "absolute"),
    ("mount path missing", {"podTemplate": {"volumes": [{"name": "d", "emptyDir": {}}],
                                            "volumeMounts": [{"name": "d"}]}},
     "spec.podTemplate.volumeMounts[0].mountPath", "must be set"),
    ("grace period", {"podTemplate": {"terminationGracePeriodSeconds": -1}},
     "spec.podTemplate.terminationGracePeriodSeconds", ">= 0"),
    ("backoff limit", {"runPolicy": {"backoffLimit": -1}}, "spec.runPolicy.backoffLimit", ">= 0"),
    ("deadline", {"runPolicy": {"activeDeadlineSeconds": 0}}, "spec.runPolicy.activeDeadlineSeconds", ">= 1"),
    ("ttl", {"runPolicy": {"ttlSecondsAfterFinished": -5}}, "spec.runPolicy.ttlSecondsAfterFinished", ">= 0"),
    ("clean pod policy", {"runPolicy": {"cleanPodPolicy": "Some"}}, "spec.runPolicy.cleanPodPolicy",
     "All, Running, None"),
    ("suspend", {"runPolicy": {"suspend": "true"}}, "spec.runPolicy.suspend", "true or false"),
    ("retryable exit code 2", {"runPolicy": {"retryableExitCodes": [1, 2]}}, "spec.runPolicy.retryableExitCodes[1]",
     "never retried"),
    ("retryable exit code 0", {"runPolicy": {"retryableExitCodes": [0]}}, "spec.runPolicy.retryableExitCodes[0]",
     "between 1 and 255"),
    ("retryable exit code duplicate", {"runPolicy": {"retryableExitCodes": [3, 3]}},
     "spec.runPolicy.retryableExitCodes[1]", "duplicate"),
    ("run policy type", {"runPolicy": [1]}, "spec.runPolicy", "object"),
]


@pytest.mark.parametrize(("overrides", "path", "words"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_field_is_rejected_with_its_path(overrides: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_job(job_body(**overrides))
    matching = [e for e in err.value.errors if e.startswith(path + ":")]
    assert matching, f"no error for {path} in {err.value.errors}"
    assert any(words in e for e in matching), matching


@pytest.mark.parametrize(("name", "words"), [
    ("Upper", "DNS label"),
    ("dotted.name", "DNS label"),
    ("9starts-with-digit", "DNS label"),
    ("x" * 50, "at most 49 characters"),
])
def test_job_name_must_make_valid_pod_names(name: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_job(job_body(name=name))
    assert any(e.startswith("metadata.name:") and words in e for e in err.value.errors)


def test_longest_allowed_name_gives_valid_pod_names() -> None:
    name = "j" * C.MAX_JOB_NAME_LENGTH
    job = make_job(name=name, nodes=C.MAX_NODES)
    assert len(f"{job.meta.name}-node-{C.MAX_NODES - 1}") <= 63


def test_all_errors_are_reported_together() -> None:
    with pytest.raises(SpecError) as err:
        parse_job(job_body(nodes=0, gpusPerNode=99, training={"precision": "x"}))
    paths = {e.split(":")[0] for e in err.value.errors}
    assert {"spec.nodes", "spec.gpusPerNode", "spec.training.precision"} <= paths
    assert str(err.value).count(";") == len(err.value.errors) - 1


def test_spec_must_be_an_object() -> None:
    with pytest.raises(SpecError, match="spec: must be set"):
        parse_spec(None, job_name="a")
    with pytest.raises(SpecError, match="spec: must be an object"):
        parse_spec([1], job_name="a")


def test_parse_or_error_returns_the_message() -> None:
    job, error = parse_or_error(job_body(nodes=0))
    assert job is None and error is not None and error.startswith("spec.nodes:")
    job, error = parse_or_error(job_body())
    assert job is not None and error is None


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_samples_parse(sample: Path) -> None:
    body = yaml.safe_load(sample.read_text())
    body["metadata"].setdefault("namespace", "default")
    job = parse_job(body)
    assert isinstance(job.spec, JobSpec) and not job.spec.warnings


def test_cpu_sample_is_small_and_shared() -> None:
    body = yaml.safe_load((SAMPLES / "cpu-digits-2node.yaml").read_text())
    body["metadata"]["namespace"] = "default"
    s = parse_job(body).spec
    assert s.nodes == 2 and s.gpus_per_node == 0 and s.model.name == "digits_cnn"
    assert 3 <= s.training.max_epochs <= 15  # ~1 s an epoch on the local cluster
    vct = s.output.volume_claim_template
    assert vct is not None and vct.storage_class_name == "ltj-local"
    assert vct.access_modes == ("ReadWriteMany",) and vct.storage == "1Gi"


def test_gpu_sample_is_four_by_eight() -> None:
    body = yaml.safe_load((SAMPLES / "gpu-resnet-4node.yaml").read_text())
    s = parse_job(body).spec
    assert (s.nodes, s.gpus_per_node, s.world_size) == (4, 8, 32)


@pytest.mark.parametrize("path", ["/output/checkpoints/x.ckpt", "/output/other-job-uid/checkpoints/last.ckpt",
                                  f"/output/mnist-{UID}/../other/last.ckpt", f"/output/mnist-{UID}"])
def test_resume_path_is_confined_to_the_jobs_own_directory(path: str) -> None:
    with pytest.raises(SpecError) as err:
        make_job(training={"resume": path})
    assert list(err.value.errors) == [f"spec.training.resume: must be a checkpoint in this job's own directory "
                                f"/output/mnist-{UID}/ (a checkpoint is a pickle: loading another job's would run "
                                f"its code), got {path!r}"]
    assert make_job(training={"resume": f"/output/mnist-{UID}/checkpoints/epoch=3.ckpt"}).spec.training.resume == \
        f"/output/mnist-{UID}/checkpoints/epoch=3.ckpt"


def test_the_job_as_last_applied_comes_from_the_status_the_operator_wrote() -> None:
    applied = job_body(nodes=2)
    body = {**job_body(generation=3, nodes=2, training={"resume": "/output/someone-else/last.ckpt"}),
            "status": {"appliedGeneration": 2, "appliedSpec": applied["spec"]}}
    _, error = parse_or_error(body)
    assert error is not None and error.startswith("spec.training.resume: must be a checkpoint in this job's own")
    job = applied_job(body)
    assert job is not None and job.meta.generation == 2 and job.meta.uid == UID and job.spec == make_job(nodes=2).spec
    for status in ({}, {"appliedSpec": applied["spec"]}, {"appliedGeneration": True, "appliedSpec": applied["spec"]},
                   {"appliedGeneration": 2, "appliedSpec": {**applied["spec"], "nodes": 0}}):
        assert applied_job({**body, "status": status}) is None, status
