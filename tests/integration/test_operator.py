"""The operator in-process (KopfRunner) against the real API server, scheduler and garbage collector.

No training runs here (that is the e2e tier): the jobs' pods are pinned to a node label no node has
(or ask for more GPUs than any node offers), so the scheduler never binds them and kwok never drives
them. The tests then play the kubelet themselves by patching the pods' status subresource
(Running, terminated with an exit code) and check what the operator makes of it: children, owner
references, idempotence, events, gang restarts, terminal phases, cleanPodPolicy, deadlines, suspension.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from kubetest import Kube, apply, condition, dump, get_job, job, pods, sample, status, wait_for
from ltj_api.trainer import job_dir
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
def pinned(name: str, **spec: Any) -> dict[str, Any]:
    """The CPU sample (2 nodes, an operator-made RWX claim, cleanPodPolicy Running, backoffLimit 2), unrunnable."""
    manifest = job(name, **spec)
    manifest["spec"].setdefault("podTemplate", {})["nodeSelector"] = dict(NOWHERE)
    return manifest


def wait_job(kube: Kube, ns: str, name: str, pred: Callable[[dict[str, Any]], Any], what: str,
             timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (lambda st: st if pred(st) else None)(status(kube, ns, name)), timeout,
                    f"{name}: {what}", interval=0.25, diagnose=lambda: dump(kube, ns))


def wait_phase(kube: Kube, ns: str, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    return wait_job(kube, ns, name, lambda st: st.get("phase") == phase, f"phase {phase}", timeout)


def reconciled_since_change(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    """Change the job's spec where nothing running reads it (the next attempt's seed; a finished job does not
    take it) and wait until the operator records the new generation: it has reconciled the job since, so
    anything it would (wrongly) do to the job by then is done. An absence checked after this can fail; one
    checked after a sleep cannot. (Not maxEpochs: a higher one trains a succeeded job on.)"""
    seed = get_job(kube, ns, name)["spec"]["training"].get("seed", 0)
    changed = json.loads(kube.kubectl("patch", "ltj", name, "-n", ns, "--type=merge", "-o", "json", "-p",
                                      json.dumps({"spec": {"training": {"seed": seed + 1}}})).stdout)
    generation = changed["metadata"]["generation"]
    return wait_job(kube, ns, name, lambda st: st.get("observedGeneration") == generation,
                    f"observedGeneration {generation}")


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

    return wait_for(ready, timeout, f"{name}: {nodes} pod(s) of attempt {attempt}", interval=0.25,
                    diagnose=lambda: dump(kube, ns))


@contextlib.contextmanager
def job_statuses(kube: Kube, ns: str, name: str) -> Iterator[list[dict[str, Any]]]:
    """Every status of the job that the API server shows while the block runs (a kubectl watch), from its
    creation (the CRD's default status until the operator's first record); the list fills when the block ends."""
    # To a file, not a pipe: a pipe nobody reads while the block runs fills up (statuses are large) and
    # stalls the watch.
    with tempfile.TemporaryFile("w+") as sink:
        watch = subprocess.Popen([str(kube.bin_dir / "kubectl"), f"--kubeconfig={kube.kubeconfig}", "get",
                                  C.PLURAL, "-n", ns, "--watch", "--output-watch-events", "-o", "json"],
                                 stdout=sink, stderr=subprocess.DEVNULL, text=True)
        statuses: list[dict[str, Any]] = []
        try:
            yield statuses
            time.sleep(1)  # the watch has seen what the API server holds by now
        finally:
            watch.terminate()
            watch.wait(timeout=30)
        sink.seek(0)
        out = sink.read()
    decoder, at = json.JSONDecoder(), 0
    while out[at:].strip():
        try:
            event, at = decoder.raw_decode(out, len(out) - len(out[at:].lstrip()))
        except json.JSONDecodeError:
            break  # the last event, cut off as the watch was stopped
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

    ev = wait_for(find, timeout, f"{type_} event {reason} on {name}", interval=0.25, diagnose=seen)
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


CHILD_KINDS = "services,persistentvolumeclaims,serviceaccounts,secrets,roles,rolebindings,networkpolicies,pods"


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
                "ServiceAccount/kids-trainer": C.COMPONENT_TRAINER,
                "Role/kids-relay": C.COMPONENT_RELAY, "RoleBinding/kids-relay": C.COMPONENT_RELAY,
                "NetworkPolicy/kids": C.COMPONENT_NETWORK_POLICY,
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
                              "default_root_dir": job_dir(name, ref["uid"])}.items()

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

    # Ingress to the gang only from the gang, on every port (rendezvous, then NCCL's or Gloo's); no egress rule.
    policy = found["NetworkPolicy/kids"]["spec"]
    gang_selector = {"matchLabels": svc["selector"]}
    assert policy == {"podSelector": gang_selector, "policyTypes": ["Ingress"],
                      "ingress": [{"from": [{"podSelector": gang_selector}]}]}

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
        # A read-only root: the trainer's scratch is on emptyDirs.
        assert {mounts[C.TMP_DIR]["name"], mounts[C.HOME_DIR]["name"]} == {C.VOLUME_TMP, C.VOLUME_HOME}
        assert volumes[C.VOLUME_TMP]["emptyDir"] == volumes[C.VOLUME_HOME]["emptyDir"] == {}
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, container["name"]
        if rank == 0:
            # The native sidecar survived the API server's round trip (an older client model would drop it).
            (relay,) = spec["initContainers"]
            assert relay["name"] == C.RELAY_CONTAINER and relay["restartPolicy"] == "Always"
            assert relay["command"] == list(C.RELAY_COMMAND) and relay["image"] == OPERATOR_IMAGE
            assert spec["serviceAccountName"] == "kids-relay" and C.VOLUME_RELAY_TOKEN in volumes
        else:
            assert "initContainers" not in spec and C.VOLUME_RELAY_TOKEN not in volumes
            # Never the namespace's default account, which others may grant rights to.
            assert spec["serviceAccountName"] == "kids-trainer"
    assert found["ServiceAccount/kids-trainer"]["automountServiceAccountToken"] is False
    wait_event(kube, namespace, name, "Normal", R.CREATING_PODS, "kids-node-0, kids-node-1 (attempt 0)")


def test_a_named_account_runs_every_rank_and_only_the_relay_holds_the_relays_token(kube: Kube, namespace: str,
                                                                                   operator: Any,
                                                                                   tmp_path: Path) -> None:
    """Workload identity: the pods run as the user's account (its token where cloud SDKs look for it), and the
    relay's token comes from a token Secret of the relay's account that the token controller fills."""
    from ltj_localcluster.controlplane import ClusterInfo
    from ltj_operator.relay.kube import ApiError, Endpoint, JobStatusClient
    from ltj_operator.spec import relay_token_name

    kube.kubectl("create", "serviceaccount", "dataset-reader", "-n", namespace)
    manifest = pinned("ident")
    manifest["spec"]["podTemplate"]["serviceAccountName"] = "dataset-reader"
    name = apply(kube, namespace, manifest)
    ranks = gang(kube, namespace, name, attempt=0)
    for pod in ranks:
        spec = pod["spec"]
        assert spec["serviceAccountName"] == "dataset-reader"
        (trainer,) = spec["containers"]
        token_mount = {m["mountPath"]: m["name"] for m in trainer["volumeMounts"]}.get(C.SA_TOKEN_DIR)
        assert token_mount and token_mount.startswith("kube-api-access-")  # the account's own, as it automounts
        assert C.VOLUME_RELAY_TOKEN not in {m["name"] for m in trainer["volumeMounts"]}
    (relay,) = ranks[0]["spec"]["initContainers"]
    # Only its own token: admission mounts the account's token into no container that has a mount there.
    assert [m["name"] for m in relay["volumeMounts"] if m["mountPath"] == C.SA_TOKEN_DIR] == [C.VOLUME_RELAY_TOKEN]
    (volume,) = [v for v in ranks[0]["spec"]["volumes"] if v["name"] == C.VOLUME_RELAY_TOKEN]
    assert volume["projected"]["sources"][0]["secret"]["name"] == relay_token_name(name)
    assert "ServiceAccount/ident-trainer" not in children(kube, namespace, name)

    secret = wait_for(lambda: (lambda s: s if (s.get("data") or {}).get("token") else None)(
        kube.get("secret", relay_token_name(name), "-n", namespace)), 30, "the token controller to fill the Secret")
    assert secret["metadata"]["ownerReferences"] == [owner_ref(kube, namespace, name)]
    token = tmp_path / "token"
    token.write_bytes(base64.b64decode(secret["data"]["token"]))
    info = ClusterInfo.load(kube.run_dir)
    client = JobStatusClient(Endpoint(info.server, token, Path(info.pki_dir) / "ca.crt"), namespace, name)

    def relay_reads_its_status() -> bool:
        try:
            return client.get()["metadata"]["name"] == name
        except ApiError as err:
            assert err.status == 403, err  # until the authorizer has seen the relay's RoleBinding
            return False

    try:
        assert wait_for(relay_reads_its_status, 30, "the Secret's token to act as the job's relay")
    finally:
        client.close()


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
    """The first gang's children are made before its pods, and its deferred first record that would only
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
    assert len(before) == 9  # seven children and two pods

    operator()  # a fresh operator lists the job and reconciles it from scratch
    # Prove the new operator is at work: it must notice the pods running.
    run(kube, namespace, "idem-node-0", "idem-node-1")
    st = wait_phase(kube, namespace, name, C.PHASE_RUNNING)
    operator()
    reconciled_since_change(kube, namespace, name)  # the third operator's passes, startup's included, are done
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
    wait_for(lambda: not children(kube, namespace, name), 60, "the garbage collector to delete every child",
             diagnose=lambda: json.dumps(sorted(children(kube, namespace, name))))


def test_a_foreign_claim_is_neither_used_nor_adopted(kube: Kube, namespace: str, operator: Any) -> None:
    """Decision: a child name taken by an object the job does not control (a user's, or a deleted namesake's
    not yet garbage-collected) is left alone; the job reports it (Created=False + a Warning event) and
    creates no pods until the name is free, then carries on by itself."""
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "clash-output"},
             "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Mi"}},
                      "storageClassName": "someone-elses"}}
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(claim))
    name = apply(kube, namespace, pinned("clash"))
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "False", R.ALREADY_EXISTS),
                  "Created=False (the name is taken)")
    message = condition(st, C.COND_CREATED)["message"]
    assert "PersistentVolumeClaim clash-output exists and is not controlled by this job" in message, message
    wait_event(kube, namespace, name, "Warning", R.ALREADY_EXISTS, "PersistentVolumeClaim clash-output exists")
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


# Each child of a job `@job` but its claim (above) and pods, as someone else may have made it first.
IN_THE_WAY: dict[str, dict[str, Any]] = {
    "Service": {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "@job"},
                "spec": {"ports": [{"port": 80}]}},
    "ServiceAccount": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "@job-relay"}},
    "ServiceAccount-trainer": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "@job-trainer"}},
    "Role": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "@job-relay"},
             "rules": []},
    "RoleBinding": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": "@job-relay"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                    "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "@ns"}]},
    "NetworkPolicy": {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "@job"},
                      "spec": {"podSelector": {}}},
}


def put_in_the_way(kube: Kube, ns: str, key: str, job_name: str, controller: dict[str, Any]) -> dict[str, Any]:
    obj = json.loads(json.dumps(IN_THE_WAY[key]).replace("@job", job_name).replace("@ns", ns))
    obj["metadata"]["ownerReferences"] = [controller]
    kube.kubectl("create", "-n", ns, "-f", "-", input=yaml.safe_dump(obj))
    return kube.get(obj["kind"].lower(), obj["metadata"]["name"], "-n", ns)


@pytest.mark.parametrize("key", sorted(IN_THE_WAY))
def test_a_child_in_the_way_is_adopted_only_when_the_job_controls_it(kube: Kube, namespace: str, operator: Any,
                                                                      key: str) -> None:
    """Decision: every child exists and is the job's before any pod is created. An object already there under a
    child's name is used only when the job is its controller; one with another controller (or none) is left
    alone, the job says so (Created=False, reason AlreadyExists, naming it) and creates no pod."""
    kind = IN_THE_WAY[key]["kind"]
    # Someone else's: controlled by another object of the namespace (a real one: the garbage collector
    # deletes a dependent whose owner does not exist).
    kube.kubectl("create", "configmap", "owner", "-n", namespace)
    other = kube.get("configmap", "owner", "-n", namespace)["metadata"]
    theirs = put_in_the_way(kube, namespace, key, "theirs", {"apiVersion": "v1", "kind": "ConfigMap",
                                                             "name": other["name"], "uid": other["uid"],
                                                             "controller": True})
    name = apply(kube, namespace, pinned("theirs"))
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "False", R.ALREADY_EXISTS),
                  "Created=False, AlreadyExists")
    message = condition(st, C.COND_CREATED)["message"]
    assert f"{kind} {theirs['metadata']['name']} exists and is not controlled by this job" in message, message
    assert f"ConfigMap {other['name']}" in message, message
    wait_event(kube, namespace, name, "Warning", R.ALREADY_EXISTS, f"{kind} {theirs['metadata']['name']} exists")
    assert pods(kube, namespace, name) == [] and st["phase"] == C.PHASE_PENDING
    left = kube.get(kind.lower(), theirs["metadata"]["name"], "-n", namespace)["metadata"]
    assert left["resourceVersion"] == theirs["metadata"]["resourceVersion"]  # left alone

    # The job's own (made by an earlier pass, say): adopted as it is.
    name = apply(kube, namespace, pinned("ours", runPolicy={"suspend": True}))
    wait_phase(kube, namespace, name, C.PHASE_SUSPENDED)
    ours = put_in_the_way(kube, namespace, key, "ours", owner_ref(kube, namespace, name))
    kube.kubectl("patch", "ltj", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"runPolicy":{"suspend":false}}}')
    gang(kube, namespace, name, attempt=0)
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_CREATED, "True", R.PODS_CREATED), "Created")
    assert kube.get(kind.lower(), ours["metadata"]["name"], "-n", namespace)["metadata"]["uid"] == ours["metadata"]["uid"]


def test_a_refused_child_of_the_first_gang_is_reported_and_no_pod_is_made(kube: Kube, namespace: str,
                                                                            operator: Any) -> None:
    """A new job's first pass makes its children (the relay's ServiceAccount and Role among them) in the round
    trip that observes its pods. One the API server refuses (a quota of no ServiceAccounts) is reported
    (Created=False), no pod is created without it, and the gang comes once it gets through."""
    kube.kubectl("create", "quota", "no-accounts", "-n", namespace, "--hard=count/serviceaccounts=0")
    wait_for(lambda: kube.get("resourcequota", "no-accounts", "-n", namespace).get("status", {}).get("hard"), 30,
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


def test_an_invalid_edit_never_fails_a_running_job(kube: Kube, namespace: str, operator: Callable[[], Any]) -> None:
    """Decision: an edit the API server admits but the operator refuses (a resume path outside the job's
    own directory, which only the operator can tell: it knows the job's uid) leaves a job that had a valid
    spec running on that spec (status.appliedSpec, which a restarted operator reads too), with
    EditApplied=False naming the field and the generation it runs on; a later valid edit is applied and
    turns the condition True."""
    name = apply(kube, namespace, pinned("edited"))
    old = gang(kube, namespace, name, attempt=0)
    run(kube, namespace, "edited-node-0", "edited-node-1")
    wait_phase(kube, namespace, name, C.PHASE_RUNNING)

    kube.kubectl("patch", "ltj", name, "-n", namespace, "--type=merge", "-p",
                 json.dumps({"spec": {"training": {"resume": "/output/someone-else/last.ckpt"}}}))
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_EDIT_APPLIED, "False", R.INVALID_EDIT),
                  "EditApplied=False")
    message = condition(st, C.COND_EDIT_APPLIED)["message"]
    assert "spec.training.resume: must be a checkpoint in this job's own directory" in message, message
    assert "runs on its spec of generation 1" in message, message
    assert (st["phase"], st["restarts"], st["observedGeneration"], st["appliedGeneration"]) == (C.PHASE_RUNNING, 0,
                                                                                                2, 1)
    wait_event(kube, namespace, name, "Warning", R.INVALID_EDIT, "spec.training.resume")
    assert [p["metadata"]["uid"] for p in gang(kube, namespace, name, attempt=0)] == [p["metadata"]["uid"]
                                                                                      for p in old]

    operator()  # a fresh operator finds the spec the job runs on in its status
    exit_with(kube, namespace, "edited-node-1", 137)
    new = gang(kube, namespace, name, attempt=1)
    config = C.ANNOTATION_TRAINER_CONFIG
    assert [p["metadata"]["annotations"][config] for p in new] == [p["metadata"]["annotations"][config] for p in old]
    st = status(kube, namespace, name)
    assert st["restarts"] == 1 and cond_is(st, C.COND_EDIT_APPLIED, "False", R.INVALID_EDIT)

    kube.kubectl("patch", "ltj", name, "-n", namespace, "--type=merge", "-p",
                 json.dumps({"spec": {"training": {"resume": "last"}}}))
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_EDIT_APPLIED, "True", R.EDIT_APPLIED),
                  "EditApplied=True")
    assert st["appliedGeneration"] == st["observedGeneration"] == 3 and st["phase"] != C.PHASE_FAILED


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
        assert env[C.ENV_RESUME] == "last"  # no checkpoint reported yet: the trainer resumes from the latest
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
    wait_for(lambda: pod_names(kube, namespace, name) == ["fatal-node-1"], 30, "only the failed pod to remain",
             diagnose=lambda: dump(kube, namespace))
    wait_event(kube, namespace, name, "Warning", R.NON_RETRYABLE_EXIT_CODE, "fatal-node-1")
    wait_event(kube, namespace, name, "Normal", R.CLEANED_UP, "cleanPodPolicy Running")
    # Terminal is terminal: nothing recreates the deleted pod.
    reconciled_since_change(kube, namespace, name)
    assert pod_names(kube, namespace, name) == ["fatal-node-1"]
    assert status(kube, namespace, name)["phase"] == C.PHASE_FAILED


SUMMARY = {"best_checkpoint": "/output/checkpoints/digits_cnn_epoch=03-val_loss=0.12.ckpt", "best_score": 0.12,
           "monitor": "val_loss", "epochs": 4, "early_stopped": False, "test_metrics": {"test_acc": 0.97},
           "last_seq": 17}


@pytest.mark.parametrize("policy,rank1_exits,remaining", [
    ("All", "before", []),
    # Rank 1 exits 0 only after the job is recorded Succeeded (its pod's report came late): it keeps its pod
    # and logs. (A rank still running FINISH_GRACE_SECONDS later is deleted: test_operator_status.)
    ("Running", "after", ["{}-node-0", "{}-node-1"]),
    ("None", "never", ["{}-node-0", "{}-node-1"]),
])
def test_success_honours_clean_pod_policy(kube: Kube, namespace: str, operator: Any, policy: str, rank1_exits: str,
                                          remaining: list[str]) -> None:
    name = apply(kube, namespace, pinned(f"done-{policy.lower()}", runPolicy={"cleanPodPolicy": policy}))
    gang(kube, namespace, name, attempt=0)
    run(kube, namespace, f"{name}-node-0", f"{name}-node-1")
    wait_phase(kube, namespace, name, C.PHASE_RUNNING)
    if rank1_exits == "before":
        exit_with(kube, namespace, f"{name}-node-1", 0)
    exit_with(kube, namespace, f"{name}-node-0", 0, json.dumps(SUMMARY))
    st = wait_phase(kube, namespace, name, C.PHASE_SUCCEEDED)
    if rank1_exits == "after":
        exit_with(kube, namespace, f"{name}-node-1", 0)
    succeeded = condition(st, C.COND_SUCCEEDED)
    assert succeeded["status"] == "True" and succeeded["reason"] == R.MAX_EPOCHS_REACHED
    assert "best val_loss 0.12" in succeeded["message"] and st["completionTime"]
    # The trainer's termination summary is the result when no relay reported (none runs here).
    assert st["result"] == {"source": "terminationMessage", "bestCheckpoint": SUMMARY["best_checkpoint"],
                            "bestScore": 0.12, "monitor": "val_loss", "epochs": 4, "earlyStopped": False,
                            "testMetrics": {"test_acc": 0.97}}
    wait_event(kube, namespace, name, "Normal", R.MAX_EPOCHS_REACHED, "training finished")
    want = sorted(p.format(name) for p in remaining)
    wait_for(lambda: pod_names(kube, namespace, name) == want, 30, f"pods {want} to remain (cleanPodPolicy {policy})",
             diagnose=lambda: dump(kube, namespace))
    reconciled_since_change(kube, namespace, name)  # and they stay
    assert pod_names(kube, namespace, name) == want
    assert status(kube, namespace, name)["phase"] == C.PHASE_SUCCEEDED


def test_a_succeeded_job_given_more_epochs_trains_on_and_other_edits_are_refused_aloud(
        kube: Kube, namespace: str, operator: Any) -> None:
    name = apply(kube, namespace, pinned("more", runPolicy={"backoffLimit": 0}))
    gang(kube, namespace, name, attempt=0)
    run(kube, namespace, f"{name}-node-0", f"{name}-node-1")
    wait_phase(kube, namespace, name, C.PHASE_RUNNING)
    exit_with(kube, namespace, f"{name}-node-1", 0)
    exit_with(kube, namespace, f"{name}-node-0", 0, json.dumps(SUMMARY))
    wait_phase(kube, namespace, name, C.PHASE_SUCCEEDED)
    training = get_job(kube, namespace, name)["spec"]["training"]
    max_epochs, seed = training["maxEpochs"], training["seed"]

    # Another field: not applied, said once, no pod made or deleted.
    kube.kubectl("patch", "ltj", name, "-n", namespace, "--type=merge", "-p",
                 json.dumps({"spec": {"training": {"seed": seed + 1}}}))
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_EDIT_APPLIED, "False", R.JOB_FINISHED),
                  "EditApplied=False")
    assert st["phase"] == C.PHASE_SUCCEEDED and st["appliedGeneration"] == 1
    assert st["appliedSpec"]["training"]["seed"] == seed
    ev = wait_event(kube, namespace, name, "Warning", R.EDIT_IGNORED, "spec.training.seed")
    assert "create a new job" in ev["message"] and SUMMARY["best_checkpoint"] in ev["message"]
    assert pod_names(kube, namespace, name) == [f"{name}-node-0", f"{name}-node-1"]

    # Back to the spec on record with a higher maxEpochs: trains on, a new attempt that is no restart.
    kube.kubectl("patch", "ltj", name, "-n", namespace, "--type=merge", "-p",
                 json.dumps({"spec": {"training": {"seed": seed, "maxEpochs": max_epochs + 5}}}))
    st = wait_job(kube, namespace, name, lambda s: s.get("attempt") == 1, "attempt 1")
    assert st["restarts"] == 0 and st.get("completionTime") is None and st["appliedGeneration"] == 3
    assert cond_is(st, C.COND_SUCCEEDED, "False", R.TRAINING_EXTENDED)
    assert cond_is(st, C.COND_EDIT_APPLIED, "True", R.EDIT_APPLIED)
    wait_event(kube, namespace, name, "Normal", R.TRAINING_EXTENDED,
               f"maxEpochs raised from {max_epochs} to {max_epochs + 5}: training on from")
    ranks = gang(kube, namespace, name, attempt=1)
    assert env_of(ranks[0])[C.ENV_RESUME]  # resumes from the last checkpoint
    run(kube, namespace, f"{name}-node-0", f"{name}-node-1")
    st = wait_phase(kube, namespace, name, C.PHASE_RUNNING)
    exit_with(kube, namespace, f"{name}-node-1", 0)
    exit_with(kube, namespace, f"{name}-node-0", 0, json.dumps({**SUMMARY, "epochs": max_epochs + 5}))
    st = wait_phase(kube, namespace, name, C.PHASE_SUCCEEDED)
    assert st["result"]["epochs"] == max_epochs + 5 and st["completionTime"] and st["restarts"] == 0


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
    wait_for(lambda: pod_names(kube, namespace, name) == [], 30, "the pending pods to be deleted",
             diagnose=lambda: dump(kube, namespace))
    wait_event(kube, namespace, name, "Warning", R.DEADLINE_EXCEEDED, "activeDeadlineSeconds")


def test_suspend_deletes_the_pods_and_resume_starts_a_new_attempt(kube: Kube, namespace: str,
                                                                  operator: Any) -> None:
    name = apply(kube, namespace, pinned("pause"))
    gang(kube, namespace, name, attempt=0)
    run(kube, namespace, "pause-node-0", "pause-node-1")
    wait_phase(kube, namespace, name, C.PHASE_RUNNING)

    kube.kubectl("patch", "ltj", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"runPolicy":{"suspend":true}}}')
    st = wait_phase(kube, namespace, name, C.PHASE_SUSPENDED)
    wait_for(lambda: pod_names(kube, namespace, name) == [], 30, "the suspended job's pods to be deleted")
    assert cond_is(st, C.COND_SUSPENDED, "True", R.SUSPENDED) and cond_is(st, C.COND_RUNNING, "False")
    assert "startTime" not in st and st["restarts"] == 0  # the deadline clock restarts on resumption
    wait_event(kube, namespace, name, "Normal", R.SUSPENDED, "deleting 2 pod(s)")
    reconciled_since_change(kube, namespace, name)  # suspended means suspended: no pod comes back
    assert pod_names(kube, namespace, name) == [] and status(kube, namespace, name)["phase"] == C.PHASE_SUSPENDED

    kube.kubectl("patch", "ltj", name, "-n", namespace, "--type=merge", "-p",
                 '{"spec":{"runPolicy":{"suspend":false}}}')
    resumed = gang(kube, namespace, name, attempt=1)
    for pod in resumed:
        assert env_of(pod)["LTJ_ATTEMPT"] == "1" and env_of(pod)[C.ENV_RESUME] == "last"
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_SUSPENDED, "False", R.RESUMED), "resumed")
    assert st["attempt"] == 1 and st["restarts"] == 0 and st["startTime"]
    assert st["phase"] in (C.PHASE_PENDING, C.PHASE_RUNNING)
    wait_event(kube, namespace, name, "Normal", R.RESUMED, "the job resumed (attempt 1)")
    run(kube, namespace, "pause-node-0", "pause-node-1")
    wait_phase(kube, namespace, name, C.PHASE_RUNNING)


def test_a_queued_job_on_a_cluster_without_kueue_waits_without_pods_and_says_why(kube: Kube, namespace: str,
                                                                                  operator: Any) -> None:
    manifest = pinned("queued")
    manifest["metadata"]["labels"] = {C.LABEL_KUEUE_QUEUE: "gpus"}
    name = apply(kube, namespace, manifest)
    st = wait_job(kube, namespace, name, lambda s: cond_is(s, C.COND_QUOTA_RESERVED, "False", R.KUEUE_NOT_INSTALLED),
                  "the job held for Kueue")
    assert st["phase"] == C.PHASE_PENDING and pod_names(kube, namespace, name) == []
    message = condition(st, C.COND_QUOTA_RESERVED)["message"]
    assert f"{C.LABEL_KUEUE_QUEUE}=gpus" in message and "Kueue is not installed" in message
    wait_event(kube, namespace, name, "Warning", R.KUEUE_NOT_INSTALLED, f"{C.LABEL_KUEUE_QUEUE}=gpus")

    kube.kubectl("label", "ltj", name, "-n", namespace, f"{C.LABEL_KUEUE_QUEUE}-")
    gang(kube, namespace, name, attempt=0)
    wait_job(kube, namespace, name, lambda s: condition(s, C.COND_QUOTA_RESERVED) is None, "the hold's condition gone")


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


def test_jobs_sharing_a_claim_and_subpath_get_directories_of_their_own(kube: Kube, namespace: str,
                                                                        operator: Any) -> None:
    """Decision (issue 19, point 6): a job's event log and checkpoints live in <output>/<name>-<uid>, so two
    jobs on one claim (even one directory of it) never read or resume from each other's files."""
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "team"},
             "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "ltj-local",
                      "resources": {"requests": {"storage": "1Gi"}}}}
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(claim))
    dirs = {}
    for name in ("first", "second"):
        manifest = pinned(name, nodes=1)
        manifest["spec"]["output"] = {"claimName": "team", "subPath": "runs"}
        apply(kube, namespace, manifest)
        [pod] = gang(kube, namespace, name, attempt=0, nodes=1)
        uid = get_job(kube, namespace, name)["metadata"]["uid"]
        config = yaml.safe_load(pod["metadata"]["annotations"][C.ANNOTATION_TRAINER_CONFIG])
        [relay] = pod["spec"]["initContainers"]
        events_file = next(e["value"] for e in relay["env"] if e["name"] == "LTJ_EVENTS_FILE")
        assert config["default_root_dir"] == f"/output/{name}-{uid}"
        assert events_file == f"/output/{name}-{uid}/events.jsonl"
        dirs[name] = config["default_root_dir"]
    assert dirs["first"] != dirs["second"]
