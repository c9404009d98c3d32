"""status.decide: observed pods + current status -> phase, conditions, actions (a table), plus lifecycles
driven through the pure function to check that nothing goes backwards and repeats change nothing."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from ltj_operator import constants as C
from ltj_operator.kueue import (PODS_READY_MESSAGE, WAIT_FOR_START, Priority, QueueObserved, observe_workload, placement,
                                workload_name)
from ltj_operator.podview import observe_pod
from ltj_operator.spec import Job, applied_job, parse_job
from ltj_operator.status import (FINISH_GRACE_SECONDS, ClearAdmission, CreatePods, CreateWorkload, Decision, DeleteJob,
                                 DeletePods, FinishWorkload, Observed, Outcomes, SetPodsReady, StallPolicy, decide,
                                 format_time, parse_time, transition)
from unit.operator.operator_helpers import (at, job_body, make_job, merge, pod, running, terminated, ts, unschedulable,
                                            workload)

pytestmark = pytest.mark.unit
R = C.Reason

J = "mnist"
CKPT = "/output/checkpoints/digits_cnn_epoch=02-val_loss=0.31.ckpt"
UNBOUND = ("0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/2 nodes are "
           "available: 2 Preemption is not helpful for scheduling.")
QUOTA = "403 Forbidden: pods is forbidden: exceeded quota"
REFUSED = f"the API server refused to create the job's objects: {QUOTA}"
IN_THE_WAY = (f"409 AlreadyExists: Service {J} exists and is not controlled by this job (its controller: none); "
              "delete it or rename the job")
TAKEN = f"no pods are created while a child's name is taken: {IN_THE_WAY}"
SUMMARY_ES = ('{"best_checkpoint": "/output/checkpoints/best.ckpt", "best_score": 0.2, "monitor": "val_loss", '
              '"epochs": 5, "early_stopped": true, "test_metrics": {"test_acc": 0.97}, "last_seq": 40}')


def cond(type_: str, status: str, reason: str, since: float = 0, message: str = "m") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": ts(since), "observedGeneration": 1}


APPLIED = job_body(name=J, nodes=2)["spec"]  # the spec of generation 1, as the operator last found it valid


def st(phase: str, *conds: dict[str, Any], **fields: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": list(conds), "restarts": 0, "attempt": 0, "nodes": 2,
                              "observedGeneration": 1, "appliedGeneration": 1, "appliedSpec": APPLIED}
    status.update(fields)
    return status


LAUNCHED = dict(launchedAttempt=0, startTime=ts(0))


def labelled_only(obj: dict[str, Any]) -> dict[str, Any]:
    """A pod with the job's labels and names but no controller (someone else's, made to look like ours)."""
    del obj["metadata"]["ownerReferences"]
    return obj
RUNNING = st(C.PHASE_RUNNING, cond(C.COND_CREATED, "True", R.PODS_CREATED),
             cond(C.COND_RUNNING, "True", R.ALL_PODS_RUNNING, since=5), readyNodes=2, **LAUNCHED)
RESTARTING = st(C.PHASE_RESTARTING, cond(C.COND_CREATED, "True", R.PODS_CREATED),
                cond(C.COND_RUNNING, "False", R.OOM_KILLED, since=30),
                cond(C.COND_RESTARTING, "True", R.OOM_KILLED, since=30),
                restarts=1, attempt=1, launchedAttempt=0, startTime=ts(0), resumeFrom=CKPT,
                training={"lastCheckpoint": CKPT, "epoch": 2, "step": 90})
SUCCEEDED = st(C.PHASE_SUCCEEDED, cond(C.COND_SUCCEEDED, "True", R.MAX_EPOCHS_REACHED, since=100),
               completionTime=ts(100), **LAUNCHED)
FAILED = st(C.PHASE_FAILED, cond(C.COND_FAILED, "True", R.NON_RETRYABLE_EXIT_CODE, since=100),
            completionTime=ts(100), **LAUNCHED)
# A succeeded job with its last checkpoint and result on record; MORE_EPOCHS raises maxEpochs above those it trained.
TRAINED = {**SUCCEEDED, "resumeFrom": CKPT, "training": {"lastCheckpoint": CKPT},
           "result": {"source": "training", "epochs": 10, "earlyStopped": False}}
MORE_EPOCHS = {"nodes": 2, "training": {"maxEpochs": 15}}
SUSPENDED = st(C.PHASE_SUSPENDED, cond(C.COND_SUSPENDED, "True", R.SUSPENDED, since=50), launchedAttempt=0)
PENDING = st(C.PHASE_PENDING, cond(C.COND_CREATED, "True", R.PODS_CREATED),
             cond(C.COND_RUNNING, "False", R.PODS_PENDING, message="0 of 2 pod(s) running"), readyNodes=0, **LAUNCHED)


# The job's Workload, as Kueue leaves it at each step (operator_helpers.workload), and what status.queue says.
WL = workload_name(make_job(J, nodes=2))
CREATED_MESSAGE = f"creating Workload {WL} in LocalQueue gpus: no pods are created until Kueue admits it"
WAITING = st(C.PHASE_PENDING, cond(C.COND_QUOTA_RESERVED, "False", R.WORKLOAD_CREATED, message=CREATED_MESSAGE),
             queue={"name": "gpus", "workload": WL, "admitted": False, "reason": R.WORKLOAD_CREATED,
                    "message": CREATED_MESSAGE})
SHORT = ("couldn't assign flavors to pod set master: insufficient unused quota for nvidia.com/gpu in flavor gpu-a, "
         "2 more needed")
PENDING_WL = observe_workload(workload(J, reserved=("False", "Pending", SHORT)))
PENDING_ON_RECORD = st(C.PHASE_PENDING, cond(C.COND_QUOTA_RESERVED, "False", "Pending", message=SHORT),
                       queue={"name": "gpus", "workload": WL, "admitted": False, "reason": "Pending", "message": SHORT})
ADMITTED_BODY = workload(J, reserved=("True", "QuotaReserved", "Quota reserved in ClusterQueue cq"), cluster_queue="cq",
                         admitted=("True", "Admitted", "The workload is admitted"))
ADMITTED_WL = observe_workload(ADMITTED_BODY)
# Admitted, its gang ready: PodsReady=True, as the operator sets it (kueue.pods_ready_update).
STARTED_WL = observe_workload(workload(J, reserved=("True", "QuotaReserved", "Quota reserved in ClusterQueue cq"),
                                       cluster_queue="cq", admitted=("True", "Admitted", "The workload is admitted"),
                                       pods_ready=("True", "Started", PODS_READY_MESSAGE)))
FINISHED_WL = observe_workload(merge(ADMITTED_BODY, {"status": {"conditions": [
    *ADMITTED_BODY["status"]["conditions"],
    {"type": "Finished", "status": "True", "reason": "Succeeded", "message": "done"}]}}))
GPU_FLAVOR = {"metadata": {"name": "gpu-a"}, "spec": {"nodeLabels": {"pool": "a100"}, "tolerations": [
    {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}}
PLACEMENT = placement(make_job(J, nodes=2), ADMITTED_WL, {"gpu-a": GPU_FLAVOR})
ADMITTED_MESSAGE = (f"Workload {WL} is admitted by ClusterQueue cq (master: nvidia.com/gpu=gpu-a, "
                    "worker: nvidia.com/gpu=gpu-a)")
QUEUE_ADMITTED = {"name": "gpus", "workload": WL, "admitted": True, "clusterQueue": "cq", "reason": R.ADMITTED,
                  "message": ADMITTED_MESSAGE, "podSets": [p.as_status() for p in PLACEMENT]}
# Kueue preempts the admitted job (Evicted=True, quota still reserved), the operator clears the admission once
# the pods are gone (REQUEUED_WL: as Kueue then has it, Evicted still True), and Kueue admits it again.
PREEMPTED = ("Preempted to accommodate a workload (UID: u-high, JobUID: j-high) due to prioritization in the "
             "ClusterQueue; preemptor path: /cq; preemptee path: /cq")


def evicted_wl(since: float = 0, reason: str = "Preempted") -> Any:
    body = workload(J, reserved=("True", "QuotaReserved", "Quota reserved in ClusterQueue cq"), cluster_queue="cq",
                    admitted=("True", "Admitted", "The workload is admitted"), evicted=("True", reason, PREEMPTED))
    body["status"]["conditions"][-1]["lastTransitionTime"] = ts(since)
    return observe_workload(body)


EVICTED_WL = evicted_wl()
REQUEUED_WL = observe_workload(workload(J, reserved=("False", "Pending", PREEMPTED), evicted=("True", "Preempted", PREEMPTED),
                                        admitted=("False", "NoReservation", "The workload has no reservation")))
LAST_EVICTION = {"reason": "Preempted", "message": PREEMPTED, "time": ts(0), "attempt": 0}
EVICTING = st(C.PHASE_SUSPENDED, cond(C.COND_CREATED, "True", R.PODS_CREATED),
              cond(C.COND_RUNNING, "False", R.WORKLOAD_EVICTED, since=50),
              cond(C.COND_SUSPENDED, "True", R.WORKLOAD_EVICTED, since=50),
              cond(C.COND_QUOTA_RESERVED, "False", R.WORKLOAD_EVICTED, since=50), launchedAttempt=0, resumeFrom=CKPT,
              evictions=1, lastEviction=LAST_EVICTION, queue={"name": "gpus", "workload": WL, "admitted": False,
                                                              "reason": R.WORKLOAD_EVICTED, "message": "m"})
REQUEUED = {**EVICTING, "conditions": [*EVICTING["conditions"][:3],
                                       cond(C.COND_QUOTA_RESERVED, "False", "Pending", since=50, message=PREEMPTED)]}


@dataclass
class Case:
    id: str
    status: dict[str, Any] | None
    pods: list[dict[str, Any]]
    phase: str
    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)
    creates: tuple[tuple[int, ...], int, str | None] | None = None
    deletes: tuple[str, ...] = ()
    delete_job: bool = False
    spec: dict[str, Any] = field(default_factory=lambda: {"nodes": 2})
    now: float = 60
    restarts: int = 0
    attempt: int = 0
    failure: tuple[str, int, str] | None = None  # (pod, rank, reason)
    requeue: float | None = None
    modes: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other status fields to check
    outcomes: Outcomes = Outcomes()  # what the reconciler's creates came to, what it remembers
    held: bool = False  # the status is recorded by a later pass
    warnings: tuple[str, ...] | None = None  # the reasons of the Warning events to post, exactly (None: unchecked)
    queue: str | None = None  # the job's kueue.x-k8s.io/queue-name label
    generation: int = 1  # the resource's metadata.generation
    kueue: bool | None = None  # Observed.kueue_installed
    wl: QueueObserved | None = None  # Observed.queue: the job's Workload and what goes with it
    # "create", "finish <reason>", "clear" or "ready <True|False>" (SetPodsReady): the Workload actions, exactly.
    workload_actions: tuple[str, ...] = ()


CASES = [
    # --- creation ---
    Case("new job creates every pod", None, [], C.PHASE_PENDING,
         {C.COND_CREATED: ("False", R.CREATING_PODS), C.COND_RUNNING: ("False", R.PODS_PENDING)},
         creates=((0, 1), 0, None), extra={"startTime": ts(60), "launchedAttempt": None}),
    # The first gang's status is written only after its pods exist (reconcile), so an operator that stopped in
    # between finds pods and no status: the status follows from the pods; nothing is recreated or restarted.
    Case("first gang's pods found before any status: recorded as launched", None, [pod(J, 0), pod(J, 1)],
         C.PHASE_PENDING, {C.COND_CREATED: ("True", R.PODS_CREATED), C.COND_RUNNING: ("False", R.PODS_PENDING)},
         extra={"startTime": ts(60), "launchedAttempt": 0, "readyNodes": 0}),
    Case("first gang found running before any status", None, [running(J, 0), running(J, 1)], C.PHASE_RUNNING,
         {C.COND_CREATED: ("True", R.PODS_CREATED), C.COND_RUNNING: ("True", R.ALL_PODS_RUNNING)},
         extra={"startTime": ts(60), "launchedAttempt": 0, "readyNodes": 2}),
    Case("first gang half created before any status: completed", None, [pod(J, 0)], C.PHASE_PENDING,
         {C.COND_CREATED: ("False", R.CREATING_PODS)}, creates=((1,), 0, None),
         extra={"startTime": ts(60), "launchedAttempt": None}),
    Case("after a refusal the whole gang exists: Created (the reconciler ensures the other children first)",
         st(C.PHASE_PENDING, cond(C.COND_CREATED, "False", R.POD_CREATION_FAILED), startTime=ts(0)),
         [pod(J, 0), pod(J, 1)], C.PHASE_PENDING, {C.COND_CREATED: ("True", R.PODS_CREATED)},
         extra={"launchedAttempt": 0}),
    Case("a refused gang still missing a pod keeps the refusal visible",
         st(C.PHASE_PENDING, cond(C.COND_CREATED, "False", R.POD_CREATION_FAILED), startTime=ts(0)),
         [pod(J, 0)], C.PHASE_PENDING, {C.COND_CREATED: ("False", R.POD_CREATION_FAILED)}, creates=((1,), 0, None)),
    Case("created suspended: nothing runs", None, [], C.PHASE_SUSPENDED, {C.COND_SUSPENDED: ("True", R.SUSPENDED)},
         spec={"nodes": 2, "runPolicy": {"suspend": True}}, extra={"startTime": None}),
    Case("partial creation is completed, not a failure",
         st(C.PHASE_PENDING, cond(C.COND_CREATED, "False", R.CREATING_PODS), startTime=ts(0)),
         [pod(J, 0)], C.PHASE_PENDING, {C.COND_CREATED: ("False", R.CREATING_PODS)}, creates=((1,), 0, None)),
    Case("all pods created and pending", st(C.PHASE_PENDING, startTime=ts(0)), [pod(J, 0), pod(J, 1)],
         C.PHASE_PENDING, {C.COND_CREATED: ("True", R.PODS_CREATED), C.COND_RUNNING: ("False", R.PODS_PENDING)},
         extra={"launchedAttempt": 0, "readyNodes": 0}),
    Case("all pods running", st(C.PHASE_PENDING, **LAUNCHED), [running(J, 0), running(J, 1)], C.PHASE_RUNNING,
         {C.COND_RUNNING: ("True", R.ALL_PODS_RUNNING)}, extra={"readyNodes": 2}),
    Case("one rank running, one waiting: still pending", st(C.PHASE_PENDING, **LAUNCHED),
         [running(J, 0), pod(J, 1, trainer={"waiting": {"reason": "ContainerCreating"}})], C.PHASE_PENDING,
         {C.COND_RUNNING: ("False", R.PODS_PENDING)}, extra={"readyNodes": 1}),
    Case("unschedulable pod surfaces the scheduler's message", st(C.PHASE_PENDING, **LAUNCHED),
         [running(J, 0), unschedulable(J, 1)], C.PHASE_PENDING,
         {C.COND_UNSCHEDULABLE: ("True", R.PODS_UNSCHEDULABLE)}),
    Case("a pod waiting for its claim to bind is pending, not unschedulable: look again when the wait is over",
         st(C.PHASE_PENDING, **LAUNCHED), [running(J, 0), unschedulable(J, 1, message=UNBOUND, since=50)],
         C.PHASE_PENDING, {C.COND_RUNNING: ("False", R.PODS_PENDING)}, warnings=(), requeue=20),
    Case("a claim still unbound after the wait is reported", st(C.PHASE_PENDING, **LAUNCHED),
         [running(J, 0), unschedulable(J, 1, message=UNBOUND, since=20)], C.PHASE_PENDING,
         {C.COND_UNSCHEDULABLE: ("True", R.PODS_UNSCHEDULABLE)}, warnings=(R.PODS_UNSCHEDULABLE,)),
    Case("unschedulable resolved", st(C.PHASE_PENDING, cond(C.COND_UNSCHEDULABLE, "True", R.PODS_UNSCHEDULABLE),
                                      **LAUNCHED),
         [running(J, 0), running(J, 1)], C.PHASE_RUNNING, {C.COND_UNSCHEDULABLE: ("False", R.PODS_SCHEDULED)}),
    Case("foreign pod blocks its name", st(C.PHASE_PENDING, startTime=ts(0)),
         [pod(J, 0), pod(J, 1, owner="someone-else")], C.PHASE_PENDING,
         {C.COND_CREATED: ("False", R.POD_NAME_CONFLICT)}),
    Case("a pod merely labelled as a rank of the job is not counted: its name is taken", None,
         [labelled_only(running(J, 0))], C.PHASE_PENDING, {C.COND_CREATED: ("False", R.POD_NAME_CONFLICT)},
         creates=((1,), 0, None), extra={"readyNodes": 0, "launchedAttempt": None}),
    Case("suspension deletes the job's pods, not one merely labelled as its", RUNNING,
         [running(J, 0), labelled_only(running(J, 1))], C.PHASE_SUSPENDED, {C.COND_SUSPENDED: ("True", R.SUSPENDED)},
         spec={"nodes": 2, "runPolicy": {"suspend": True}}, deletes=(f"{J}-node-0",)),
    # --- running and restarts ---
    Case("a rank that finished first does not make a running job pending", RUNNING,
         [running(J, 0), terminated(J, 1, exit_code=0)], C.PHASE_RUNNING, {C.COND_RUNNING: ("True", R.ALL_PODS_RUNNING)}),
    Case("OOMKilled rank restarts the gang", RUNNING,
         [running(J, 0), terminated(J, 1, exit_code=137, reason="OOMKilled")], C.PHASE_RESTARTING,
         {C.COND_RESTARTING: ("True", R.OOM_KILLED), C.COND_RUNNING: ("False", R.OOM_KILLED)},
         deletes=("mnist-node-0", "mnist-node-1"), restarts=1, attempt=1, failure=("mnist-node-1", 1, R.OOM_KILLED),
         requeue=5),
    Case("root cause wins over the collateral exit 1", RUNNING,
         [terminated(J, 0, exit_code=1, finished=12), terminated(J, 1, exit_code=137, reason="OOMKilled", finished=10)],
         C.PHASE_RESTARTING, {C.COND_RESTARTING: ("True", R.OOM_KILLED)},
         deletes=("mnist-node-0", "mnist-node-1"), restarts=1, attempt=1, failure=("mnist-node-1", 1, R.OOM_KILLED)),
    Case("SIGTERM exit 143 restarts", RUNNING, [running(J, 0), terminated(J, 1, exit_code=143)], C.PHASE_RESTARTING,
         {C.COND_RESTARTING: ("True", R.SIGNALED)}, deletes=("mnist-node-0", "mnist-node-1"), restarts=1, attempt=1),
    Case("listed exit code restarts", RUNNING, [running(J, 0), terminated(J, 1, exit_code=3)], C.PHASE_RESTARTING,
         {C.COND_RESTARTING: ("True", R.RETRYABLE_EXIT_CODE)}, spec={"nodes": 2, "runPolicy": {"retryableExitCodes": [3]}},
         deletes=("mnist-node-0", "mnist-node-1"), restarts=1, attempt=1),
    Case("a vanished pod restarts the gang", RUNNING, [running(J, 0)], C.PHASE_RESTARTING,
         {C.COND_RESTARTING: ("True", R.POD_DELETED)}, deletes=("mnist-node-0",), restarts=1, attempt=1,
         failure=("mnist-node-1", 1, R.POD_DELETED)),
    Case("node loss restarts the gang", RUNNING,
         [running(J, 0), pod(J, 1, phase="Running", deleting=True, conditions=[
             {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC"}])],
         C.PHASE_RESTARTING, {C.COND_RESTARTING: ("True", R.NODE_LOST)}, deletes=("mnist-node-0",), restarts=1,
         attempt=1),
    Case("restart waits for the old pods to go", RESTARTING,
         [pod(J, 0, attempt=0, deleting=True, phase="Running"), pod(J, 1, attempt=0, deleting=True)],
         C.PHASE_RESTARTING, {C.COND_RESTARTING: ("True", R.OOM_KILLED)}, restarts=1, attempt=1, requeue=5),
    Case("old pods gone: new attempt resumes from the last checkpoint", RESTARTING, [], C.PHASE_RESTARTING,
         {C.COND_RESTARTING: ("True", R.OOM_KILLED)}, creates=((0, 1), 1, CKPT), restarts=1, attempt=1),
    Case("one old pod still there: the new gang waits for it", RESTARTING, [pod(J, 0, attempt=0, deleting=True)],
         C.PHASE_RESTARTING, restarts=1, attempt=1, requeue=5),
    Case("an old pod left by an interrupted restart is deleted first", RESTARTING,
         [pod(J, 0, attempt=0, phase="Running")], C.PHASE_RESTARTING, deletes=("mnist-node-0",), restarts=1,
         attempt=1, requeue=5),
    Case("restarted gang runs again", RESTARTING, [running(J, 0, attempt=1), running(J, 1, attempt=1)],
         C.PHASE_RUNNING, {C.COND_RESTARTING: ("False", R.RESTART_COMPLETE), C.COND_RUNNING: ("True", R.ALL_PODS_RUNNING)},
         restarts=1, attempt=1, extra={"launchedAttempt": 1}),
    Case("backoff limit exhausted", {**RUNNING, "restarts": 3, "attempt": 3, "launchedAttempt": 3},
         [running(J, 0, attempt=3), terminated(J, 1, attempt=3, exit_code=137, reason="OOMKilled")], C.PHASE_FAILED,
         {C.COND_FAILED: ("True", R.BACKOFF_LIMIT_EXCEEDED), C.COND_RUNNING: ("False", R.JOB_FINISHED)},
         deletes=("mnist-node-0",), restarts=3, attempt=3, failure=("mnist-node-1", 1, R.OOM_KILLED),
         extra={"completionTime": ts(60)}),
    Case("backoffLimit 0 never restarts", RUNNING, [running(J, 0), terminated(J, 1, exit_code=137)], C.PHASE_FAILED,
         {C.COND_FAILED: ("True", R.BACKOFF_LIMIT_EXCEEDED)}, spec={"nodes": 2, "runPolicy": {"backoffLimit": 0}},
         deletes=("mnist-node-0",)),
    # --- terminal paths ---
    Case("exit 1 fails the job; cleanPodPolicy Running deletes the running rank", RUNNING,
         [running(J, 0), terminated(J, 1, exit_code=1, message="ValueError: bad")], C.PHASE_FAILED,
         {C.COND_FAILED: ("True", R.NON_RETRYABLE_EXIT_CODE)}, deletes=("mnist-node-0",),
         failure=("mnist-node-1", 1, R.NON_RETRYABLE_EXIT_CODE)),
    Case("exit 2 is an invalid config", RUNNING, [terminated(J, 0, exit_code=2), terminated(J, 1, exit_code=2)],
         C.PHASE_FAILED, {C.COND_FAILED: ("True", R.INVALID_CONFIG)}, failure=("mnist-node-0", 0, R.INVALID_CONFIG)),
    Case("failure with cleanPodPolicy None keeps every pod", RUNNING, [running(J, 0), terminated(J, 1, exit_code=1)],
         C.PHASE_FAILED, {C.COND_FAILED: ("True", R.NON_RETRYABLE_EXIT_CODE)},
         spec={"nodes": 2, "runPolicy": {"cleanPodPolicy": "None"}}),
    Case("failure with cleanPodPolicy All deletes every pod", RUNNING, [running(J, 0), terminated(J, 1, exit_code=1)],
         C.PHASE_FAILED, spec={"nodes": 2, "runPolicy": {"cleanPodPolicy": "All"}},
         deletes=("mnist-node-0", "mnist-node-1")),
    # Rank 0 exits after the gang's last collective: a rank still seen running is exiting too, its report on
    # the way; deleting it would lose its logs (cleanPodPolicy Running deletes only pods that still run).
    Case("rank 0 exit 0 succeeds; ranks still seen running get time to finish", RUNNING,
         [terminated(J, 0, exit_code=0, reason="Completed"), running(J, 1)], C.PHASE_SUCCEEDED,
         {C.COND_SUCCEEDED: ("True", R.MAX_EPOCHS_REACHED), C.COND_RUNNING: ("False", R.JOB_FINISHED),
          C.COND_EARLY_STOPPED: ("False", R.MAX_EPOCHS_REACHED)},
         extra={"completionTime": ts(60)}, requeue=FINISH_GRACE_SECONDS),
    Case("succeeded: a rank that exits within the grace is kept for its logs", SUCCEEDED,
         [terminated(J, 0, exit_code=0), terminated(J, 1, exit_code=0, phase="Running")], C.PHASE_SUCCEEDED,
         now=100 + FINISH_GRACE_SECONDS + 1),
    Case("succeeded: Running policy waits out the grace for a rank still running", SUCCEEDED,
         [terminated(J, 0, exit_code=0), running(J, 1)], C.PHASE_SUCCEEDED, now=110,
         requeue=FINISH_GRACE_SECONDS - 10),
    Case("succeeded: a rank still running after the grace is hung and deleted", SUCCEEDED,
         [terminated(J, 0, exit_code=0), running(J, 1)], C.PHASE_SUCCEEDED, now=100 + FINISH_GRACE_SECONDS,
         deletes=("mnist-node-1",)),
    Case("succeeded: a pending rank after the grace is deleted too", SUCCEEDED,
         [terminated(J, 0, exit_code=0), pod(J, 1)], C.PHASE_SUCCEEDED, now=100 + FINISH_GRACE_SECONDS,
         deletes=("mnist-node-1",)),
    Case("failed: Running policy deletes the running ranks at once", FAILED,
         [terminated(J, 0, exit_code=1), running(J, 1)], C.PHASE_FAILED, now=101, deletes=("mnist-node-1",)),
    Case("succeeded with cleanPodPolicy None: a hung rank stays", SUCCEEDED,
         [terminated(J, 0, exit_code=0), running(J, 1)], C.PHASE_SUCCEEDED, now=1000,
         spec={"nodes": 2, "runPolicy": {"cleanPodPolicy": "None"}}),
    Case("success without early stopping configured says so", RUNNING,
         [terminated(J, 0, exit_code=0), terminated(J, 1, exit_code=0)], C.PHASE_SUCCEEDED,
         {C.COND_EARLY_STOPPED: ("False", R.EARLY_STOPPING_DISABLED)},
         spec={"nodes": 2, "training": {"earlyStopping": {"enabled": False}}}),
    Case("success keeps a pod whose trainer exited while its relay drains", RUNNING,
         [terminated(J, 0, exit_code=0, phase="Running"), terminated(J, 1, exit_code=0)], C.PHASE_SUCCEEDED),
    Case("success with cleanPodPolicy All", RUNNING,
         [terminated(J, 0, exit_code=0), terminated(J, 1, exit_code=0)], C.PHASE_SUCCEEDED,
         spec={"nodes": 2, "runPolicy": {"cleanPodPolicy": "All"}}, deletes=("mnist-node-0", "mnist-node-1")),
    Case("early stop from status.training", {**RUNNING, "training": {"earlyStopped": {"epoch": 3, "reason": "no "
                                                                                       "improvement"}}},
         [terminated(J, 0, exit_code=0), terminated(J, 1, exit_code=0)], C.PHASE_SUCCEEDED,
         {C.COND_SUCCEEDED: ("True", R.EARLY_STOPPED), C.COND_EARLY_STOPPED: ("True", R.EARLY_STOPPED)}),
    Case("early stop from the termination message when the relay missed it", RUNNING,
         [terminated(J, 0, exit_code=0, message=SUMMARY_ES), terminated(J, 1, exit_code=0)], C.PHASE_SUCCEEDED,
         {C.COND_SUCCEEDED: ("True", R.EARLY_STOPPED), C.COND_EARLY_STOPPED: ("True", R.EARLY_STOPPED)},
         extra={"result": {"source": "terminationMessage", "bestCheckpoint": "/output/checkpoints/best.ckpt",
                           "bestScore": 0.2, "monitor": "val_loss", "epochs": 5, "earlyStopped": True,
                           "testMetrics": {"test_acc": 0.97}}}),
    Case("result from status.training when the relay delivered the end", {**RUNNING, "training": {
        "finished": True, "epoch": 9, "bestScore": 0.1, "bestCheckpoint": "/output/checkpoints/b.ckpt",
        "monitor": "val_loss", "lastCheckpoint": "/output/checkpoints/last.ckpt", "testMetrics": {"test_acc": 0.9}}},
         [terminated(J, 0, exit_code=0, message=SUMMARY_ES), terminated(J, 1, exit_code=0)], C.PHASE_SUCCEEDED,
         {C.COND_CHECKPOINT_SAVED: ("True", R.CHECKPOINT_SAVED)},
         extra={"result": {"source": "training", "epochs": 10, "bestCheckpoint": "/output/checkpoints/b.ckpt",
                           "bestScore": 0.1, "monitor": "val_loss", "earlyStopped": False,
                           "testMetrics": {"test_acc": 0.9}},
                "resumeFrom": "/output/checkpoints/last.ckpt"}),
    Case("deadline exceeded while pods wait", st(C.PHASE_PENDING, **LAUNCHED), [running(J, 0), unschedulable(J, 1)],
         C.PHASE_FAILED, {C.COND_FAILED: ("True", R.DEADLINE_EXCEEDED)},
         spec={"nodes": 2, "runPolicy": {"activeDeadlineSeconds": 30}}, deletes=("mnist-node-0", "mnist-node-1")),
    Case("deadline not yet: look again when it expires", st(C.PHASE_PENDING, **LAUNCHED), [running(J, 0), pod(J, 1)],
         C.PHASE_PENDING, spec={"nodes": 2, "runPolicy": {"activeDeadlineSeconds": 100}}, requeue=40),
    Case("terminal Failed never moves, even with running pods", FAILED, [running(J, 0), running(J, 1)],
         C.PHASE_FAILED, {C.COND_FAILED: ("True", R.NON_RETRYABLE_EXIT_CODE)}, deletes=("mnist-node-0", "mnist-node-1")),
    Case("terminal Succeeded never moves, even after a later pod failure", SUCCEEDED,
         [terminated(J, 0, exit_code=0), terminated(J, 1, exit_code=137)], C.PHASE_SUCCEEDED,
         {C.COND_SUCCEEDED: ("True", R.MAX_EPOCHS_REACHED)}),
    Case("late early-stop report refines the success reason", {**SUCCEEDED, "training": {"earlyStopped": {
        "epoch": 4, "reason": "patience"}}}, [], C.PHASE_SUCCEEDED, {C.COND_SUCCEEDED: ("True", R.EARLY_STOPPED)}),
    Case("TTL pending", SUCCEEDED, [], C.PHASE_SUCCEEDED, spec={"nodes": 2, "runPolicy": {"ttlSecondsAfterFinished": 60}},
         now=130, requeue=30),
    Case("TTL expired deletes the job", SUCCEEDED, [], C.PHASE_SUCCEEDED,
         spec={"nodes": 2, "runPolicy": {"ttlSecondsAfterFinished": 60}}, now=161, delete_job=True),
    Case("TTL after failure too", FAILED, [], C.PHASE_FAILED, spec={"nodes": 2, "runPolicy": {"ttlSecondsAfterFinished": 0}},
         now=100, delete_job=True),
    Case("invalid spec fails the job", None, [], C.PHASE_FAILED, {C.COND_FAILED: ("True", R.INVALID_SPEC)},
         spec={"nodes": 0}),
    # --- edits: a valid spec is recorded as applied; an invalid edit never fails a job that has one ---
    Case("a new job's valid spec is recorded as the one applied", None, [], C.PHASE_PENDING,
         creates=((0, 1), 0, None), extra={"appliedGeneration": 1, "appliedSpec": APPLIED}),
    Case("an invalid edit of a running job: it runs on, on the spec applied, and says so", RUNNING,
         [running(J, 0), running(J, 1)], C.PHASE_RUNNING, {C.COND_EDIT_APPLIED: ("False", R.INVALID_EDIT),
                                                           C.COND_RUNNING: ("True", R.ALL_PODS_RUNNING)},
         spec={"nodes": 0}, generation=2, warnings=(R.INVALID_EDIT,),
         extra={"observedGeneration": 2, "appliedGeneration": 1, "appliedSpec": APPLIED, "readyNodes": 2}),
    Case("an invalid edit of a job whose gang failed: restarted on the spec applied", {**RUNNING, **{
        "conditions": RUNNING["conditions"] + [cond(C.COND_EDIT_APPLIED, "False", R.INVALID_EDIT)]}},
         [running(J, 0), terminated(J, 1, exit_code=137, reason="OOMKilled")], C.PHASE_RESTARTING,
         {C.COND_EDIT_APPLIED: ("False", R.INVALID_EDIT)}, spec={"nodes": 0}, generation=2, restarts=1, attempt=1,
         deletes=("mnist-node-0", "mnist-node-1"), failure=("mnist-node-1", 1, R.OOM_KILLED), requeue=5,
         extra={"appliedGeneration": 1}),
    Case("a valid edit after a refused one is applied: EditApplied", {**RUNNING, **{
        "conditions": RUNNING["conditions"] + [cond(C.COND_EDIT_APPLIED, "False", R.INVALID_EDIT)]}},
         [running(J, 0), running(J, 1)], C.PHASE_RUNNING, {C.COND_EDIT_APPLIED: ("True", R.EDIT_APPLIED)},
         spec={"nodes": 2, "training": {"maxEpochs": 7}}, generation=3,
         extra={"observedGeneration": 3, "appliedGeneration": 3}),
    # --- edits of a finished job: a higher maxEpochs trains a succeeded one on; any other edit is not applied ---
    Case("a higher maxEpochs trains a succeeded job on: a new attempt, no restart, once the old pods are gone",
         TRAINED, [terminated(J, 0, exit_code=0), terminated(J, 1, exit_code=0)], C.PHASE_PENDING,
         {C.COND_SUCCEEDED: ("False", R.TRAINING_EXTENDED), C.COND_RUNNING: ("False", R.PODS_PENDING)},
         spec=MORE_EPOCHS, generation=2, attempt=1, deletes=("mnist-node-0", "mnist-node-1"), requeue=5, warnings=(),
         extra={"completionTime": None, "startTime": None, "result": None, "appliedGeneration": 2,
                "appliedSpec": job_body(name=J, **MORE_EPOCHS)["spec"]}),
    Case("trained on: the new gang resumes from the last checkpoint, whatever backoffLimit says", {**TRAINED,
         "restarts": 2, "appliedSpec": job_body(name=J, nodes=2, runPolicy={"backoffLimit": 2})["spec"]}, [], C.PHASE_PENDING, {C.COND_SUCCEEDED: ("False", R.TRAINING_EXTENDED)},
         spec={**MORE_EPOCHS, "runPolicy": {"backoffLimit": 2}}, generation=2, attempt=1, restarts=2,
         creates=((0, 1), 1, CKPT), extra={"startTime": ts(60)}),
    Case("an edit of another field is not applied: the job keeps its spec and says so",
         TRAINED, [], C.PHASE_SUCCEEDED, {C.COND_EDIT_APPLIED: ("False", R.JOB_FINISHED),
                                          C.COND_SUCCEEDED: ("True", R.MAX_EPOCHS_REACHED)},
         spec={"nodes": 2, "image": "ltj-trainer:0.2.0"}, generation=2, warnings=(R.EDIT_IGNORED,),
         extra={"observedGeneration": 2, "appliedGeneration": 1, "appliedSpec": APPLIED, "completionTime": ts(100)}),
    Case("the same ignored edit at the next pass: on record already, not posted again", {**TRAINED, "conditions": [
         *TRAINED["conditions"], {**cond(C.COND_EDIT_APPLIED, "False", R.JOB_FINISHED), "observedGeneration": 2}]},
         [], C.PHASE_SUCCEEDED, {C.COND_EDIT_APPLIED: ("False", R.JOB_FINISHED)},
         spec={"nodes": 2, "image": "ltj-trainer:0.2.0"}, generation=2, warnings=(), extra={"appliedGeneration": 1}),
    Case("a higher maxEpochs beside another field is not applied", TRAINED, [], C.PHASE_SUCCEEDED,
         {C.COND_EDIT_APPLIED: ("False", R.JOB_FINISHED)}, spec={**MORE_EPOCHS, "gpusPerNode": 1}, generation=2,
         warnings=(R.EDIT_IGNORED,), extra={"appliedGeneration": 1}),
    Case("a maxEpochs not above the epochs trained is not applied", TRAINED, [], C.PHASE_SUCCEEDED,
         {C.COND_EDIT_APPLIED: ("False", R.JOB_FINISHED)}, spec={"nodes": 2, "training": {"maxEpochs": 4}},
         generation=2, warnings=(R.EDIT_IGNORED,), extra={"appliedGeneration": 1}),
    Case("a maxEpochs not above the one on record is not applied either", {**TRAINED, "result": {"epochs": 6}}, [],
         C.PHASE_SUCCEEDED, {C.COND_EDIT_APPLIED: ("False", R.JOB_FINISHED)},
         spec={"nodes": 2, "training": {"maxEpochs": 8}}, generation=2, warnings=(R.EDIT_IGNORED,),
         extra={"appliedGeneration": 1}),
    Case("an early-stopped job does not train on", {**TRAINED, "result": {"epochs": 4, "earlyStopped": True}}, [],
         C.PHASE_SUCCEEDED, {C.COND_EDIT_APPLIED: ("False", R.JOB_FINISHED)}, spec=MORE_EPOCHS, generation=2,
         warnings=(R.EDIT_IGNORED,), extra={"appliedGeneration": 1}),
    Case("a failed job does not train on", FAILED, [], C.PHASE_FAILED,
         {C.COND_EDIT_APPLIED: ("False", R.JOB_FINISHED), C.COND_FAILED: ("True", R.NON_RETRYABLE_EXIT_CODE)},
         spec=MORE_EPOCHS, generation=2, warnings=(R.EDIT_IGNORED,), extra={"appliedGeneration": 1}),
    Case("an invalid edit of a finished job is not applied either", TRAINED, [], C.PHASE_SUCCEEDED,
         {C.COND_EDIT_APPLIED: ("False", R.JOB_FINISHED)}, spec={"nodes": 0}, generation=2,
         warnings=(R.EDIT_IGNORED,), extra={"appliedGeneration": 1, "appliedSpec": APPLIED}),
    Case("the TTL of a finished job can be edited: applied", TRAINED, [], C.PHASE_SUCCEEDED,
         spec={"nodes": 2, "runPolicy": {"ttlSecondsAfterFinished": 0}}, generation=2, now=100, delete_job=True, warnings=(),
         extra={"appliedGeneration": 2}),
    Case("an ignored edit's TTL does not act: the job keeps the spec on record", TRAINED, [], C.PHASE_SUCCEEDED,
         spec={"nodes": 2, "image": "ltj-trainer:0.2.0", "runPolicy": {"ttlSecondsAfterFinished": 0}},
         generation=2, now=100, warnings=(R.EDIT_IGNORED,), extra={"appliedGeneration": 1}),
    # --- suspension ---
    Case("suspend deletes the pods and keeps the status", {**RUNNING, "resumeFrom": CKPT},
         [running(J, 0), running(J, 1)], C.PHASE_SUSPENDED,
         {C.COND_SUSPENDED: ("True", R.SUSPENDED), C.COND_RUNNING: ("False", R.SUSPENDED)},
         spec={"nodes": 2, "runPolicy": {"suspend": True}}, deletes=("mnist-node-0", "mnist-node-1"), requeue=5,
         extra={"startTime": None, "resumeFrom": CKPT, "launchedAttempt": 0}),
    Case("suspended job stays quiet once its pods are gone", SUSPENDED, [], C.PHASE_SUSPENDED,
         spec={"nodes": 2, "runPolicy": {"suspend": True}}),
    Case("resume starts a new attempt from the last checkpoint", {**SUSPENDED, "resumeFrom": CKPT}, [],
         C.PHASE_PENDING, {C.COND_SUSPENDED: ("False", R.RESUMED)}, creates=((0, 1), 1, CKPT), attempt=1,
         extra={"startTime": ts(60), "restarts": 0}),
    Case("resume of a job that never ran keeps attempt 0",
         st(C.PHASE_SUSPENDED, cond(C.COND_SUSPENDED, "True", R.SUSPENDED)), [], C.PHASE_PENDING,
         {C.COND_SUSPENDED: ("False", R.RESUMED)}, creates=((0, 1), 0, None)),
    Case("resume right after suspend: old pods are stale, not failures; the new gang waits for them",
         st(C.PHASE_SUSPENDED, cond(C.COND_SUSPENDED, "True", R.SUSPENDED)), [pod(J, 0, deleting=True)],
         C.PHASE_PENDING, attempt=1, requeue=5, extra={"restarts": 0}),
    # --- warnings derived from the observation ---
    Case("multi-node job on a ReadWriteOnce claim", st(C.PHASE_PENDING, **LAUNCHED), [running(J, 0), running(J, 1)],
         C.PHASE_RUNNING, {C.COND_VOLUME_NOT_SHARED: ("True", R.ACCESS_MODE_NOT_RWX)}, modes=("ReadWriteOnce",)),
    Case("shared claim: no warning", st(C.PHASE_PENDING, **LAUNCHED), [running(J, 0), running(J, 1)],
         C.PHASE_RUNNING, modes=("ReadWriteMany", "ReadWriteOnce")),
    Case("warning cleared once the claim is shared",
         st(C.PHASE_RUNNING, cond(C.COND_VOLUME_NOT_SHARED, "True", R.ACCESS_MODE_NOT_RWX), **LAUNCHED),
         [running(J, 0), running(J, 1)], C.PHASE_RUNNING, {C.COND_VOLUME_NOT_SHARED: ("False", R.VOLUME_SHARED)},
         modes=("ReadWriteMany",)),
    Case("checkpoint from the relay becomes the resume point", {**RUNNING, "training": {
        "lastCheckpoint": CKPT, "epoch": 2, "step": 90}}, [running(J, 0), running(J, 1)], C.PHASE_RUNNING,
         {C.COND_CHECKPOINT_SAVED: ("True", R.CHECKPOINT_SAVED)}, extra={"resumeFrom": CKPT}),
    Case("stalled: no event for longer than the minimum", {**RUNNING, "training": {"lastEventTime": ts(10)}},
         [running(J, 0), running(J, 1)], C.PHASE_RUNNING, {C.COND_STALLED: ("True", R.NO_RECENT_EVENTS)}, now=611),
    Case("a fresh relay write does not hide a silent trainer",
         {**RUNNING, "training": {"lastEventTime": ts(10), "updateTime": ts(600)}},
         [running(J, 0), running(J, 1)], C.PHASE_RUNNING, {C.COND_STALLED: ("True", R.NO_RECENT_EVENTS)}, now=611),
    Case("not stalled: slow events, threshold is factor x interval",
         {**RUNNING, "training": {"lastEventTime": ts(10), "eventIntervalSeconds": 200}},
         [running(J, 0), running(J, 1)], C.PHASE_RUNNING, now=611, requeue=400),
    # --- what the reconciler's creates came to, and when the status is recorded ---
    Case("a refused create is recorded with the API server's message", None, [], C.PHASE_PENDING,
         {C.COND_CREATED: ("False", R.POD_CREATION_FAILED)}, creates=((0, 1), 0, None),
         outcomes=Outcomes(refusal="403 Forbidden: pods is forbidden: exceeded quota")),
    Case("the same refusal at the next retry: on record already, not posted again",
         st(C.PHASE_PENDING, cond(C.COND_CREATED, "False", R.POD_CREATION_FAILED, message=REFUSED), startTime=ts(0)),
         [], C.PHASE_PENDING, {C.COND_CREATED: ("False", R.POD_CREATION_FAILED)}, creates=((0, 1), 0, None),
         outcomes=Outcomes(refusal=QUOTA), warnings=()),
    Case("a child's name taken by an object the job does not control: AlreadyExists, posted once",
         None, [], C.PHASE_PENDING, {C.COND_CREATED: ("False", R.ALREADY_EXISTS)}, creates=((0, 1), 0, None),
         outcomes=Outcomes(refusal=IN_THE_WAY, not_owned=True), warnings=(R.ALREADY_EXISTS,)),
    Case("the object still in the way at the next retry: on record already, not posted again",
         st(C.PHASE_PENDING, cond(C.COND_CREATED, "False", R.ALREADY_EXISTS, message=TAKEN), startTime=ts(0)),
         [], C.PHASE_PENDING, {C.COND_CREATED: ("False", R.ALREADY_EXISTS)}, creates=((0, 1), 0, None),
         outcomes=Outcomes(refusal=IN_THE_WAY, not_owned=True), warnings=()),
    Case("the gang made once the object in the way is gone: Created",
         st(C.PHASE_PENDING, cond(C.COND_CREATED, "False", R.ALREADY_EXISTS, message=TAKEN), startTime=ts(0)),
         [pod(J, 0), pod(J, 1)], C.PHASE_PENDING, {C.COND_CREATED: ("True", R.PODS_CREATED)}),
    Case("a first gang just created is recorded once its pods are seen", None, [], C.PHASE_PENDING,
         creates=((0, 1), 0, None), outcomes=Outcomes(gang_created=True), held=True),
    Case("a first record that only says Pending waits within the hold of the gang's creation", None,
         [pod(J, 0), pod(J, 1)], C.PHASE_PENDING, {C.COND_CREATED: ("True", R.PODS_CREATED)},
         outcomes=Outcomes(since_write=0.25), held=True, requeue=0.75),
    Case("a first record saying Running is written at once", None, [running(J, 0), running(J, 1)],
         C.PHASE_RUNNING, outcomes=Outcomes(since_write=0.25)),
    Case("progress right after our last write waits for the rest of the gang", PENDING, [running(J, 0), pod(J, 1)],
         C.PHASE_PENDING, {C.COND_RUNNING: ("False", R.PODS_PENDING)}, outcomes=Outcomes(since_write=0.25),
         held=True, requeue=0.75, extra={"readyNodes": 1}),
    Case("progress once the hold is over is written", PENDING, [running(J, 0), pod(J, 1)], C.PHASE_PENDING,
         outcomes=Outcomes(since_write=1.5), extra={"readyNodes": 1}),
    Case("news within the hold is written at once", PENDING, [running(J, 0), unschedulable(J, 1)], C.PHASE_PENDING,
         {C.COND_UNSCHEDULABLE: ("True", R.PODS_UNSCHEDULABLE)}, outcomes=Outcomes(since_write=0.25)),
    Case("the whole gang running within the hold is written at once", PENDING, [running(J, 0), running(J, 1)],
         C.PHASE_RUNNING, outcomes=Outcomes(since_write=0.25)),
    Case("a spec warning is posted with the first record of its generation", None, [running(J, 0), running(J, 1)],
         C.PHASE_RUNNING, spec={"nodes": 2, "podTemplate": {"env": [{"name": "RANK", "value": "3"}]}},
         warnings=(R.SPEC_WARNING,)),
    Case("a spec warning waits for the record of its generation", None, [], C.PHASE_PENDING,
         creates=((0, 1), 0, None), spec={"nodes": 2, "podTemplate": {"env": [{"name": "RANK", "value": "3"}]}},
         outcomes=Outcomes(gang_created=True), held=True, warnings=()),
    Case("a spec warning is not posted again once its generation is recorded", RUNNING,
         [running(J, 0), running(J, 1)], C.PHASE_RUNNING,
         spec={"nodes": 2, "podTemplate": {"env": [{"name": "RANK", "value": "3"}]}}, warnings=()),
    Case("stall cleared when events flow again",
         {**RUNNING, "conditions": RUNNING["conditions"] + [cond(C.COND_STALLED, "True", R.NO_RECENT_EVENTS)],
          "training": {"lastEventTime": ts(700)}},
         [running(J, 0), running(J, 1)], C.PHASE_RUNNING, {C.COND_STALLED: ("False", R.EVENTS_FLOWING)}, now=710),
    # --- a queue label (Kueue) ---
    Case("queued on a cluster without Kueue: held without pods, says why", None, [], C.PHASE_PENDING,
         {C.COND_QUOTA_RESERVED: ("False", R.KUEUE_NOT_INSTALLED), C.COND_RUNNING: ("False", R.PODS_PENDING)},
         queue="gpus", kueue=False, requeue=60, warnings=(R.KUEUE_NOT_INSTALLED,),
         extra={"startTime": None, "launchedAttempt": None}),
    Case("still held: the warning is not posted again",
         st(C.PHASE_PENDING, cond(C.COND_QUOTA_RESERVED, "False", R.KUEUE_NOT_INSTALLED,
                                  message=f"the job is labelled {C.LABEL_KUEUE_QUEUE}=gpus, but this cluster does not "
                                          f"serve {C.KUEUE_API} (Kueue is not installed): no pods are created until "
                                          "Kueue is installed or the label is removed")),
         [], C.PHASE_PENDING, {C.COND_QUOTA_RESERVED: ("False", R.KUEUE_NOT_INSTALLED)},
         queue="gpus", kueue=False, warnings=()),
    Case("a held job's running pods keep running", RUNNING, [running(J, 0), running(J, 1)], C.PHASE_RUNNING,
         {C.COND_QUOTA_RESERVED: ("False", R.KUEUE_NOT_INSTALLED), C.COND_RUNNING: ("True", R.ALL_PODS_RUNNING)},
         queue="gpus", kueue=False),
    Case("a held job's restart creates no new gang", RESTARTING, [], C.PHASE_RESTARTING,
         {C.COND_QUOTA_RESERVED: ("False", R.KUEUE_NOT_INSTALLED)}, restarts=1, attempt=1, queue="gpus",
         kueue=False),
    # --- a queue label where Kueue is installed: its Workload decides ---
    Case("queued: a Workload is created and no pod until Kueue admits it", None, [], C.PHASE_PENDING,
         {C.COND_QUOTA_RESERVED: ("False", R.WORKLOAD_CREATED)}, queue="gpus", kueue=True,
         wl=QueueObserved(priority=Priority()), workload_actions=("create",), warnings=(),
         extra={"startTime": None, "queue": {"name": "gpus", "workload": WL, "admitted": False,
                                             "reason": R.WORKLOAD_CREATED, "message": CREATED_MESSAGE}}),
    Case("Kueue's pending reason and message are the job's, with one event", WAITING, [], C.PHASE_PENDING,
         {C.COND_QUOTA_RESERVED: ("False", "Pending")}, queue="gpus", kueue=True,
         wl=QueueObserved(workload=PENDING_WL), warnings=(), workload_actions=("ready False",),
         extra={"queue": {"name": "gpus", "workload": WL, "admitted": False, "reason": "Pending",
                          "message": SHORT}}),
    Case("still pending for the same cause: no event again", PENDING_ON_RECORD, [], C.PHASE_PENDING,
         {C.COND_QUOTA_RESERVED: ("False", "Pending")}, queue="gpus", kueue=True,
         wl=QueueObserved(workload=PENDING_WL), warnings=(), workload_actions=("ready False",)),
    Case("an inadmissible Workload (no such LocalQueue) is a warning", WAITING, [], C.PHASE_PENDING,
         {C.COND_QUOTA_RESERVED: ("False", "Inadmissible")}, queue="gpus", kueue=True,
         wl=QueueObserved(workload=observe_workload(workload(J, reserved=("False", "Inadmissible",
                                                                        "LocalQueue gpus doesn't exist")))),
         warnings=("Inadmissible",), workload_actions=("ready False",)),
    Case("a Workload Kueue has not looked at yet: waiting, no event", WAITING, [], C.PHASE_PENDING,
         {C.COND_QUOTA_RESERVED: ("False", R.WORKLOAD_CREATED)}, queue="gpus", kueue=True,
         wl=QueueObserved(workload=observe_workload(workload(J))), warnings=(), workload_actions=("ready False",)),
    Case("quota reserved, admission checks pending: still no pods", WAITING, [], C.PHASE_PENDING,
         {C.COND_QUOTA_RESERVED: ("False", "AdmissionChecksPending")}, queue="gpus", kueue=True,
         wl=QueueObserved(workload=observe_workload(workload(
             J, reserved=("True", "QuotaReserved", "Quota reserved in ClusterQueue cq"), cluster_queue="cq",
             admitted=("False", "AdmissionChecksPending", "waiting for check prov")))), warnings=(),
         workload_actions=("ready False",)),
    Case("admitted: the whole gang is created with the admission's placement", WAITING, [], C.PHASE_PENDING,
         {C.COND_QUOTA_RESERVED: ("True", R.ADMITTED), C.COND_CREATED: ("False", R.CREATING_PODS)},
         creates=((0, 1), 0, None), queue="gpus", kueue=True,
         wl=QueueObserved(workload=ADMITTED_WL, placement=PLACEMENT), warnings=(), workload_actions=("ready False",),
         extra={"startTime": ts(60), "queue": QUEUE_ADMITTED}),
    Case("a gang restart under the same admission reuses the recorded placement",
         {**RESTARTING, "queue": QUEUE_ADMITTED}, [], C.PHASE_RESTARTING, {C.COND_QUOTA_RESERVED: ("True", R.ADMITTED)},
         creates=((0, 1), 1, CKPT), restarts=1, attempt=1, queue="gpus", kueue=True,
         wl=QueueObserved(workload=ADMITTED_WL), workload_actions=("ready False",), extra={"queue": QUEUE_ADMITTED}),
    Case("admitted and running: nothing to do", {**RUNNING, "queue": QUEUE_ADMITTED}, [running(J, 0), running(J, 1)],
         C.PHASE_RUNNING, {C.COND_QUOTA_RESERVED: ("True", R.ADMITTED)}, queue="gpus", kueue=True,
         wl=QueueObserved(workload=STARTED_WL), warnings=()),
    Case("the whole admitted gang runs: its Workload gets PodsReady=True", {**PENDING, "queue": QUEUE_ADMITTED},
         [running(J, 0), running(J, 1)], C.PHASE_RUNNING, {C.COND_RUNNING: ("True", R.ALL_PODS_RUNNING)},
         queue="gpus", kueue=True, wl=QueueObserved(workload=ADMITTED_WL), workload_actions=("ready True",)),
    Case("half the admitted gang runs: PodsReady stays as it is (False)", {**PENDING, "queue": QUEUE_ADMITTED},
         [running(J, 0), pod(J, 1)], C.PHASE_PENDING, queue="gpus", kueue=True,
         wl=QueueObserved(workload=observe_workload(workload(
             J, reserved=("True", "QuotaReserved", "Quota reserved in ClusterQueue cq"), cluster_queue="cq",
             admitted=("True", "Admitted", "The workload is admitted"), pods_ready=("False", *WAIT_FOR_START))))),
    Case("a rank of a ready gang fails: the restart turns PodsReady False (waiting for recovery)",
         {**RUNNING, "queue": QUEUE_ADMITTED}, [running(J, 0), terminated(J, 1, exit_code=137, reason="OOMKilled")],
         C.PHASE_RESTARTING, deletes=(f"{J}-node-0", f"{J}-node-1"), restarts=1, attempt=1,
         failure=(f"{J}-node-1", 1, R.OOM_KILLED),
         queue="gpus", kueue=True, wl=QueueObserved(workload=STARTED_WL), workload_actions=("ready False",)),
    Case("a priority class that does not exist: no Workload, a warning naming the label", None, [],
         C.PHASE_PENDING, {C.COND_QUOTA_RESERVED: ("False", R.PRIORITY_CLASS_NOT_FOUND)}, queue="gpus", kueue=True,
         wl=QueueObserved(problem=(R.PRIORITY_CLASS_NOT_FOUND, f"label {C.LABEL_KUEUE_PRIORITY_CLASS}: "
                                   "WorkloadPriorityClass high does not exist")),
         warnings=(R.PRIORITY_CLASS_NOT_FOUND,)),
    # --- Kueue evicts the job's Workload: stop gracefully, give the quota back, resume when admitted again ---
    Case("Kueue evicts a running job: its pods are deleted with their grace period, no failure, no restart",
         {**RUNNING, "queue": QUEUE_ADMITTED, "resumeFrom": CKPT}, [running(J, 0), running(J, 1)], C.PHASE_SUSPENDED,
         {C.COND_SUSPENDED: ("True", R.WORKLOAD_EVICTED), C.COND_RUNNING: ("False", R.WORKLOAD_EVICTED),
          C.COND_QUOTA_RESERVED: ("False", R.WORKLOAD_EVICTED)}, deletes=(f"{J}-node-0", f"{J}-node-1"), requeue=5,
         queue="gpus", kueue=True, wl=QueueObserved(workload=EVICTED_WL), workload_actions=("ready False",), warnings=(),
         extra={"evictions": 1, "lastEviction": LAST_EVICTION, "startTime": None, "failure": None,
                "launchedAttempt": 0, "resumeFrom": CKPT}),
    Case("an evicted restarting gang stops too, its restart count kept", {**RESTARTING, "queue": QUEUE_ADMITTED},
         [pod(J, 0, 1)], C.PHASE_SUSPENDED, {C.COND_RESTARTING: ("False", R.WORKLOAD_EVICTED)}, restarts=1,
         attempt=1, deletes=(f"{J}-node-0",), queue="gpus", kueue=True, wl=QueueObserved(workload=EVICTED_WL), workload_actions=("ready False",),
         extra={"evictions": 1, "lastEviction": {**LAST_EVICTION, "attempt": 1}}),
    Case("an evicted job's ranks exiting on SIGTERM are no failure, the eviction counted once",
         EVICTING, [merge(terminated(J, 0, exit_code=143), {"metadata": {"deletionTimestamp": ts(50)}}),
                    pod(J, 1, deleting=True)], C.PHASE_SUSPENDED, {C.COND_SUSPENDED: ("True", R.WORKLOAD_EVICTED)},
         requeue=5, queue="gpus", kueue=True, wl=QueueObserved(workload=EVICTED_WL), workload_actions=("ready False",), warnings=(),
         extra={"evictions": 1, "failure": None}),
    Case("the evicted job's pods are gone: one write clears the Workload's admission", EVICTING, [],
         C.PHASE_SUSPENDED, {C.COND_QUOTA_RESERVED: ("False", R.WORKLOAD_EVICTED)}, queue="gpus", kueue=True,
         wl=QueueObserved(workload=EVICTED_WL), workload_actions=("clear",), extra={"evictions": 1}),
    Case("the admission cleared: still Suspended, queued again with Kueue's reason", EVICTING, [], C.PHASE_SUSPENDED,
         {C.COND_SUSPENDED: ("True", R.WORKLOAD_EVICTED), C.COND_QUOTA_RESERVED: ("False", "Pending")}, queue="gpus",
         kueue=True, wl=QueueObserved(workload=REQUEUED_WL), workload_actions=("ready False",), warnings=(),
         extra={"evictions": 1, "queue": {"name": "gpus", "workload": WL, "admitted": False, "reason": "Pending",
                                          "message": PREEMPTED}}),
    Case("admitted again: a new attempt resumes from the last checkpoint, no restart counted", REQUEUED, [],
         C.PHASE_PENDING, {C.COND_SUSPENDED: ("False", R.RESUMED), C.COND_QUOTA_RESERVED: ("True", R.ADMITTED)},
         creates=((0, 1), 1, CKPT), attempt=1, queue="gpus", kueue=True,
         wl=QueueObserved(workload=ADMITTED_WL, placement=PLACEMENT), workload_actions=("ready False",), warnings=(),
         extra={"evictions": 1, "lastEviction": LAST_EVICTION, "queue": QUEUE_ADMITTED}),
    Case("evicted before its gang ever ran: admitted again, it starts afresh as attempt 0",
         {**REQUEUED, "launchedAttempt": None, "resumeFrom": None}, [], C.PHASE_PENDING,
         {C.COND_SUSPENDED: ("False", R.RESUMED)}, creates=((0, 1), 0, None), queue="gpus", kueue=True,
         wl=QueueObserved(workload=ADMITTED_WL, placement=PLACEMENT), workload_actions=("ready False",)),
    Case("evicted again after it resumed: counted again", {**RUNNING, "attempt": 1, "evictions": 1,
                                                          "lastEviction": LAST_EVICTION, "queue": QUEUE_ADMITTED},
         [running(J, 0, 1), running(J, 1, 1)], C.PHASE_SUSPENDED, attempt=1,
         deletes=(f"{J}-node-0", f"{J}-node-1"), queue="gpus", kueue=True,
         wl=QueueObserved(workload=evicted_wl(since=100)), workload_actions=("ready False",),
         extra={"evictions": 2, "lastEviction": {**LAST_EVICTION, "time": ts(100), "attempt": 1}}),
    Case("evicted while rank 0 finished training: the job succeeds, its Workload to be marked Finished",
         {**RUNNING, "queue": QUEUE_ADMITTED}, [terminated(J, 0, exit_code=0, message=SUMMARY_ES), running(J, 1)],
         C.PHASE_SUCCEEDED, {C.COND_SUCCEEDED: ("True", R.EARLY_STOPPED)}, queue="gpus", kueue=True,
         wl=QueueObserved(workload=EVICTED_WL), requeue=FINISH_GRACE_SECONDS, extra={"evictions": None}),
    Case("suspended by its user and evicted by Kueue: the quota still goes back", SUSPENDED, [], C.PHASE_SUSPENDED,
         {C.COND_SUSPENDED: ("True", R.WORKLOAD_EVICTED)}, spec={"nodes": 2, "runPolicy": {"suspend": True}},
         queue="gpus", kueue=True, wl=QueueObserved(workload=EVICTED_WL), workload_actions=("clear",)),
    Case("a finished job marks its Workload Finished once none of its pods runs",
         {**SUCCEEDED, "queue": QUEUE_ADMITTED}, [terminated(J, 0, exit_code=0), terminated(J, 1, exit_code=0)],
         C.PHASE_SUCCEEDED, queue="gpus", kueue=True, wl=QueueObserved(workload=ADMITTED_WL),
         workload_actions=(f"finish {C.PHASE_SUCCEEDED}",), warnings=()),
    Case("a failed job's Workload is marked Finished with reason Failed", {**FAILED, "queue": QUEUE_ADMITTED}, [],
         C.PHASE_FAILED, queue="gpus", kueue=True, wl=QueueObserved(workload=ADMITTED_WL),
         workload_actions=(f"finish {C.PHASE_FAILED}",)),
    Case("a finished job's rank still running holds the quota", {**SUCCEEDED, "queue": QUEUE_ADMITTED},
         [terminated(J, 0, exit_code=0), running(J, 1)], C.PHASE_SUCCEEDED, queue="gpus", kueue=True,
         wl=QueueObserved(workload=ADMITTED_WL), now=110, requeue=FINISH_GRACE_SECONDS - 10),
    Case("a finished job whose Workload was deleted records it as finished (nothing holds quota)",
         {**SUCCEEDED, "queue": QUEUE_ADMITTED}, [], C.PHASE_SUCCEEDED, queue="gpus", kueue=True, wl=QueueObserved(),
         extra={"queue": {**QUEUE_ADMITTED, "admitted": False, "finished": True}}),
    Case("the Workload is finished: recorded, with one event", {**SUCCEEDED, "queue": QUEUE_ADMITTED}, [],
         C.PHASE_SUCCEEDED, {C.COND_QUOTA_RESERVED: ("False", R.WORKLOAD_FINISHED)}, queue="gpus", kueue=True,
         wl=QueueObserved(workload=FINISHED_WL),
         extra={"queue": {**QUEUE_ADMITTED, "admitted": False, "finished": True, "reason": R.WORKLOAD_FINISHED,
                          "message": f"Workload {WL} is finished: Kueue released its quota"}}),
]


def run_case(case: Case) -> Decision:
    body = job_body(name=J, generation=case.generation, **case.spec)
    if case.queue is not None:
        body["metadata"]["labels"] = {C.LABEL_KUEUE_QUEUE: case.queue}
    try:
        job: Job | None = parse_job(body)
        error = None
    except ValueError as exc:
        job, error = applied_job({**body, "status": case.status or {}}), str(exc)
    observed = Observed(pods=tuple(observe_pod(p) for p in case.pods), claim_access_modes=case.modes,
                        kueue_installed=case.kueue, queue=case.wl)
    return decide(job, case.status, observed, at(case.now), generation=case.generation, spec_error=error,
                  spec=body["spec"], stall=StallPolicy(factor=5, min_seconds=600), outcomes=case.outcomes,
                  hold_seconds=1.0)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_transition_table(case: Case) -> None:
    d = run_case(case)
    assert d.phase == case.phase
    assert d.held == case.held
    assert d.record(case.status) == ({} if case.held else d.status_patch(case.status))
    if case.outcomes.refusal is not None:
        assert d.condition(C.COND_CREATED)["message"].endswith(case.outcomes.refusal)
        if case.warnings is None:
            assert any(e.type == "Warning" and e.reason == R.POD_CREATION_FAILED for e in d.events)
    for type_, (status, reason) in case.conditions.items():
        got = d.condition(type_)
        assert got is not None, f"no {type_} condition in {d.status['conditions']}"
        assert (got["status"], got["reason"]) == (status, reason), got
        assert got["message"]
    creates = [a for a in d.actions if isinstance(a, CreatePods)]
    if case.creates is None:
        assert not creates
    else:
        assert [(a.ranks, a.attempt, a.resume_from) for a in creates] == [case.creates]
    deleted = sorted(name for a in d.actions if isinstance(a, DeletePods) for name, _ in a.pods)
    assert tuple(deleted) == tuple(sorted(case.deletes))
    assert any(isinstance(a, DeleteJob) for a in d.actions) == case.delete_job
    assert tuple("create" if isinstance(a, CreateWorkload) else "clear" if isinstance(a, ClearAdmission)
                 else f"ready {a.ready}" if isinstance(a, SetPodsReady) else f"finish {a.reason}" for a in d.actions
                 if isinstance(a, (CreateWorkload, FinishWorkload, ClearAdmission, SetPodsReady))
                 ) == case.workload_actions
    assert d.status["restarts"] == case.restarts
    assert d.status["attempt"] == case.attempt
    if case.failure is not None:
        failure = d.status["failure"]
        assert (failure["pod"], failure["rank"], failure["reason"]) == case.failure
        assert failure["message"].startswith(f"pod {case.failure[0]} (rank {case.failure[1]})")
    if case.requeue is not None:
        assert d.requeue_after == pytest.approx(case.requeue, abs=0.01 if case.held else 1.01)
    for key, value in case.extra.items():
        assert d.status.get(key) == value, key
    if case.warnings is not None:
        assert tuple(e.reason for e in d.events if e.type == "Warning") == case.warnings
    assert "training" not in d.status  # the relay's part is never written by the operator
    # Condition invariants: keyed by type, well-formed.
    types = [c["type"] for c in d.status["conditions"]]
    assert len(types) == len(set(types))
    for c in d.status["conditions"]:
        assert c["status"] in ("True", "False") and c["reason"] and c["lastTransitionTime"]
        assert parse_time(c["lastTransitionTime"]) is not None and c["observedGeneration"] in (1, case.generation)


def test_a_queued_job_says_each_cause_once_and_starts_only_when_admitted() -> None:
    """Workload created -> Kueue's pending reason -> the same again -> admitted -> admitted again: one event
    per cause (the creation's own event comes from the reconciler), pods only at admission."""
    steps = [QueueObserved(priority=Priority()), QueueObserved(workload=PENDING_WL),
             QueueObserved(workload=PENDING_WL), QueueObserved(workload=ADMITTED_WL, placement=PLACEMENT),
             QueueObserved(workload=ADMITTED_WL)]
    status: dict[str, Any] | None = None
    seen = []
    for observed in steps:
        d = run_case(Case("step", status, [], C.PHASE_PENDING, queue="gpus", kueue=True, wl=observed))
        seen.append(([(e.type, e.reason) for e in d.events if e.reason != R.CREATING_PODS],
                     [a.ranks for a in d.actions if isinstance(a, CreatePods)]))
        status = {**(status or {}), **d.record(status)}
    assert seen == [([], []), ([("Normal", "Pending")], []), ([], []),
                    ([("Normal", R.ADMITTED)], [(0, 1)]), ([], [(0, 1)])]
    assert status["queue"] == QUEUE_ADMITTED


def test_the_gang_is_created_with_the_admissions_placement() -> None:
    (create,) = [a for a in run_case(case_named("admitted: the whole gang is created with the admission's placement"))
                 .actions if isinstance(a, CreatePods)]
    assert create.placement == PLACEMENT
    assert [(p.name, dict(p.node_selector)) for p in PLACEMENT] == [("master", {"pool": "a100"}),
                                                                   ("worker", {"pool": "a100"})]


def test_the_holds_condition_goes_once_the_label_does() -> None:
    held = run_case(Case("held", None, [], C.PHASE_PENDING, queue="gpus", kueue=False))
    assert held.condition(C.COND_QUOTA_RESERVED) is not None and not held.actions
    released = run_case(Case("label removed", dict(held.status), [], C.PHASE_PENDING))
    assert released.condition(C.COND_QUOTA_RESERVED) is None
    assert [a.ranks for a in released.actions if isinstance(a, CreatePods)] == [(0, 1)]


def test_every_terminal_path_is_covered() -> None:
    reasons = {(c.phase, c.conditions.get(C.COND_FAILED, c.conditions.get(C.COND_SUCCEEDED, ("", "")))[1])
               for c in CASES if c.phase in C.TERMINAL_PHASES}
    for expected in [(C.PHASE_SUCCEEDED, R.MAX_EPOCHS_REACHED), (C.PHASE_SUCCEEDED, R.EARLY_STOPPED),
                     (C.PHASE_FAILED, R.NON_RETRYABLE_EXIT_CODE), (C.PHASE_FAILED, R.INVALID_CONFIG),
                     (C.PHASE_FAILED, R.BACKOFF_LIMIT_EXCEEDED), (C.PHASE_FAILED, R.DEADLINE_EXCEEDED),
                     (C.PHASE_FAILED, R.INVALID_SPEC)]:
        assert expected in reasons


def test_unschedulable_message_is_the_schedulers() -> None:
    d = run_case(CASES[[c.id for c in CASES].index("unschedulable pod surfaces the scheduler's message")])
    message = d.condition(C.COND_UNSCHEDULABLE)["message"]
    assert message == "mnist-node-1: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    assert any(e.type == "Warning" and e.reason == R.PODS_UNSCHEDULABLE for e in d.events)


def test_a_claim_binding_is_no_cause_for_unschedulable_but_shows_in_the_running_message() -> None:
    d = run_case(CASES[[c.id for c in CASES].index("a pod waiting for its claim to bind is pending, not "
                                                   "unschedulable: look again when the wait is over")])
    assert d.condition(C.COND_UNSCHEDULABLE) is None
    assert "unbound immediate PersistentVolumeClaims" in d.condition(C.COND_RUNNING)["message"]


def test_failure_condition_message_names_pod_rank_and_exit_code() -> None:
    d = run_case(CASES[[c.id for c in CASES].index("exit 1 fails the job; cleanPodPolicy Running deletes the "
                                                   "running rank")])
    message = d.condition(C.COND_FAILED)["message"]
    assert message == "pod mnist-node-1 (rank 1): trainer exited with code 1: ValueError: bad"
    assert d.status["failure"] == {"pod": "mnist-node-1", "rank": 1, "reason": R.NON_RETRYABLE_EXIT_CODE,
                                   "message": message, "exitCode": 1, "detail": "ValueError: bad"}
    assert any(e.type == "Warning" and e.reason == R.NON_RETRYABLE_EXIT_CODE for e in d.events)


def test_last_transition_time_changes_only_with_the_status() -> None:
    job = make_job(name=J, nodes=2)
    pods = (observe_pod(running(J, 0)), observe_pod(running(J, 1)))
    first = decide(job, st(C.PHASE_PENDING, **LAUNCHED), Observed(pods=pods), at(10))
    running_since = first.condition(C.COND_RUNNING)["lastTransitionTime"]
    assert running_since == ts(10)
    later = decide(job, dict(first.status), Observed(pods=pods), at(500))
    assert later.condition(C.COND_RUNNING)["lastTransitionTime"] == running_since
    assert later.status_patch(first.status) == {}
    # A status change moves it; a reason change with the same status does not.
    failed = decide(job, dict(later.status), Observed(pods=(pods[0], observe_pod(terminated(J, 1, exit_code=1)))),
                    at(600))
    assert failed.condition(C.COND_RUNNING)["lastTransitionTime"] == ts(600)


def test_repeating_a_decision_changes_nothing() -> None:
    job = make_job(name=J, nodes=2)
    observations = [
        (),
        (observe_pod(pod(J, 0)), observe_pod(pod(J, 1))),
        (observe_pod(running(J, 0)), observe_pod(unschedulable(J, 1))),
        (observe_pod(running(J, 0)), observe_pod(running(J, 1))),
    ]
    status: dict[str, Any] | None = None
    for i, pods in enumerate(observations):
        d = decide(job, status, Observed(pods=pods), at(10 * i))
        again = decide(job, dict(d.status), Observed(pods=pods), at(10 * i + 5))
        assert again.status_patch(d.status) == {}, i
        assert again.phase == d.phase
        # Creation is the only action repeated until the pods are seen (409-tolerant), and only then.
        assert all(isinstance(a, CreatePods) for a in again.actions)
        status = dict(d.status)


class World:
    """A tiny pod world for lifecycle tests: applies the decision's actions to a set of pod dicts."""

    def __init__(self, job: Job):
        self.job = job
        self.pods: dict[str, dict[str, Any]] = {}
        self.job_deleted = False

    def apply(self, d: Decision) -> None:
        for action in d.actions:
            if isinstance(action, CreatePods):
                for rank in action.ranks:
                    name = f"{self.job.meta.name}-node-{rank}"
                    assert name not in self.pods, "a pod was created over an existing one"
                    self.pods[name] = pod(self.job.meta.name, rank, action.attempt)
            elif isinstance(action, DeletePods):
                for name, uid in action.pods:
                    if name in self.pods and self.pods[name]["metadata"]["uid"] == uid:
                        del self.pods[name]
            elif isinstance(action, DeleteJob):
                self.job_deleted = True

    def set(self, rank: int, manifest_fn: Any, **kw: Any) -> None:
        name = f"{self.job.meta.name}-node-{rank}"
        attempt = int(self.pods[name]["metadata"]["labels"][C.LABEL_ATTEMPT])
        self.pods[name] = manifest_fn(self.job.meta.name, rank, attempt, **kw)

    def observed(self) -> Observed:
        return Observed(pods=tuple(observe_pod(p) for p in self.pods.values()))


PHASE_ORDER = {C.PHASE_PENDING: 0, C.PHASE_RUNNING: 1, C.PHASE_RESTARTING: 1, C.PHASE_SUSPENDED: 1,
               C.PHASE_SUCCEEDED: 2, C.PHASE_FAILED: 2}


def test_lifecycle_with_a_restart_and_early_stop() -> None:
    job = parse_job(job_body(name=J, nodes=2, runPolicy={"ttlSecondsAfterFinished": 30}))
    world = World(job)
    status: dict[str, Any] | None = None
    phases: list[str] = []
    lines: list[str | None] = []  # what the operator logs at INFO for each decision's record
    clock = itertools.count(0, 5)

    def step(training: dict[str, Any] | None = None) -> Decision:
        nonlocal status
        current = dict(status or {})
        if training is not None:
            current["training"] = training  # what the relay wrote meanwhile
        d = decide(job, current, world.observed(), at(next(clock)))
        world.apply(d)
        status = {**d.status, **({"training": current["training"]} if "training" in current else {})}
        phases.append(d.phase)
        lines.append(transition(current, d.record(current)))
        return d

    step()
    assert len(world.pods) == 2
    step()
    assert status["launchedAttempt"] == 0
    world.set(0, running)
    world.set(1, running)
    assert step().phase == C.PHASE_RUNNING
    step({"lastCheckpoint": CKPT, "epoch": 2, "step": 90})
    assert status["resumeFrom"] == CKPT
    world.set(1, terminated, exit_code=137, reason="OOMKilled")
    d = step()
    assert d.phase == C.PHASE_RESTARTING and not world.pods and status["restarts"] == 1
    d = step()
    assert [(a.ranks, a.attempt, a.resume_from) for a in d.actions if isinstance(a, CreatePods)] == [((0, 1), 1, CKPT)]
    world.set(0, running)
    world.set(1, running)
    assert step().phase == C.PHASE_RUNNING
    world.set(0, terminated, exit_code=0, message=SUMMARY_ES)
    world.set(1, terminated, exit_code=0)
    d = step({"lastCheckpoint": CKPT, "earlyStopped": {"epoch": 4, "reason": "no improvement"}})
    assert d.phase == C.PHASE_SUCCEEDED and d.condition(C.COND_SUCCEEDED)["reason"] == R.EARLY_STOPPED
    for _ in range(10):
        step()
        if world.job_deleted:
            break
    assert world.job_deleted
    # Never backwards: once terminal, always terminal; Pending only before the first run.
    ranks = [PHASE_ORDER[p] for p in phases]
    first_terminal = ranks.index(2)
    assert all(r == 2 for r in ranks[first_terminal:])
    assert C.PHASE_PENDING not in phases[phases.index(C.PHASE_RUNNING):]
    assert status["restarts"] == 1 and status["attempt"] == 1
    # One INFO line per transition, none for the passes in between.
    assert [ln for ln in lines if ln] == [
        "created: gang of attempt 0, phase Pending", "phase Pending -> Running",
        "restart 1 (attempt 1) after pod mnist-node-1 (rank 1): trainer OOMKilled (exit code 137)",
        "phase Restarting -> Running",
        "finished: Succeeded (EarlyStopped: training finished by early stopping at epoch 4: no improvement; "
        "best val_loss 0.2 at /output/checkpoints/best.ckpt)"]


def test_suspend_and_resume_lifecycle_keeps_checkpoint_and_counts_no_restart() -> None:
    body = job_body(name=J, nodes=2)
    job = parse_job(body)
    suspended_job = parse_job(job_body(name=J, nodes=2, runPolicy={"suspend": True}))
    world = World(job)
    status: dict[str, Any] | None = None
    now = itertools.count(0, 5)

    def step(which: Job) -> Decision:
        nonlocal status
        d = decide(which, status, world.observed(), at(next(now)))
        world.apply(d)
        status = {**d.status, "training": {"lastCheckpoint": CKPT}}
        return d

    step(job)
    step(job)
    world.set(0, running)
    world.set(1, running)
    assert step(job).phase == C.PHASE_RUNNING
    d = step(suspended_job)
    assert d.phase == C.PHASE_SUSPENDED and not world.pods and status["startTime"] is None
    assert step(suspended_job).phase == C.PHASE_SUSPENDED
    d = step(job)
    assert d.phase == C.PHASE_PENDING
    assert [(a.attempt, a.resume_from) for a in d.actions if isinstance(a, CreatePods)] == [(1, CKPT)]
    assert status["restarts"] == 0 and status["attempt"] == 1 and status["startTime"] is not None
    world.set(0, running)
    world.set(1, running)
    d = step(job)
    assert d.phase == C.PHASE_RUNNING and d.condition(C.COND_SUSPENDED)["status"] == "False"


def test_an_evicted_job_stops_gives_its_quota_back_and_resumes_from_its_checkpoint() -> None:
    """Running -> Kueue evicts it -> its pods go -> the admission is cleared -> queued again -> admitted again ->
    running: each step said once, the pods deleted once, no restart, the checkpoint carried to the new gang."""
    body = job_body(name=J, nodes=2)
    body["metadata"]["labels"] = {C.LABEL_KUEUE_QUEUE: "gpus"}
    job = parse_job(body)
    world = World(job)
    status: dict[str, Any] | None = None
    clock = itertools.count(0, 5)

    def step(workload: QueueObserved) -> Decision:
        nonlocal status
        d = decide(job, status, Observed(pods=world.observed().pods, kueue_installed=True, queue=workload),
                   at(next(clock)))
        world.apply(d)
        status = {**d.status, "training": {"lastCheckpoint": CKPT}}
        return d

    def said(d: Decision) -> list[str]:
        return [e.reason for e in d.events if e.reason not in (R.CREATING_PODS, R.ALL_PODS_RUNNING)]

    admitted = QueueObserved(workload=ADMITTED_WL, placement=PLACEMENT)
    step(admitted)
    world.set(0, running)
    world.set(1, running)
    assert step(admitted).phase == C.PHASE_RUNNING
    evicting = step(QueueObserved(workload=EVICTED_WL))
    assert evicting.phase == C.PHASE_SUSPENDED and said(evicting) == [R.WORKLOAD_EVICTED]
    assert [len(a.pods) for a in evicting.actions if isinstance(a, DeletePods)] == [2] and not world.pods
    assert not any(isinstance(a, ClearAdmission) for a in evicting.actions)  # not while its pods hold the GPUs
    stopped = step(QueueObserved(workload=EVICTED_WL))
    assert [a.workload for a in stopped.actions if isinstance(a, ClearAdmission)] == [WL] and not said(stopped)
    requeued = step(QueueObserved(workload=REQUEUED_WL))
    assert requeued.phase == C.PHASE_SUSPENDED and said(requeued) == ["Pending"]
    assert requeued.actions == (SetPodsReady(WL, False),)  # admitted no more: WaitForStart
    assert not said(step(QueueObserved(workload=REQUEUED_WL)))
    resumed = step(admitted)
    assert said(resumed) == [R.RESUMED, R.ADMITTED]
    assert [(a.attempt, a.resume_from) for a in resumed.actions if isinstance(a, CreatePods)] == [(1, CKPT)]
    assert resumed.condition(C.COND_SUSPENDED)["message"] == (
        f"the job resumed after eviction 1 by Kueue (Preempted), as attempt 1, continuing from {CKPT}")
    world.set(0, running)
    world.set(1, running)
    d = step(admitted)
    assert d.phase == C.PHASE_RUNNING and (d.status["restarts"], d.status["attempt"], d.status["evictions"]) == (0, 1, 1)
    assert d.status["lastEviction"] == LAST_EVICTION and d.status["failure"] is None


def case_named(name: str) -> Case:
    return CASES[[c.id for c in CASES].index(name)]


def test_an_edit_of_a_finished_job_says_what_happened_and_how_to_train_again() -> None:
    extended = run_case(case_named("a higher maxEpochs trains a succeeded job on: a new attempt, no restart, once "
                                   "the old pods are gone"))
    assert [(e.type, e.reason, e.message) for e in extended.events if e.reason == R.TRAINING_EXTENDED] == [
        ("Normal", R.TRAINING_EXTENDED, f"spec.training.maxEpochs raised from 10 to 15: training on from {CKPT}")]
    assert extended.condition(C.COND_SUCCEEDED)["message"] == extended.events[0].message
    other = run_case(case_named("an edit of another field is not applied: the job keeps its spec and says so"))
    message = other.condition(C.COND_EDIT_APPLIED)["message"]
    assert [e.message for e in other.events if e.reason == R.EDIT_IGNORED] == [message]
    assert message.startswith("the edit of generation 2 is not applied: the job succeeded and a finished job takes "
                              "no edit of spec.image; it keeps its spec of generation 1.")
    assert "change only spec.training.maxEpochs, to more than 10" in message and CKPT in message
    lower = run_case(case_named("a maxEpochs not above the epochs trained is not applied"))
    assert "spec.training.maxEpochs 4 is not above the 10 epoch(s) it trained" in lower.events[0].message
    for name, why in [("an early-stopped job does not train on", "it stopped early"),
                      ("a failed job does not train on", "the job failed and a failed job does not train again"),
                      ("an invalid edit of a finished job is not applied either", "the edit is invalid: spec.nodes")]:
        message = run_case(case_named(name)).condition(C.COND_EDIT_APPLIED)["message"]
        assert why in message, message
        assert "To train again, create a new job" in message or "the edit is invalid" in why


def test_a_succeeded_job_given_more_epochs_trains_on_and_succeeds_again() -> None:
    first, more = job_body(name=J, nodes=2), job_body(name=J, generation=2, nodes=2, training={"maxEpochs": 15})
    world = World(parse_job(first))
    status: dict[str, Any] | None = None
    lines: list[str | None] = []
    clock = itertools.count(0, 5)

    def step(body: dict[str, Any], training: dict[str, Any]) -> Decision:
        nonlocal status
        current = {**(status or {}), "training": training}  # what the relay wrote meanwhile
        d = decide(parse_job(body), current, world.observed(), at(next(clock)),
                   generation=body["metadata"]["generation"], spec=body["spec"])
        world.apply(d)
        status = {**d.status, "training": training}
        lines.append(transition(current, d.record(current)))
        return d

    ran = {"lastCheckpoint": CKPT, "epoch": 9, "finished": True}
    step(first, {})
    for rank in (0, 1):
        world.set(rank, running)
    step(first, {})
    for rank in (0, 1):
        world.set(rank, terminated, exit_code=0)
    assert step(first, ran).phase == C.PHASE_SUCCEEDED and status["result"]["epochs"] == 10
    assert step(first, ran).actions == ()  # finished ranks are kept (cleanPodPolicy Running)

    world.job = parse_job(more)
    d = step(more, ran)
    assert d.phase == C.PHASE_PENDING and status["completionTime"] is None and not world.pods
    d = step(more, ran)
    assert [(a.ranks, a.attempt, a.resume_from) for a in d.actions if isinstance(a, CreatePods)] == [((0, 1), 1, CKPT)]
    assert step(more, ran).actions == ()  # created once
    for rank in (0, 1):
        world.set(rank, running)
    assert step(more, {**ran, "finished": False}).phase == C.PHASE_RUNNING
    for rank in (0, 1):
        world.set(rank, terminated, exit_code=0)
    d = step(more, {**ran, "epoch": 14})
    assert d.phase == C.PHASE_SUCCEEDED and d.condition(C.COND_SUCCEEDED)["status"] == "True"
    assert status["result"]["epochs"] == 15 and status["completionTime"] is not None
    assert (status["restarts"], status["attempt"], status["appliedGeneration"]) == (0, 1, 2)
    assert step(more, {**ran, "epoch": 14}).phase == C.PHASE_SUCCEEDED  # once: the edit is the one applied
    assert [ln for ln in lines if ln] == [
        "created: gang of attempt 0, phase Pending", "phase Pending -> Running",
        "finished: Succeeded (MaxEpochsReached: training finished after maxEpochs (10))",
        "phase Succeeded -> Pending", "phase Pending -> Running",
        "finished: Succeeded (MaxEpochsReached: training finished after maxEpochs (15))"]


@pytest.mark.parametrize("terminal", [SUCCEEDED, FAILED], ids=["succeeded", "failed"])
def test_terminal_phases_are_final_whatever_is_observed(terminal: dict[str, Any]) -> None:
    rng = random.Random(7)
    makers = [
        lambda r, a: running(J, r, a), lambda r, a: pod(J, r, a),
        lambda r, a: terminated(J, r, a, exit_code=rng.choice([0, 1, 2, 137, 143])),
        lambda r, a: unschedulable(J, r, a), lambda r, a: pod(J, r, a, deleting=True, phase="Running"),
    ]
    for spec in ({"nodes": 2}, {"nodes": 2, "runPolicy": {"suspend": True}}, {"nodes": 0}):
        body = job_body(name=J, **spec)
        try:
            job: Job | None = parse_job(body)
            error = None
        except ValueError as exc:
            job, error = None, str(exc)
        for _ in range(40):
            pods = tuple(observe_pod(rng.choice(makers)(r, rng.randint(0, 2))) for r in range(rng.randint(0, 2)))
            d = decide(job, terminal, Observed(pods=pods), at(rng.randint(100, 10_000)), generation=1,
                       spec_error=error)
            assert d.phase == terminal["phase"]
            assert d.status["completionTime"] == terminal["completionTime"]
            assert not any(isinstance(a, CreatePods) for a in d.actions)


def test_time_helpers_round_trip() -> None:
    assert format_time(at(0)) == "2025-03-01T12:00:00Z"
    assert parse_time("2025-03-01T12:00:00Z") == at(0)
    assert parse_time("2025-03-01T12:00:00.123456+00:00") is not None
    assert parse_time("yesterday") is None and parse_time(None) is None
    with pytest.raises(ValueError):
        decide(make_job(), None, Observed(), at(0).replace(tzinfo=None))


def test_refused_pod_creation_stays_visible_until_the_pods_exist() -> None:
    job = make_job(name=J, nodes=2)
    refused = decide(job, None, Observed(), at(1), outcomes=Outcomes(refusal="pods is forbidden: exceeded quota"))
    created = refused.condition(C.COND_CREATED)
    assert (created["status"], created["reason"]) == ("False", R.POD_CREATION_FAILED)
    assert created["message"] == "the API server refused to create the job's objects: pods is forbidden: exceeded quota"
    again = decide(job, dict(refused.status), Observed(), at(30))  # the next pass, before it tries again
    assert again.condition(C.COND_CREATED) == created
    assert [a.ranks for a in again.actions if isinstance(a, CreatePods)] == [(0, 1)]  # still trying
    assert again.status_patch(refused.status) == {}
    done = decide(job, dict(again.status), Observed(pods=(observe_pod(pod(J, 0)), observe_pod(pod(J, 1)))), at(60))
    assert done.condition(C.COND_CREATED)["reason"] == R.PODS_CREATED


def test_progress_only_is_a_waiting_gangs_ready_count_and_pending_message() -> None:
    from ltj_operator.status import progress_only

    job = make_job(name=J, nodes=2)
    pending = dict(decide(job, None, Observed(pods=(observe_pod(pod(J, 0)), observe_pod(pod(J, 1)))), at(0)).status)
    one = decide(job, pending, Observed(pods=(observe_pod(running(J, 0)), observe_pod(pod(J, 1)))), at(1))
    assert set(one.status_patch(pending)) == {"readyNodes", "conditions"}
    assert progress_only(pending, one.status_patch(pending))  # "1 of 2 pod(s) running"
    assert progress_only(pending, {"readyNodes": 1})
    both = decide(job, pending, Observed(pods=(observe_pod(running(J, 0)), observe_pod(running(J, 1)))), at(1))
    assert not progress_only(pending, both.status_patch(pending))  # Running: written at once
    assert not progress_only(pending, {})
    assert not progress_only(pending, {"readyNodes": 1, "restarts": 1})
    assert not progress_only({**pending, "phase": C.PHASE_RUNNING}, {"readyNodes": 1})  # a rank done early
    other = [c if c["type"] != C.COND_CREATED else {**c, "message": "another"} for c in pending["conditions"]]
    assert not progress_only(pending, {"conditions": other})  # any other condition is news


def test_first_record_pending_is_a_new_jobs_first_status_saying_pending() -> None:
    from ltj_operator.status import first_record_pending

    job = make_job(name=J, nodes=2)
    created = Observed(pods=(observe_pod(pod(J, 0)), observe_pod(pod(J, 1))))
    first = decide(job, {}, created, at(0))
    assert first_record_pending({}, first.status)
    # The API server shows a new job with the CRD's default status: its first record then says Pending too,
    # though its patch leaves the phase out.
    default = {"phase": C.PHASE_PENDING}
    assert "phase" not in first.status_patch(default) and first_record_pending(default, first.status)
    up = decide(job, {}, Observed(pods=(observe_pod(running(J, 0)), observe_pod(running(J, 1)))), at(1))
    assert not first_record_pending({}, up.status)  # Running: written at once
    recorded = dict(first.status)
    again = decide(job, recorded, Observed(pods=(observe_pod(running(J, 0)), observe_pod(pod(J, 1)))), at(1))
    assert not first_record_pending(recorded, again.status)
