"""failures.py: which pod failures restart the gang and which fail the job."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ltj_operator import constants as C
from ltj_operator.failures import classify, root_cause, vanished
from ltj_operator.podview import observe_pod
from unit.operator.operator_helpers import pod, running, terminated, unschedulable

pytestmark = pytest.mark.unit
R = C.Reason

# (id, pod, retryable exit codes, expected (retryable, reason, exit code) or None)
CASES: list[tuple[str, dict[str, Any], frozenset[int], tuple[bool, str, int | None] | None]] = [
    ("pending", pod("j", 0), frozenset(), None),
    ("unschedulable", unschedulable("j", 0), frozenset(), None),
    ("running", running("j", 0), frozenset(), None),
    ("succeeded", terminated("j", 0, exit_code=0, reason="Completed"), frozenset(), None),
    ("succeeded while relay drains", terminated("j", 0, exit_code=0, phase="Running"), frozenset(), None),
    ("exit 1", terminated("j", 1, exit_code=1), frozenset(), (False, R.NON_RETRYABLE_EXIT_CODE, 1)),
    ("exit 127", terminated("j", 1, exit_code=127), frozenset(), (False, R.NON_RETRYABLE_EXIT_CODE, 127)),
    ("exit 1 listed retryable", terminated("j", 1, exit_code=1), frozenset({1, 3}), (True, R.RETRYABLE_EXIT_CODE, 1)),
    ("exit 3 listed retryable", terminated("j", 1, exit_code=3), frozenset({1, 3}), (True, R.RETRYABLE_EXIT_CODE, 3)),
    ("exit 2 bad config", terminated("j", 0, exit_code=2), frozenset(), (False, R.INVALID_CONFIG, 2)),
    ("exit 2 never retryable even if listed", terminated("j", 0, exit_code=2), frozenset({2}),
     (False, R.INVALID_CONFIG, 2)),
    ("exit 128", terminated("j", 0, exit_code=128), frozenset(), (True, R.SIGNALED, 128)),
    ("exit 137 SIGKILL", terminated("j", 0, exit_code=137), frozenset(), (True, R.SIGNALED, 137)),
    ("exit 143 SIGTERM after checkpoint", terminated("j", 0, exit_code=143), frozenset(), (True, R.SIGNALED, 143)),
    ("exit 255", terminated("j", 0, exit_code=255), frozenset(), (True, R.SIGNALED, 255)),
    ("OOMKilled", terminated("j", 1, exit_code=137, reason="OOMKilled"), frozenset(), (True, R.OOM_KILLED, 137)),
    ("OOMKilled with odd code", terminated("j", 1, exit_code=1, reason="OOMKilled"), frozenset(),
     (True, R.OOM_KILLED, 1)),
    ("signal field", terminated("j", 1, exit_code=1, signal=9), frozenset(), (True, R.SIGNALED, 1)),
    ("evicted by kubelet", pod("j", 1, phase="Failed", reason="Evicted", message="low on memory"), frozenset(),
     (True, R.EVICTED, None)),
    ("evicted trainer exit 1", terminated("j", 1, exit_code=1) | {"status": {
        **terminated("j", 1, exit_code=1)["status"], "reason": "Evicted"}}, frozenset(), (True, R.EVICTED, 1)),
    ("eviction API", pod("j", 1, phase="Running", trainer={"running": {}}, deleting=True,
                          conditions=[{"type": "DisruptionTarget", "status": "True",
                                       "reason": "EvictionByEvictionAPI"}]), frozenset(), (True, R.EVICTED, None)),
    ("preempted", pod("j", 1, phase="Running", deleting=True, conditions=[
        {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]), frozenset(),
     (True, R.PREEMPTED, None)),
    ("node deleted: pod GC", pod("j", 1, phase="Running", deleting=True, conditions=[
        {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC"}]), frozenset(),
     (True, R.NODE_LOST, None)),
    ("node not ready: taint manager", pod("j", 1, phase="Running", deleting=True, conditions=[
        {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}]), frozenset(),
     (True, R.NODE_LOST, None)),
    ("disrupted trainer exited 1 on its way out", terminated("j", 1, exit_code=1) | {"metadata": {
        **terminated("j", 1, exit_code=1)["metadata"], "deletionTimestamp": "2025-01-01T00:00:00Z"}} | {"status": {
        **terminated("j", 1, exit_code=1)["status"],
        "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}]}},
     frozenset(), (True, R.EVICTED, 1)),
    ("deleted by someone", pod("j", 1, phase="Running", trainer={"running": {}}, deleting=True), frozenset(),
     (True, R.POD_DELETED, None)),
    ("node lost", pod("j", 1, phase="Unknown", reason="NodeLost"), frozenset(), (True, R.NODE_LOST, None)),
    ("node shutdown", pod("j", 1, phase="Failed", reason="Terminated", message="Pod was terminated in response to "
                                                                             "imminent node shutdown."),
     frozenset(), (True, R.NODE_LOST, None)),
    ("admission failure", pod("j", 1, phase="Failed", reason="OutOfnvidia.com/gpu"), frozenset(),
     (True, R.POD_FAILED, None)),
]


@pytest.mark.parametrize(("manifest", "codes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_classification(manifest: dict[str, Any], codes: frozenset[int],
                        expected: tuple[bool, str, int | None] | None) -> None:
    failure = classify(observe_pod(manifest), codes)
    if expected is None:
        assert failure is None
        return
    assert failure is not None
    assert (failure.retryable, failure.reason, failure.exit_code) == expected
    rank = int(manifest["metadata"]["labels"][C.LABEL_NODE_RANK])
    assert failure.pod == f"j-node-{rank}" and failure.rank == rank
    assert failure.message.startswith(f"pod j-node-{rank} (rank {rank}): ")
    status = failure.as_status()
    assert status["pod"] == failure.pod and status["reason"] == failure.reason
    assert ("exitCode" in status) == (failure.exit_code is not None)


def test_a_failure_message_is_one_line_with_the_trainers_error_not_its_json_summary() -> None:
    summary = json.dumps({"best_checkpoint": None, "best_score": None, "monitor": "val_loss", "epochs": 2,
                          "early_stopped": None, "test_metrics": {}, "last_seq": 9, "exit_code": 1,
                          "error": "ValueError: bad batch\nshape (3, 4) != (3, 5)"})
    failure = classify(observe_pod(terminated("j", 1, exit_code=1, message=summary)))
    assert failure is not None
    assert failure.message == "pod j-node-1 (rank 1): trainer exited with code 1: ValueError: bad batch"
    assert failure.as_status()["detail"] == summary  # the whole of it stays in the status
    # A summary without an error (a SIGTERM the trainer survived) adds nothing to the exit code.
    quiet = json.dumps({"last_seq": 9, "exit_code": 143, "interrupted": "SIGTERM"})
    failure = classify(observe_pod(terminated("j", 0, exit_code=143, message=quiet)))
    assert failure is not None and failure.message == "pod j-node-0 (rank 0): trainer exited with code 143 (SIGTERM)"


LOG_TAIL = """\
/usr/lib/python3/site-packages/lightning/pytorch/trainer/connectors/data_connector.py:425: The 'train_dataloader' \
does not have many workers which may be a bottleneck.
Traceback (most recent call last):
  File "/app/ltj_trainer/main.py", line 250, in _train
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
[rank1]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.
[rank1]:[W101 00:00:00.000 ProcessGroupNCCL.cpp:1168] Warning: WARNING: process group has NOT been destroyed
UserWarning: resource_tracker: There appear to be 1 leaked semaphore objects to clean up at shutdown
"""


def test_from_a_log_tail_the_message_keeps_the_exception_line_not_the_framework_noise() -> None:
    failure = classify(observe_pod(terminated("j", 0, exit_code=1, message=LOG_TAIL)))
    assert failure is not None
    assert failure.message == ("pod j-node-0 (rank 0): trainer exited with code 1: "
                               "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.")
    assert failure.as_status()["detail"] == LOG_TAIL.strip()
    # Without an exception line, the end of the last line; never more than a line.
    failure = classify(observe_pod(terminated("j", 0, exit_code=139, message="x" * 1000 + "exit 139")))
    assert failure is not None and failure.message.endswith("exit 139") and len(failure.message) < 400
    assert "\n" not in failure.message
    assert "detail" not in classify(observe_pod(terminated("j", 0, exit_code=1))).as_status()


def test_root_cause_is_the_earliest_failure() -> None:
    oom = classify(observe_pod(terminated("j", 1, exit_code=137, reason="OOMKilled", finished=10)))
    collateral = classify(observe_pod(terminated("j", 0, exit_code=1, finished=12)))
    assert oom is not None and collateral is not None
    assert root_cause([collateral, oom]) is oom
    # A genuine bug that fails first wins over a later signal.
    bug = classify(observe_pod(terminated("j", 0, exit_code=1, finished=5)))
    assert bug is not None and root_cause([oom, bug]) is bug


def test_root_cause_ties_favour_retryable_and_vanished_pods_come_first() -> None:
    oom = classify(observe_pod(terminated("j", 1, exit_code=137, reason="OOMKilled", finished=10)))
    same_time = classify(observe_pod(terminated("j", 0, exit_code=1, finished=10)))
    assert oom is not None and same_time is not None
    assert root_cause([same_time, oom]) is oom
    gone = vanished("j-node-2", 2)
    assert gone.retryable and gone.reason == R.POD_DELETED
    assert root_cause([same_time, oom, gone]) is gone
    with pytest.raises(ValueError):
        root_cause([])


def test_observe_pod_reads_labels_owner_and_scheduler_message() -> None:
    view = observe_pod(unschedulable("j", 3, attempt=2, message="0/2 nodes are available: 2 Insufficient cpu."))
    assert (view.rank, view.attempt, view.name) == (3, 2, "j-node-3")
    assert view.unschedulable == "0/2 nodes are available: 2 Insufficient cpu."
    assert view.pending_detail == view.unschedulable
    assert not view.trainer_running and not view.finished
    waiting = observe_pod(pod("j", 0, trainer={"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}))
    assert waiting.pending_detail == "ImagePullBackOff: not found"
    assert observe_pod(running("j", 0)).trainer_running
    garbage = observe_pod({"metadata": {"name": "x", "labels": {C.LABEL_NODE_RANK: "nope"}}})
    assert garbage.rank is None and garbage.attempt is None and garbage.phase == "Pending"
