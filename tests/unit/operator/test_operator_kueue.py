"""kueue.py: the Workload's name, the view of a Workload, the priority and the admission's placement, pure."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ltj_operator import constants as C
from ltj_operator import kueue
from ltj_operator.spec import Job, parse_job
from unit.operator.operator_helpers import UID, at, job_body, make_job, merge, ts, workload

pytestmark = pytest.mark.unit

ADMITTED = workload("mnist", reserved=("True", "QuotaReserved", "Quota reserved in ClusterQueue cq"),
                    cluster_queue="cq", admitted=("True", "Admitted", "The workload is admitted"))
FLAVOR = {"metadata": {"name": "gpu-a"}, "spec": {
    "nodeLabels": {"pool": "a100", "zone": "z1"},
    "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}}


def queued(name: str = "mnist", **spec: object) -> Job:
    job = make_job(name, **spec)
    return replace(job, meta=replace(job.meta, queue="gpus"))


def test_the_workload_name_is_jobframeworks() -> None:
    # sha1("LightningTrainingJob\nltj.dev\n<name>\n<uid>") cut to 5 hex digits, as `sha1sum` gives it.
    assert kueue.workload_name(make_job("mnist")) == "lightningtrainingjob-mnist-92e20"
    longest = make_job("a234567890123456789012345678901234567890123456789")
    assert len(longest.meta.name) == C.MAX_JOB_NAME_LENGTH
    name = kueue.workload_name(longest)
    assert name == ("lightningtrainingjob-" + longest.meta.name)[:57] + "-bbc31" and len(name) == 63
    other = replace(longest, meta=replace(longest.meta, uid="another"))
    assert kueue.workload_name(other) != name  # a namesake job made later gets a Workload of its own


def test_a_workload_is_admitted_only_with_both_conditions_and_an_admission() -> None:
    view = kueue.observe_workload(ADMITTED)
    assert view.admitted and view.owner_uid == UID and view.cluster_queue == "cq"
    assert [(a.name, dict(a.flavors)) for a in view.assignments] == [("master", {C.GPU_RESOURCE: "gpu-a"}),
                                                                    ("worker", {C.GPU_RESOURCE: "gpu-a"})]
    reserved_only = workload("mnist", reserved=("True", "QuotaReserved", "Quota reserved in ClusterQueue cq"),
                             cluster_queue="cq", admitted=("False", "AdmissionChecksPending", "waiting"))
    assert not kueue.observe_workload(reserved_only).admitted
    pending = kueue.observe_workload(workload("mnist", reserved=("False", "Pending", "insufficient quota")))
    assert not pending.admitted and pending.quota_reserved == kueue.Condition("False", "Pending", "insufficient quota")
    assert not kueue.observe_workload(workload("mnist")).admitted  # Kueue has not looked at it yet
    evicted = kueue.observe_workload(merge(ADMITTED, {"status": {"conditions": [
        *ADMITTED["status"]["conditions"], {"type": "Evicted", "status": "True", "reason": "Preempted",
                                            "message": "preempted"}]}}))
    assert not evicted.admitted and evicted.evicted == kueue.Condition("True", "Preempted", "preempted")
    finished = kueue.observe_workload(merge(ADMITTED, {"status": {"conditions": [
        *ADMITTED["status"]["conditions"], {"type": "Finished", "status": "True", "reason": "Succeeded",
                                            "message": "done"}]}}))
    assert not finished.admitted and finished.finished is not None


def test_the_placement_is_the_flavors_node_labels_and_tolerations() -> None:
    job = queued(nodes=2)
    view = kueue.observe_workload(ADMITTED)
    placement = kueue.placement(job, view, {"gpu-a": FLAVOR})
    assert [(p.name, dict(p.node_selector), p.tolerations, dict(p.labels)) for p in placement] == [
        (name, {"pool": "a100", "zone": "z1"}, ({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},),
         {C.LABEL_KUEUE_PODSET: name, C.LABEL_KUEUE_LOCAL_QUEUE: "gpus", C.LABEL_KUEUE_CLUSTER_QUEUE: "cq"})
        for name in ("master", "worker")]
    # The same admission recorded in status is reused as it is; another admission is not.
    queue = {"workload": view.name, "clusterQueue": "cq", "podSets": [p.as_status() for p in placement]}
    assert kueue.recorded_placement(job, queue, view) == placement
    assert kueue.recorded_placement(job, {**queue, "clusterQueue": "other"}, view) is None
    moved = kueue.observe_workload(workload("mnist", reserved=("True", "QuotaReserved", "q"), cluster_queue="cq",
                                            admitted=("True", "Admitted", "a"), flavor="gpu-b"))
    assert kueue.recorded_placement(job, queue, moved) is None
    # A ClusterQueue name that is no label value (a dotted one) is left off the pods, as Kueue does.
    dotted = kueue.observe_workload(workload("mnist", reserved=("True", "QuotaReserved", "q"), cluster_queue="team.cq",
                                             admitted=("True", "Admitted", "a")))
    assert all(C.LABEL_KUEUE_CLUSTER_QUEUE not in p.labels
               for p in kueue.placement(job, dotted, {"gpu-a": FLAVOR}))


def test_a_placement_that_cannot_be_applied_names_why() -> None:
    view = kueue.observe_workload(ADMITTED)
    with pytest.raises(kueue.PlacementError, match="ResourceFlavor gpu-a, which Kueue admitted the job with, "
                                                   "does not exist"):
        kueue.placement(queued(nodes=2), view, {"gpu-a": None})
    with pytest.raises(kueue.PlacementError, match="spec.podTemplate.nodeSelector zone=z2 conflicts with zone=z1"):
        kueue.placement(queued(nodes=2, podTemplate={"nodeSelector": {"zone": "z2"}}), view, {"gpu-a": FLAVOR})
    # The same value is no conflict.
    assert kueue.placement(queued(nodes=2, podTemplate={"nodeSelector": {"zone": "z1"}}), view, {"gpu-a": FLAVOR})


def test_the_priority_comes_from_the_label_then_the_pods_class_then_the_global_default() -> None:
    labelled = make_job("mnist", podTemplate={"priorityClassName": "pods-class"})
    labelled = replace(labelled, meta=replace(labelled.meta, priority_class="high"))
    assert kueue.priority_source(labelled) == (kueue.WORKLOAD_PRIORITY_CLASS, "high")
    assert kueue.priority_source(make_job("mnist", podTemplate={"priorityClassName": "pods-class"})) == (
        kueue.POD_PRIORITY_CLASS, "pods-class")
    assert kueue.priority_source(make_job("mnist")) is None
    assert kueue.priority_of(kueue.WORKLOAD_PRIORITY_CLASS, {"metadata": {"name": "high"}, "value": 1000}) == \
        kueue.Priority(1000, {"group": "kueue.x-k8s.io", "kind": "WorkloadPriorityClass", "name": "high"})
    classes = [{"metadata": {"name": "a"}, "value": 50, "globalDefault": True},
               {"metadata": {"name": "b"}, "value": 10, "globalDefault": True},
               {"metadata": {"name": "c"}, "value": 1}]
    assert kueue.default_priority(classes) == kueue.Priority(10, {"group": "scheduling.k8s.io",
                                                                  "kind": "PriorityClass", "name": "b"})
    assert kueue.default_priority(classes[2:]) == kueue.Priority()


def test_the_priority_class_label_is_parsed() -> None:
    body = job_body()
    body["metadata"]["labels"] = {C.LABEL_KUEUE_QUEUE: "gpus", C.LABEL_KUEUE_PRIORITY_CLASS: "high"}
    assert (parse_job(body).meta.queue, parse_job(body).meta.priority_class) == ("gpus", "high")


def evicted(reason: str, **status: object) -> dict[str, object]:
    """ADMITTED (admitted at ts(0)) evicted at ts(100) for ``reason``, with ``status`` fields besides."""
    return merge(ADMITTED, {"metadata": {"generation": 3}, "status": {**status, "conditions": [
        *ADMITTED["status"]["conditions"],
        {"type": "Evicted", "status": "True", "reason": reason, "message": f"evicted: {reason}",
         "lastTransitionTime": ts(100)}]}})


def by_type(patch: dict[str, object]) -> dict[str, dict[str, object]]:
    return {c["type"]: c for c in patch["conditions"]}  # type: ignore[index, union-attr]


def test_clearing_a_preempted_workloads_admission_releases_its_quota_and_requeues_it_at_once() -> None:
    patch = kueue.cleared_admission(evicted("Preempted"), at(160))
    assert patch is not None and "admission" in patch and patch["admission"] is None
    conds = by_type(patch)
    assert conds["QuotaReserved"] == {"type": "QuotaReserved", "status": "False", "reason": "Pending",
                                      "message": "evicted: Preempted", "lastTransitionTime": ts(160),
                                      "observedGeneration": 3}
    assert conds["Admitted"] == {"type": "Admitted", "status": "False", "reason": "NoReservation",
                                 "message": "The workload has no reservation", "lastTransitionTime": ts(160),
                                 "observedGeneration": 3}
    assert (conds["Requeued"]["status"], conds["Requeued"]["reason"], conds["Requeued"]["message"],
            conds["Requeued"]["lastTransitionTime"]) == ("True", "Preempted", "evicted: Preempted", ts(160))
    # The eviction itself is Kueue's to reset (at the next admission), and keeps its time.
    assert conds["Evicted"]["status"] == "True" and conds["Evicted"]["lastTransitionTime"] == ts(100)
    assert patch["accumulatedPastExecutionTimeSeconds"] == 160  # admitted at ts(0)
    # Node failures requeue at once too; anything else waits for Kueue's own controller (backoff, reactivation).
    assert by_type(kueue.cleared_admission(evicted("NodeFailures"), at(160)))["Requeued"]["status"] == "True"
    for reason in ("PodsReadyTimeout", "Deactivated", "DeactivatedDueToRequeuingLimitExceeded", "AdmissionCheck",
                   "ClusterQueueStopped"):
        requeued = by_type(kueue.cleared_admission(evicted(reason), at(160)))["Requeued"]
        assert (requeued["status"], requeued["reason"]) == ("False", reason)


def test_clearing_keeps_a_condition_time_unless_its_status_changes_and_adds_to_the_past_execution_time() -> None:
    body = evicted("Preempted", accumulatedPastExecutionTimeSeconds=40)
    body["status"]["conditions"].append(  # type: ignore[index]
        {"type": "Requeued", "status": "True", "reason": "BackoffFinished", "message": "m", "lastTransitionTime": ts(5)})
    patch = kueue.cleared_admission(body, at(160))
    assert patch is not None and patch["accumulatedPastExecutionTimeSeconds"] == 200
    requeued = by_type(patch)["Requeued"]
    assert (requeued["reason"], requeued["lastTransitionTime"]) == ("Preempted", ts(5))


def test_admission_checks_not_ready_are_said_and_nothing_is_cleared_twice() -> None:
    body = evicted("AdmissionCheck", admissionChecks=[{"name": "prov", "state": "Retry"}])
    assert by_type(kueue.cleared_admission(body, at(160)))["Admitted"]["reason"] == "NoReservationUnsatisfiedChecks"
    assert kueue.cleared_admission(ADMITTED, at(160)) is None  # not evicted
    cleared = merge(evicted("Preempted"), {"status": kueue.cleared_admission(evicted("Preempted"), at(160))})
    assert kueue.observe_workload(cleared).evicted is not None and kueue.cleared_admission(cleared, at(170)) is None
    assert kueue.observe_workload(cleared).evicted_at == ts(100)  # which eviction it is, until admitted again


NOT_STARTED = ("False", "WaitForStart", "Not all pods are ready or succeeded")
RECOVERING = ("False", "WaitForRecovery", "At least one pod has failed, waiting for recovery")
READY = "All pods reached readiness and the workload is running"


@pytest.mark.parametrize("admitted, current, gang_ready, want", [
    # Not admitted (never yet, or no more after an eviction): waiting for the start, whatever it had.
    (False, None, False, NOT_STARTED),
    (False, ("True", "Started", READY), True, NOT_STARTED),
    (False, NOT_STARTED, False, None),
    # Admitted, the whole gang ready: Started, or Recovered after a recovery.
    (True, None, True, ("True", "Started", READY)),
    (True, NOT_STARTED, True, ("True", "Started", READY)),
    (True, RECOVERING, True, ("True", "Recovered", READY)),
    (True, ("True", "Started", READY), True, None),
    (True, ("True", "Recovered", READY), True, None),
    # Admitted, not all ready: WaitForStart until it first was ready, then WaitForRecovery.
    (True, None, False, NOT_STARTED),
    (True, NOT_STARTED, False, None),
    (True, ("False", "PodsReady", "an older Kueue's reason"), False, NOT_STARTED),
    (True, ("True", "Started", READY), False, RECOVERING),
    (True, ("True", "Recovered", READY), False, RECOVERING),
    (True, RECOVERING, False, None),
])
def test_pods_ready_is_jobframeworks(admitted: bool, current: tuple[str, str, str] | None, gang_ready: bool,
                                     want: tuple[str, str, str] | None) -> None:
    body = workload("mnist", reserved=("True", "QuotaReserved", "Quota reserved in ClusterQueue cq"), cluster_queue="cq",
                    admitted=("True", "Admitted", "The workload is admitted") if admitted
                    else ("False", "NoReservation", "The workload has no reservation"), pods_ready=current)
    got = kueue.pods_ready_update(kueue.observe_workload(body), gang_ready)
    assert (got and (got.status, got.reason, got.message)) == want


def test_only_the_status_and_reason_count_and_a_finished_workload_gets_none() -> None:
    # Kueue's HasConditionWithTypeAndReason: another message alone is no reason to write.
    view = kueue.observe_workload(merge(ADMITTED, {"status": {"conditions": [
        *ADMITTED["status"]["conditions"],
        {"type": "PodsReady", "status": "True", "reason": "Started", "message": "said otherwise"}]}}))
    assert kueue.pods_ready_update(view, True) is None
    finished = kueue.observe_workload(merge(ADMITTED, {"status": {"conditions": [
        *ADMITTED["status"]["conditions"], {"type": "Finished", "status": "True", "reason": "Succeeded"}]}}))
    assert kueue.pods_ready_update(finished, False) is None
    assert kueue.pods_ready_patch(merge(ADMITTED, {"status": {"conditions": [
        *ADMITTED["status"]["conditions"], {"type": "Finished", "status": "True", "reason": "Succeeded"}]}}),
        False, at(60)) is None


def test_the_pods_ready_patch_sets_that_condition_alone_and_keeps_its_time_unless_its_status_changes() -> None:
    patch = kueue.pods_ready_patch({**ADMITTED, "metadata": {**ADMITTED["metadata"], "generation": 3}}, True, at(60))
    assert patch is not None and set(patch) == {"conditions"}
    *others, ready = patch["conditions"]
    assert others == ADMITTED["status"]["conditions"]
    assert ready == {"type": "PodsReady", "status": "True", "reason": "Started", "message": READY,
                     "lastTransitionTime": ts(60), "observedGeneration": 3}
    # Started -> WaitForRecovery -> Recovered: each a new status, a new time; the same status keeps it.
    recovering = kueue.pods_ready_patch({**ADMITTED, "status": {**ADMITTED["status"], "conditions": patch["conditions"]}},
                                        False, at(90))
    assert recovering is not None and recovering["conditions"][-1]["lastTransitionTime"] == ts(90)
    assert recovering["conditions"][-1]["reason"] == "WaitForRecovery"
    not_started = {**ADMITTED, "status": {**ADMITTED["status"], "conditions": [
        *ADMITTED["status"]["conditions"],
        {"type": "PodsReady", "status": "False", "reason": "PodsReady", "lastTransitionTime": ts(10)}]}}
    same_status = kueue.pods_ready_patch(not_started, False, at(90))
    assert same_status is not None and same_status["conditions"][-1]["reason"] == "WaitForStart"
    assert same_status["conditions"][-1]["lastTransitionTime"] == ts(10)
    assert kueue.pods_ready_patch({**not_started, "status": {**not_started["status"],
                                                             "conditions": same_status["conditions"]}},
                                  False, at(120)) is None
