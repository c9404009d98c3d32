"""The operator in-process (KopfRunner) against the real API server, scheduler and garbage collector.

No training runs here (that is the e2e tier): the jobs' pods are pinned to a node label no node has
(or ask for more GPUs than any node offers), so the scheduler never binds them and kwok never drives
them. The tests then play the kubelet themselves by patching the pods' status subresource
(Running, terminated with an exit code) and check what the operator makes of it: children, owner
references, idempotence, events, gang restarts, terminal phases, cleanPodPolicy, deadlines, suspension.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import time
from typing import Any, Callable, Iterator

import pytest
import yaml

from kubetest import Kube, apply, condition, dump, get_job, job, pods, sample, status, wait_for
from ltj_operator import constants as C
from ltj_operator.spec import MAX_ARGS_BYTES

pytestmark = pytest.mark.integration

R = C.Reason
# No node carries this label: pods that select it stay unbound, so nobody but the test sets their status.
NOWHERE = {"ltj.dev/test": "none"}
TRAINER_IMAGE = "ltj-trainer:dev"  # the operator fixture's LTJ_DEFAULT_TRAINER_IMAGE
OPERATOR_IMAGE = "ltj-operator:dev"
CHILD_LABELS = {C.LABEL_NAME: C.APP_NAME, C.LABEL_MANAGED_BY: C.MANAGED_BY}


# -- helpers -------------------------------------------------------------------------------------------------
def until(predicate: Callable[[], Any], timeout: float, what: str, diagnose: Callable[[], str] | None = None,
          interval: float = 0.25) -> Any:
    return wait_for(predicate, timeout, interval=interval, what=what, diagnose=diagnose)


def pinned(name: str, **spec: Any) -> dict[str, Any]:
    """The CPU sample (2 nodes, an operator-made RWX claim, cleanPodPolicy Running, backoffLimit 2), unrunnable."""
    manifest = job(name, **spec)
    manifest["spec"].setdefault("podTemplate", {})["nodeSelector"] = dict(NOWHERE)
    return manifest


def wait_job(kube: Kube, ns: str, name: str, pred: Callable[[dict[str, Any]], Any], what: str,
             timeout: float = 60) -> dict[str, Any]:
    return until(lambda: (lambda st: st if pred(st) else None)(status(kube, ns, name)), timeout, f"{name}: {what}",
                 lambda: dump(kube, ns))


def wait_phase(kube: Kube, ns: str, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    return wait_job(kube, ns, name, lambda st: st.get("phase") == phase, f"phase {phase}", timeout)


def cond_is(st: dict[str, Any], type_: str, status_: str, reason: str | None = None) -> bool:
    c = condition(st, type_)
    return c is not None and c["status"] == status_ and (reason is None or c["reason"] == reason)


def gang(kube: Kube, ns: str, name: str, attempt: int, nodes: int = 2, timeout: float = 60) -> list[dict[str, Any]]:
    """The job's pods once exactly ``nodes`` pods of ``attempt`` exist (and nothing else), by rank."""
    def ready() -> list[dict[str, Any]] | None:
        items = [p for p in pods(kube, ns, name) if not p["metadata"].get("deletionTimestamp")]
        if len(items) == nodes and all(p["metadata"]["labels"][C.LABEL_ATTEMPT] == str(attempt) for p in items):
            return sorted(items, key=lambda p: int(p["metadata"]["labels"][C.LABEL_NODE_RANK]))
        return None

    return until(ready, timeout, f"{name}: {nodes} pod(s) of attempt {attempt}", lambda: dump(kube, ns))


@contextlib.contextmanager
def job_statuses(kube: Kube, ns: str, name: str) -> Iterator[list[dict[str, Any]]]:
    """Every status of the job that the API server shows while the block runs (a kubectl watch), from its
    creation (the CRD's default status until the operator's first record); the list fills when the block ends."""
    watch = subprocess.Popen([str(kube.bin_dir / "kubectl"), f"--kubeconfig={kube.kubeconfig}", "get",
                              C.PLURAL, "-n", ns, "--watch", "--output-watch-events", "-o", "json"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    statuses: list[dict[str, Any]] = []
    try:
        yield statuses
        time.sleep(1)  # the watch has seen what the API server holds by now
    finally:
        watch.terminate()
        out, _ = watch.communicate(timeout=30)
    decoder, at = json.JSONDecoder(), 0
    while out[at:].strip():
        event, at = decoder.raw_decode(out, len(out) - len(out[at:].lstrip()))
        if event["object"]["metadata"]["name"] == name:
            statuses.append(event["object"].get("status") or {})


def pod_names(kube: Kube, ns: str, name: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods(kube, ns, name))


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_trainer(kube: Kube, ns: str, pod: str, phase: str, state: dict[str, Any]) -> None:
    """Play the kubelet: the pod's phase and its trainer container's state, through the status subresource."""
    running = "running" in state
    patch = {"status": {"phase": phase, "containerStatuses": [{
        "name": C.TRAINER_CONTAINER, "image": TRAINER_IMAGE, "imageID": "", "ready": running, "started": running,
        "restartCount": 0, "state": state}]}}
    kube.kubectl("patch", "pod", pod, "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(patch))


def run(kube: Kube, ns: str, *pod_list: str) -> None:
    for pod in pod_list:
        set_trainer(kube, ns, pod, "Running", {"running": {"startedAt": now()}})


def exit_with(kube: Kube, ns: str, pod: str, code: int, message: str = "") -> None:
    terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": now(),
                  "finishedAt": now()}
    if message:
        terminated["message"] = message
    set_trainer(kube, ns, pod, "Succeeded" if code == 0 else "Failed", {"terminated": terminated})


def events(kube: Kube, ns: str, name: str) -> list[dict[str, Any]]:
    return kube.get("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]


def wait_event(kube: Kube, ns: str, name: str, type_: str, reason: str, contains: str = "",
               timeout: float = 30) -> dict[str, Any]:
    """A Kubernetes Event the operator posted about the job (kopf posts them asynchronously)."""
    def find() -> dict[str, Any] | None:
        for ev in events(kube, ns, name):
            if ev["type"] == type_ and ev["reason"] == reason and contains in ev["message"]:
                return ev
        return None

    def seen() -> str:
        return "\n".join(f"{e['type']} {e['reason']}: {e['message']}" for e in events(kube, ns, name))

    ev = until(find, timeout, f"{type_} event {reason} on {name}", seen)
    assert ev["involvedObject"]["kind"] == C.KIND and ev["involvedObject"]["apiVersion"] == C.API_VERSION
    assert ev["involvedObject"]["uid"] == get_job(kube, ns, name)["metadata"]["uid"]
    assert ev["source"].get("component") == C.MANAGED_BY or ev.get("reportingComponent") == C.MANAGED_BY, ev
    return ev


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    (trainer,) = [c for c in pod["spec"]["containers"] if c["name"] == C.TRAINER_CONTAINER]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in trainer["env"]}


def owner_ref(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    uid = get_job(kube, ns, name)["metadata"]["uid"]
    return {"apiVersion": C.API_VERSION, "kind": C.KIND, "name": name, "uid": uid, "controller": True,
            "blockOwnerDeletion": True}


CHILD_KINDS = "services,persistentvolumeclaims,serviceaccounts,roles,rolebindings,pods"


def children(kube: Kube, ns: str, name: str) -> dict[str, dict[str, Any]]:
    """Every object labelled as the job's, keyed 'Kind/name'."""
    items = kube.get(CHILD_KINDS, "-n", ns, "-l", f"{C.LABEL_JOB_NAME}={name}")["items"]
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in items}


# -- children ---------------------------------------------------------------------------------------------------
def test_every_child_is_created_owned_and_labelled(kube: Kube, namespace: str, operator: Any) -> None:
    name = apply(kube, namespace, pinned("kids"))
    ranks = gang(kube, namespace, name, attempt=0)
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "True", R.PODS_CREATED), "Created")
    assert st["phase"] == C.PHASE_PENDING and st["nodes"] == 2 and st["attempt"] == 0 and st["restarts"] == 0
    assert st["observedGeneration"] == 1 and st["startTime"]
    assert condition(st, C.COND_VOLUME_NOT_SHARED) is None  # the template asks for ReadWriteMany

    found = children(kube, namespace, name)
    expected = {"Service/kids": C.COMPONENT_SERVICE,
                "PersistentVolumeClaim/kids-output": C.COMPONENT_OUTPUT, "ServiceAccount/kids-relay": C.COMPONENT_RELAY,
                "Role/kids-relay": C.COMPONENT_RELAY, "RoleBinding/kids-relay": C.COMPONENT_RELAY,
                "Pod/kids-node-0": C.COMPONENT_TRAINER, "Pod/kids-node-1": C.COMPONENT_TRAINER}
    assert sorted(found) == sorted(expected)
    ref = owner_ref(kube, namespace, name)
    for key, component in expected.items():
        meta = found[key]["metadata"]
        assert meta["ownerReferences"] == [ref], key
        assert meta["labels"].items() >= {**CHILD_LABELS, C.LABEL_INSTANCE: name, C.LABEL_JOB_NAME: name,
                                          C.LABEL_COMPONENT: component}.items(), key

    # Every pod carries the same trainer config (a gang keeps the config it was created with).
    texts = {found[f"Pod/kids-node-{rank}"]["metadata"]["annotations"][C.ANNOTATION_TRAINER_CONFIG] for rank in (0, 1)}
    assert len(texts) == 1
    config = yaml.safe_load(texts.pop())
    training = sample()["spec"]["training"]
    assert config.items() >= {"model_class": "digits_cnn", "data_class": "digits", "num_nodes": 2, "devices": 1,
                              "accelerator": "cpu", "max_epochs": training["maxEpochs"], "precision": "fp32",
                              "save_top_k": training["checkpoint"]["saveTopK"],
                              "early_stop_metric": training["monitor"]["metric"],
                              "early_stop_patience": training["earlyStopping"]["patience"], "mode": "min",
                              "default_root_dir": C.OUTPUT_DIR}.items()

    svc = found["Service/kids"]["spec"]
    assert svc["clusterIP"] == "None" and svc["publishNotReadyAddresses"] is True
    assert svc["selector"] == {C.LABEL_JOB_NAME: name, C.LABEL_MANAGED_BY: C.MANAGED_BY,
                               C.LABEL_COMPONENT: C.COMPONENT_TRAINER}
    assert [(p["name"], p["port"]) for p in svc["ports"]] == [(C.DIST_PORT_NAME, C.DIST_PORT)]

    pvc = found["PersistentVolumeClaim/kids-output"]["spec"]
    assert pvc["accessModes"] == ["ReadWriteMany"] and pvc["resources"]["requests"]["storage"] == "1Gi"
    assert pvc["storageClassName"] == "ltj-local"

    role = found["Role/kids-relay"]
    assert all(rule["resourceNames"] == [name] for rule in role["rules"])
    binding = found["RoleBinding/kids-relay"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kids-relay", "namespace": namespace}]
    assert binding["roleRef"]["name"] == "kids-relay"

    for rank, pod in enumerate(ranks):
        spec = pod["spec"]
        assert pod["metadata"]["name"] == f"kids-node-{rank}"
        assert pod["metadata"]["labels"][C.LABEL_NODE_RANK] == str(rank)
        assert pod["metadata"]["labels"][C.LABEL_ATTEMPT] == "0"
        assert spec["hostname"] == f"kids-node-{rank}" and spec["subdomain"] == name
        assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
        assert spec["nodeSelector"] == NOWHERE and not spec.get("nodeName")
        assert env_of(pod) == {
            "MASTER_ADDR": "kids-node-0.kids", "MASTER_PORT": "29500", "WORLD_SIZE": "2", "RANK": str(rank),
            "PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": str(rank),
            "PET_MASTER_ADDR": "kids-node-0.kids", "PET_MASTER_PORT": "29500",
            "LTJ_CONFIG": C.CONFIG_PATH, "LTJ_JOB_NAME": name, "LTJ_ATTEMPT": "0"}
        (trainer,) = spec["containers"]
        assert trainer["image"] == TRAINER_IMAGE and "command" not in trainer
        mounts = {m["mountPath"]: m for m in trainer["volumeMounts"]}
        assert mounts[C.OUTPUT_DIR].get("subPath") == name and C.CONFIG_DIR in mounts and C.SHM_DIR in mounts
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes[C.VOLUME_CONFIG]["downwardAPI"]["items"] == [
            {"path": C.CONFIG_FILE_NAME,
             "fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.annotations['{C.ANNOTATION_TRAINER_CONFIG}']"}}]
        assert volumes[C.VOLUME_OUTPUT]["persistentVolumeClaim"]["claimName"] == "kids-output"
        assert volumes[C.VOLUME_SHM]["emptyDir"] == {"medium": "Memory"}
        if rank == 0:
            # The native sidecar survived the API server's round trip (an older client model would drop it).
            (relay,) = spec["initContainers"]
            assert relay["name"] == C.RELAY_CONTAINER and relay["restartPolicy"] == "Always"
            assert relay["command"] == list(C.RELAY_COMMAND) and relay["image"] == OPERATOR_IMAGE
            assert spec["serviceAccountName"] == "kids-relay" and C.VOLUME_RELAY_TOKEN in volumes
        else:
            assert "initContainers" not in spec and C.VOLUME_RELAY_TOKEN not in volumes
    wait_event(kube, namespace, name, "Normal", R.CREATING_PODS, "kids-node-0, kids-node-1 (attempt 0)")


def test_a_new_jobs_first_status_already_counts_its_pods(kube: Kube, namespace: str, operator: Any) -> None:
    """Decision: a job's first gang gets no status write before its pods (an operator stopped in between finds
    attempt-0 pods and derives the same status from them); the first write comes once they exist. So every
    status the operator recorded already has the gang launched; before it, the job reads as the CRD's default
    status (phase Pending), which costs no request."""
    with job_statuses(kube, namespace, "first") as statuses:
        name = apply(kube, namespace, pinned("first"))
        wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "True", R.PODS_CREATED), "Created")
    records = [s for s in statuses if "observedGeneration" in s]
    assert records, f"the watch saw no status record of {name}: {statuses}"
    assert all(s.get("launchedAttempt") == 0 and s.get("startTime") for s in records), statuses
    before = statuses[:statuses.index(records[0])]
    assert before and all(s == {"phase": C.PHASE_PENDING} for s in before), statuses


def test_a_gang_coming_up_right_after_a_status_write_shows_running_without_a_partial_write(
        kube: Kube, namespace: str, operator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress inside Pending that follows our last status write within the hold is not written at once:
    the rest of the gang coming up in the meantime gives one write of Running. Progress alone is still
    written once the hold ends. (The hold is widened so that kubectl's pace fits in it.)"""
    monkeypatch.setattr("ltj_operator.reconcile.PROGRESS_HOLD_SECONDS", 8.0)
    with job_statuses(kube, namespace, "together") as statuses:
        name = apply(kube, namespace, pinned("together"))
        wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "True", R.PODS_CREATED), "Created")
        run(kube, namespace, "together-node-0", "together-node-1")
        wait_phase(kube, namespace, name, C.PHASE_RUNNING)
    assert not any(s.get("readyNodes") == 1 for s in statuses), statuses

    name = apply(kube, namespace, pinned("alone"))
    wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "True", R.PODS_CREATED), "Created")
    run(kube, namespace, "alone-node-0")
    st = wait_job(kube, namespace, name, lambda s: s.get("readyNodes") == 1, "1 of 2 ready after the hold")
    assert st["phase"] == C.PHASE_PENDING and cond_is(st, C.COND_RUNNING, "False", R.PODS_PENDING)
    assert condition(st, C.COND_RUNNING)["message"].startswith("1 of 2 pod(s) running")


def test_a_gang_coming_up_right_after_its_creation_gets_one_first_write_saying_running(
        kube: Kube, namespace: str, operator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first gang's companions are made with its pods, and its deferred first record that would only
    say Pending waits within the hold: a gang running by then gets one first write, Running; a gang still
    Pending gets its record once the hold ends. (The hold is widened so that kubectl's pace fits in it.
    Pods of a scheduler nobody runs stay Pending without news: pinned ones would be Unschedulable.)"""
    monkeypatch.setattr("ltj_operator.reconcile.PROGRESS_HOLD_SECONDS", 8.0)
    unscheduled = {"podTemplate": {"schedulerName": "ltj-test-no-such-scheduler"}}
    with job_statuses(kube, namespace, "quick") as statuses:
        name = apply(kube, namespace, job("quick", **unscheduled))
        gang(kube, namespace, name, attempt=0)
        run(kube, namespace, "quick-node-0", "quick-node-1")
        wait_phase(kube, namespace, name, C.PHASE_RUNNING)
    phases = [s["phase"] for s in statuses if "observedGeneration" in s]  # the operator's records
    assert phases and set(phases) == {C.PHASE_RUNNING}, statuses
    owned = {(i["kind"], i["metadata"]["name"]) for i in kube.get(CHILD_KINDS, "-n", namespace)["items"]}
    assert {("Service", "quick"), ("RoleBinding", "quick-relay")} <= owned, owned

    with job_statuses(kube, namespace, "slow") as statuses:
        name = apply(kube, namespace, job("slow", **unscheduled))
        gang(kube, namespace, name, attempt=0)
        st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "True", R.PODS_CREATED),
                      "Created after the hold")
    assert st["phase"] == C.PHASE_PENDING and st["launchedAttempt"] == 0 and st["readyNodes"] == 0


def test_unschedulable_job_shows_the_schedulers_message(kube: Kube, namespace: str, operator: Any,
                                                        static_claim: str) -> None:
    # More GPUs than any node has (4 each): the real scheduler says why, the operator passes it on.
    manifest = job("greedy", nodes=1, gpusPerNode=8)
    manifest["spec"]["output"] = {"claimName": static_claim}
    name = apply(kube, namespace, manifest)
    (pod,) = gang(kube, namespace, name, attempt=0, nodes=1)
    assert pod["spec"]["containers"][0]["resources"]["limits"][C.GPU_RESOURCE] == "8"
    st = wait_job(kube, namespace, name,
                  lambda s: cond_is(s, C.COND_UNSCHEDULABLE, "True", R.PODS_UNSCHEDULABLE)
                  and "Insufficient nvidia.com/gpu" in condition(s, C.COND_UNSCHEDULABLE)["message"],
                  "Unschedulable with the scheduler's message")
    assert condition(st, C.COND_UNSCHEDULABLE)["message"].startswith("greedy-node-0: 0/2 nodes are available")
    assert st["phase"] == C.PHASE_PENDING and st["readyNodes"] == 0
    running = condition(st, C.COND_RUNNING)
    assert running["status"] == "False" and running["reason"] == R.PODS_PENDING
    assert "Insufficient nvidia.com/gpu" in running["message"]
    wait_event(kube, namespace, name, "Warning", R.PODS_UNSCHEDULABLE, "greedy-node-0: ")


# -- idempotence, conflicts --------------------------------------------------------------------------------------
def test_operator_restart_changes_nothing_and_deletion_cascades(kube: Kube, namespace: str,
                                                                operator: Callable[[], Any]) -> None:
    name = apply(kube, namespace, pinned("idem"))
    gang(kube, namespace, name, attempt=0)
    before_status = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "True"), "Created")
    before = {k: (o["metadata"]["uid"], o["metadata"]["resourceVersion"]) for k, o in children(kube, namespace,
                                                                                                name).items()}
    assert len(before) == 7

    operator()  # a fresh operator lists the job and reconciles it from scratch
    # Prove the new operator is at work: it must notice the pods running.
    run(kube, namespace, "idem-node-0", "idem-node-1")
    st = wait_phase(kube, namespace, name, C.PHASE_RUNNING)
    operator()
    time.sleep(2)  # give the third operator's startup pass its chance to (wrongly) create or delete something
    after = children(kube, namespace, name)
    assert sorted(after) == sorted(before)
    for key, (uid, version) in before.items():
        assert after[key]["metadata"]["uid"] == uid, f"{key} was recreated"
        if not key.startswith(("Pod/", "PersistentVolumeClaim/")):  # pods: our status patches; claims: binding
            assert after[key]["metadata"]["resourceVersion"] == version, f"{key} was rewritten"
    assert len(kube.get("pods", "-n", namespace)["items"]) == 2
    st = status(kube, namespace, name)
    assert (st["phase"], st["restarts"], st["attempt"], st["readyNodes"]) == (C.PHASE_RUNNING, 0, 0, 2)
    assert condition(st, C.COND_CREATED) == condition(before_status, C.COND_CREATED)
    assert st["startTime"] == before_status["startTime"]
    creating = [e for e in events(kube, namespace, name) if e["reason"] == R.CREATING_PODS]
    assert len(creating) == 1, [e["message"] for e in creating]  # no pass after a restart created anything

    # Owner references are real: deleting the job lets the garbage collector take every child.
    kube.kubectl("delete", "ltj", name, "-n", namespace, "--wait=false")
    until(lambda: not children(kube, namespace, name), 60, "the garbage collector to delete every child",
          lambda: json.dumps(sorted(children(kube, namespace, name))))


def test_a_foreign_claim_is_neither_used_nor_adopted(kube: Kube, namespace: str, operator: Any) -> None:
    """Decision: a child name taken by an object the job does not control (a user's, or a deleted namesake's
    not yet garbage-collected) is left alone; the job reports it (Created=False + a Warning event) and
    creates no pods until the name is free, then carries on by itself."""
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "clash-output"},
             "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Mi"}},
                      "storageClassName": "someone-elses"}}
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(claim))
    name = apply(kube, namespace, pinned("clash"))
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "False", R.POD_CREATION_FAILED),
                  "Created=False (the name is taken)")
    message = condition(st, C.COND_CREATED)["message"]
    assert "PersistentVolumeClaim clash-output exists and is not controlled by this job" in message, message
    wait_event(kube, namespace, name, "Warning", R.POD_CREATION_FAILED, "PersistentVolumeClaim clash-output exists")
    theirs = kube.get("pvc", "clash-output", "-n", namespace)
    assert theirs["spec"]["storageClassName"] == "someone-elses" and not theirs["metadata"].get("ownerReferences")
    assert pods(kube, namespace, name) == []

    kube.kubectl("delete", "pvc", "clash-output", "-n", namespace)
    gang(kube, namespace, name, attempt=0, timeout=90)  # the retry backoff is at most a minute
    ours = kube.get("pvc", "clash-output", "-n", namespace)
    assert ours["metadata"]["ownerReferences"] == [owner_ref(kube, namespace, name)]
    assert ours["spec"]["storageClassName"] == "ltj-local"
    wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "True", R.PODS_CREATED), "Created")


def test_pods_the_api_server_refuses_are_reported(kube: Kube, namespace: str, operator: Any) -> None:
    # A typo the CRD and the operator cannot know about: the Priority admission plugin refuses the pods (403).
    name = apply(kube, namespace, pinned("refused", podTemplate={"priorityClassName": "no-such-priority"}))
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "False", R.POD_CREATION_FAILED),
                  "Created=False (pod refused)")
    assert "no PriorityClass with name no-such-priority was found" in condition(st, C.COND_CREATED)["message"]
    wait_event(kube, namespace, name, "Warning", R.POD_CREATION_FAILED, "no-such-priority")
    assert pods(kube, namespace, name) == [] and st["phase"] == C.PHASE_PENDING


def test_a_refused_service_is_reported_until_it_gets_through(kube: Kube, namespace: str, operator: Any) -> None:
    """Decision: the Service and the relay's RoleBinding follow the pods (a pod does not need them to be
    created). One the API server refuses (here: a quota of no Services) stays on record (Created=False) and
    is tried again, after the pods exist, until it gets through."""
    kube.kubectl("create", "quota", "no-services", "-n", namespace, "--hard=services=0")
    # Quota admission refuses every Service until the quota controller has filled in the quota's status.
    until(lambda: kube.get("resourcequota", "no-services", "-n", namespace).get("status", {}).get("hard"), 30,
          "the quota's status")
    name = apply(kube, namespace, pinned("noservice"))
    first = [p["metadata"]["uid"] for p in gang(kube, namespace, name, attempt=0)]
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "False", R.POD_CREATION_FAILED),
                  "Created=False (Service refused)")
    assert "exceeded quota: no-services" in condition(st, C.COND_CREATED)["message"], st
    wait_event(kube, namespace, name, "Warning", R.POD_CREATION_FAILED, "exceeded quota")
    assert kube.kubectl("get", "service", name, "-n", namespace, check=False).returncode != 0

    kube.kubectl("delete", "quota", "no-services", "-n", namespace)
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "True", R.PODS_CREATED), "Created",
                  timeout=90)  # the retry backoff is at most a minute
    assert kube.get("service", name, "-n", namespace)["metadata"]["ownerReferences"] == [owner_ref(kube, namespace, name)]
    assert st["attempt"] == 0 and st["restarts"] == 0 and st["launchedAttempt"] == 0
    assert [p["metadata"]["uid"] for p in gang(kube, namespace, name, attempt=0)] == first  # never restarted


def test_a_refused_prerequisite_of_the_first_gang_is_reported_and_no_pod_is_made(kube: Kube, namespace: str,
                                                                                  operator: Any) -> None:
    """A new job's first pass makes what its pods need (the relay's ServiceAccount and Role) in the round
    trip that observes its pods. One the API server refuses (a quota of no ServiceAccounts) is reported
    (Created=False), no pod is created without it, and the gang comes once it gets through."""
    kube.kubectl("create", "quota", "no-accounts", "-n", namespace, "--hard=count/serviceaccounts=0")
    until(lambda: kube.get("resourcequota", "no-accounts", "-n", namespace).get("status", {}).get("hard"), 30,
          "the quota's status")
    name = apply(kube, namespace, pinned("noaccount"))
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "False", R.POD_CREATION_FAILED),
                  "Created=False (ServiceAccount refused)")
    assert "exceeded quota: no-accounts" in condition(st, C.COND_CREATED)["message"], st
    wait_event(kube, namespace, name, "Warning", R.POD_CREATION_FAILED, "exceeded quota")
    assert pods(kube, namespace, name) == [] and st["phase"] == C.PHASE_PENDING

    kube.kubectl("delete", "quota", "no-accounts", "-n", namespace)
    gang(kube, namespace, name, attempt=0, timeout=90)  # the retry backoff is at most a minute
    wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "True", R.PODS_CREATED), "Created")


def test_a_spec_the_operator_rejects_fails_the_job(kube: Kube, namespace: str, operator: Any) -> None:
    manifest = pinned("bigargs")
    # The CRD and the chart's policy bound the keys, not the size of the args (a pod annotation).
    manifest["spec"]["model"]["args"] = {"notes": "x" * MAX_ARGS_BYTES}
    name = apply(kube, namespace, manifest)
    st = wait_phase(kube, namespace, name, C.PHASE_FAILED)
    failed = condition(st, C.COND_FAILED)
    assert failed["reason"] == R.INVALID_SPEC and "spec.model.args: too large" in failed["message"]
    wait_event(kube, namespace, name, "Warning", R.INVALID_SPEC, "spec.model.args: too large")
    assert pods(kube, namespace, name) == []


# -- the gang's life, driven by hand -------------------------------------------------------------------------
def test_running_then_a_retryable_failure_restarts_the_whole_gang(kube: Kube, namespace: str, operator: Any) -> None:
    name = apply(kube, namespace, pinned("retry"))
    old = gang(kube, namespace, name, attempt=0)
    run(kube, namespace, "retry-node-0", "retry-node-1")
    st = wait_phase(kube, namespace, name, C.PHASE_RUNNING)
    assert st["readyNodes"] == 2 and cond_is(st, C.COND_RUNNING, "True", R.ALL_PODS_RUNNING)
    wait_event(kube, namespace, name, "Normal", R.ALL_PODS_RUNNING, "all 2 pod(s) running (attempt 0)")

    exit_with(kube, namespace, "retry-node-1", 137)  # SIGKILLed, e.g. by the OOM killer
    st = wait_job(kube, namespace, name, lambda s: s.get("restarts") == 1, "restarts=1")
    assert st["attempt"] == 1 and st["phase"] in (C.PHASE_RESTARTING, C.PHASE_PENDING)
    assert st["failure"]["pod"] == "retry-node-1" and st["failure"]["rank"] == 1
    assert st["failure"]["exitCode"] == 137 and st["failure"]["reason"] == R.SIGNALED
    assert cond_is(st, C.COND_RESTARTING, "True", R.SIGNALED)
    new = gang(kube, namespace, name, attempt=1)
    assert {p["metadata"]["uid"] for p in new}.isdisjoint({p["metadata"]["uid"] for p in old})
    for rank, pod in enumerate(new):
        env = env_of(pod)
        assert env["LTJ_ATTEMPT"] == "1" and env["RANK"] == str(rank)
        assert env[C.RESUME_ENV] == "last"  # no checkpoint reported yet: the trainer resumes from the latest
    wait_event(kube, namespace, name, "Warning", R.SIGNALED, "restart 1 of at most 2 (attempt 1)")

    run(kube, namespace, "retry-node-0", "retry-node-1")
    st = wait_phase(kube, namespace, name, C.PHASE_RUNNING)
    assert cond_is(st, C.COND_RESTARTING, "False", R.RESTART_COMPLETE) and st["restarts"] == 1


def test_retryable_failure_past_the_backoff_limit_fails_the_job(kube: Kube, namespace: str, operator: Any) -> None:
    name = apply(kube, namespace, pinned("nobackoff", nodes=1, runPolicy={"backoffLimit": 0}))
    gang(kube, namespace, name, attempt=0, nodes=1)
    run(kube, namespace, "nobackoff-node-0")
    wait_phase(kube, namespace, name, C.PHASE_RUNNING)
    exit_with(kube, namespace, "nobackoff-node-0", 143)
    st = wait_phase(kube, namespace, name, C.PHASE_FAILED)
    assert cond_is(st, C.COND_FAILED, "True", R.BACKOFF_LIMIT_EXCEEDED) and st["restarts"] == 0
    assert st["failure"]["exitCode"] == 143 and st["failure"]["reason"] == R.SIGNALED
    wait_event(kube, namespace, name, "Warning", R.BACKOFF_LIMIT_EXCEEDED, "backoffLimit 0")


def test_non_retryable_exit_fails_the_job_with_the_failure_recorded(kube: Kube, namespace: str,
                                                                    operator: Any) -> None:
    name = apply(kube, namespace, pinned("fatal"))
    gang(kube, namespace, name, attempt=0)
    run(kube, namespace, "fatal-node-0", "fatal-node-1")
    wait_phase(kube, namespace, name, C.PHASE_RUNNING)
    exit_with(kube, namespace, "fatal-node-1", 1, "Traceback (most recent call last):\nValueError: bad batch")
    st = wait_phase(kube, namespace, name, C.PHASE_FAILED)
    failure = st["failure"]
    assert {k: failure[k] for k in ("pod", "rank", "exitCode", "reason")} == {
        "pod": "fatal-node-1", "rank": 1, "exitCode": 1, "reason": R.NON_RETRYABLE_EXIT_CODE}
    # One line with the root cause; the whole termination message stays in the status.
    assert failure["message"].endswith("trainer exited with code 1: ValueError: bad batch"), failure
    assert failure["detail"] == "Traceback (most recent call last):\nValueError: bad batch"
    failed = condition(st, C.COND_FAILED)
    assert failed["status"] == "True" and failed["reason"] == R.NON_RETRYABLE_EXIT_CODE
    assert "trainer exited with code 1" in failed["message"]
    assert st["completionTime"] and st["restarts"] == 0
    assert cond_is(st, C.COND_RUNNING, "False", R.JOB_FINISHED)
    # cleanPodPolicy Running: the still-running rank goes, the failed one stays for its logs.
    until(lambda: pod_names(kube, namespace, name) == ["fatal-node-1"], 30, "only the failed pod to remain",
          lambda: dump(kube, namespace))
    wait_event(kube, namespace, name, "Warning", R.NON_RETRYABLE_EXIT_CODE, "fatal-node-1")
    wait_event(kube, namespace, name, "Normal", R.CLEANED_UP, "cleanPodPolicy Running")
    # Terminal is terminal: nothing recreates the deleted pod.
    time.sleep(2)
    assert pod_names(kube, namespace, name) == ["fatal-node-1"]
    assert status(kube, namespace, name)["phase"] == C.PHASE_FAILED


SUMMARY = {"best_checkpoint": "/output/checkpoints/digits_cnn_epoch=03-val_loss=0.12.ckpt", "best_score": 0.12,
           "monitor": "val_loss", "epochs": 4, "early_stopped": False, "test_metrics": {"test_acc": 0.97},
           "last_seq": 17}


@pytest.mark.parametrize("policy,both_exit,remaining", [
    ("All", True, []),
    ("Running", False, ["{}-node-0"]),  # rank 1 still runs when rank 0 finishes: it is deleted
    ("None", False, ["{}-node-0", "{}-node-1"]),
])
def test_success_honours_clean_pod_policy(kube: Kube, namespace: str, operator: Any, policy: str, both_exit: bool,
                                          remaining: list[str]) -> None:
    name = apply(kube, namespace, pinned(f"done-{policy.lower()}", runPolicy={"cleanPodPolicy": policy}))
    gang(kube, namespace, name, attempt=0)
    run(kube, namespace, f"{name}-node-0", f"{name}-node-1")
    wait_phase(kube, namespace, name, C.PHASE_RUNNING)
    if both_exit:
        exit_with(kube, namespace, f"{name}-node-1", 0)
    exit_with(kube, namespace, f"{name}-node-0", 0, json.dumps(SUMMARY))
    st = wait_phase(kube, namespace, name, C.PHASE_SUCCEEDED)
    succeeded = condition(st, C.COND_SUCCEEDED)
    assert succeeded["status"] == "True" and succeeded["reason"] == R.MAX_EPOCHS_REACHED
    assert "best val_loss 0.12" in succeeded["message"] and st["completionTime"]
    # The trainer's termination summary is the result when no relay reported (none runs here).
    assert st["result"] == {"source": "terminationMessage", "bestCheckpoint": SUMMARY["best_checkpoint"],
                            "bestScore": 0.12, "monitor": "val_loss", "epochs": 4, "earlyStopped": False,
                            "testMetrics": {"test_acc": 0.97}}
    wait_event(kube, namespace, name, "Normal", R.MAX_EPOCHS_REACHED, "training finished")
    want = sorted(p.format(name) for p in remaining)
    until(lambda: pod_names(kube, namespace, name) == want, 30, f"pods {want} to remain (cleanPodPolicy {policy})",
          lambda: dump(kube, namespace))
    time.sleep(2)  # and they stay
    assert pod_names(kube, namespace, name) == want
    assert status(kube, namespace, name)["phase"] == C.PHASE_SUCCEEDED


def test_active_deadline_fails_the_job(kube: Kube, namespace: str, operator: Any) -> None:
    name = apply(kube, namespace, pinned("deadline", runPolicy={"activeDeadlineSeconds": 3}))
    gang(kube, namespace, name, attempt=0)
    st = wait_phase(kube, namespace, name, C.PHASE_FAILED, timeout=30)
    failed = condition(st, C.COND_FAILED)
    assert failed["reason"] == R.DEADLINE_EXCEEDED and "activeDeadlineSeconds (3s)" in failed["message"]
    started = dt.datetime.fromisoformat(st["startTime"].replace("Z", "+00:00"))
    finished = dt.datetime.fromisoformat(st["completionTime"].replace("Z", "+00:00"))
    assert finished - started >= dt.timedelta(seconds=3)
    # cleanPodPolicy Running covers pods that never ran: nothing is left waiting for a node.
    until(lambda: pod_names(kube, namespace, name) == [], 30, "the pending pods to be deleted",
          lambda: dump(kube, namespace))
    wait_event(kube, namespace, name, "Warning", R.DEADLINE_EXCEEDED, "activeDeadlineSeconds")


def test_suspend_deletes_the_pods_and_resume_starts_a_new_attempt(kube: Kube, namespace: str,
                                                                  operator: Any) -> None:
    name = apply(kube, namespace, pinned("pause"))
    gang(kube, namespace, name, attempt=0)
    run(kube, namespace, "pause-node-0", "pause-node-1")
    wait_phase(kube, namespace, name, C.PHASE_RUNNING)

    kube.kubectl("patch", "ltj", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"runPolicy":{"suspend":true}}}')
    st = wait_phase(kube, namespace, name, C.PHASE_SUSPENDED)
    until(lambda: pod_names(kube, namespace, name) == [], 30, "the suspended job's pods to be deleted")
    assert cond_is(st, C.COND_SUSPENDED, "True", R.SUSPENDED) and cond_is(st, C.COND_RUNNING, "False")
    assert "startTime" not in st and st["restarts"] == 0  # the deadline clock restarts on resumption
    wait_event(kube, namespace, name, "Normal", R.SUSPENDED, "deleting 2 pod(s)")
    time.sleep(2)  # suspended means suspended: no pod comes back
    assert pod_names(kube, namespace, name) == [] and status(kube, namespace, name)["phase"] == C.PHASE_SUSPENDED

    kube.kubectl("patch", "ltj", name, "-n", namespace, "--type=merge", "-p",
                 '{"spec":{"runPolicy":{"suspend":false}}}')
    resumed = gang(kube, namespace, name, attempt=1)
    for pod in resumed:
        assert env_of(pod)["LTJ_ATTEMPT"] == "1" and env_of(pod)[C.RESUME_ENV] == "last"
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_SUSPENDED, "False", R.RESUMED), "resumed")
    assert st["attempt"] == 1 and st["restarts"] == 0 and st["startTime"]
    assert st["phase"] in (C.PHASE_PENDING, C.PHASE_RUNNING)
    wait_event(kube, namespace, name, "Normal", R.RESUMED, "the job resumed (attempt 1)")
    run(kube, namespace, "pause-node-0", "pause-node-1")
    wait_phase(kube, namespace, name, C.PHASE_RUNNING)


# -- volumes ------------------------------------------------------------------------------------------------------
def test_multi_node_job_on_a_claim_without_read_write_many_is_warned(kube: Kube, namespace: str,
                                                                     operator: Any) -> None:
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "solo"},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "ltj-local",
                      "resources": {"requests": {"storage": "1Gi"}}}}
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(claim))
    shared = pinned("shared")
    shared["spec"]["output"] = {"claimName": "solo"}
    name = apply(kube, namespace, shared)
    st = wait_job(kube, namespace, name,
                  lambda s: cond_is(s, C.COND_VOLUME_NOT_SHARED, "True", R.ACCESS_MODE_NOT_RWX), "VolumeNotShared")
    message = condition(st, C.COND_VOLUME_NOT_SHARED)["message"]
    assert "solo" in message and "ReadWriteOnce" in message and "needs ReadWriteMany" in message
    wait_event(kube, namespace, name, "Warning", R.ACCESS_MODE_NOT_RWX, "the output claim solo")
    # A warning, not a refusal: the pods are created on the claim anyway (subPath = the job's name).
    for pod in gang(kube, namespace, name, attempt=0):
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes[C.VOLUME_OUTPUT]["persistentVolumeClaim"]["claimName"] == "solo"
    assert kube.get("pvc", "solo", "-n", namespace)["metadata"].get("ownerReferences") is None  # not adopted

    single = pinned("single", nodes=1)
    single["spec"]["output"] = {"claimName": "solo"}
    apply(kube, namespace, single)
    gang(kube, namespace, "single", attempt=0, nodes=1)
    st = wait_job(kube, namespace, "single", lambda s: cond_is(s, C.COND_CREATED, "True"), "Created")
    assert condition(st, C.COND_VOLUME_NOT_SHARED) is None  # one node needs no shared volume
