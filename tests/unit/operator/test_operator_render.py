"""render.py: the children's manifests as pure functions of the parsed job."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from ltj_operator import constants as C
from ltj_operator import kueue
from ltj_operator.config import OperatorConfig
from ltj_operator.render import (render_children, render_network_policy, render_pod, render_pods,
                                 render_pvc, render_relay_role, render_relay_role_binding,
                                 render_relay_service_account, render_relay_token_secret, render_service,
                                 render_trainer_service_account, render_workload, selector, trainer_config,
                                 trainer_config_text)
from unit.operator.operator_helpers import UID, make_job

pytestmark = pytest.mark.unit

CONFIG = OperatorConfig(default_trainer_image="reg.example/ltj-trainer:9", operator_image="reg.example/ltj-operator:9")


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in container["env"]:
        assert item["name"] not in out, f"duplicate env {item['name']}"
        out[item["name"]] = item.get("value", item.get("valueFrom"))
    return out


def trainer(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == C.TRAINER_CONTAINER]
    return container


def test_env_for_one_cpu_node() -> None:
    job = make_job(name="tiny")
    pod = render_pod(job, 0, 0, CONFIG)
    env = env_of(trainer(pod))
    assert env == {
        "MASTER_ADDR": "tiny-node-0.tiny", "MASTER_PORT": "29500", "WORLD_SIZE": "1", "RANK": "0",
        "PET_NNODES": "1", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "tiny-node-0.tiny",
        "PET_MASTER_PORT": "29500", "LTJ_CONFIG": "/etc/ltj/trainer.yaml", "LTJ_JOB_NAME": "tiny", "LTJ_ATTEMPT": "0",
    }
    assert "resources" not in trainer(pod)  # no GPU, nothing requested
    assert trainer(pod)["image"] == "reg.example/ltj-trainer:9"
    assert "command" not in trainer(pod) and "args" not in trainer(pod)


def test_env_and_gpus_for_two_nodes_with_four_gpus() -> None:
    job = make_job(name="big", nodes=2, gpusPerNode=4, image="reg.example/custom:1",
                   resources={"requests": {"cpu": "8", "memory": "32Gi"}, "limits": {"memory": "64Gi"}})
    pods = render_pods(job, attempt=3, config=CONFIG)
    assert [p["metadata"]["name"] for p in pods] == ["big-node-0", "big-node-1"]
    for rank, pod in enumerate(pods):
        env = env_of(trainer(pod))
        assert env["WORLD_SIZE"] == "8" and env["RANK"] == str(rank) and env["PET_NODE_RANK"] == str(rank)
        assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "4"
        assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == "big-node-0.big"
        assert env["LTJ_ATTEMPT"] == "3"
        assert "LOCAL_RANK" not in env and "NODE_RANK" not in env  # torchrun sets those per process
        res = trainer(pod)["resources"]
        assert res["requests"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "4"}
        assert res["limits"] == {"memory": "64Gi", "nvidia.com/gpu": "4"}
        assert trainer(pod)["image"] == "reg.example/custom:1"
        assert pod["spec"]["hostname"] == f"big-node-{rank}" and pod["spec"]["subdomain"] == "big"
        assert pod["metadata"]["labels"][C.LABEL_NODE_RANK] == str(rank)
        assert pod["metadata"]["labels"][C.LABEL_ATTEMPT] == "3"
    cfg = trainer_config(job)
    assert (cfg["accelerator"], cfg["devices"], cfg["num_nodes"]) == ("gpu", 4, 2)


def test_user_env_is_preserved_after_the_distributed_env() -> None:
    job = make_job(podTemplate={
        "env": [{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": "RANK", "value": "7"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                {"name": "LTJ_MAX_EPOCHS", "value": "2"}],
        "envFrom": [{"configMapRef": {"name": "extra"}, "prefix": "X_"}],
    })
    container = trainer(render_pod(job, 0, 0, CONFIG))
    names = [e["name"] for e in container["env"]]
    assert names[-3:] == ["NCCL_DEBUG", "TOKEN", "LTJ_MAX_EPOCHS"]
    env = env_of(container)
    assert env["RANK"] == "0"  # the operator's value wins for distributed variables
    assert env["TOKEN"] == {"secretKeyRef": {"name": "s", "key": "k"}}
    assert container["envFrom"] == [{"configMapRef": {"name": "extra"}, "prefix": "X_"}]


def test_restart_attempt_resumes_from_the_given_checkpoint_overriding_user_resume() -> None:
    job = make_job(podTemplate={"env": [{"name": "LTJ_RESUME", "value": "none"}]})
    first = env_of(trainer(render_pod(job, 0, 0, CONFIG)))
    assert first["LTJ_RESUME"] == "none"  # the first attempt honours the user
    again = env_of(trainer(render_pod(job, 0, 2, CONFIG, resume_from="/output/checkpoints/last.ckpt")))
    assert again["LTJ_RESUME"] == "/output/checkpoints/last.ckpt"


def test_standard_labels_and_owner_reference_on_every_child() -> None:
    job = make_job(name="lbl", nodes=2, podTemplate={"metadata": {"labels": {"team": "vision", C.LABEL_NAME: "x"}}})
    children = render_children(job, CONFIG) + render_pods(job, 0, CONFIG)
    kinds = sorted(c["kind"] for c in children)
    assert kinds == ["NetworkPolicy", "PersistentVolumeClaim", "Pod", "Pod", "Role", "RoleBinding", "Service",
                     "ServiceAccount", "ServiceAccount"]
    components = {"Pod": "trainer", "Service": "service", "PersistentVolumeClaim": "output",
                  "ServiceAccount": "relay", "Role": "relay", "RoleBinding": "relay", "NetworkPolicy": "network-policy",
                  "lbl-trainer": "trainer"}
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "team-a"
        labels = meta["labels"]
        assert labels[C.LABEL_NAME] == "ltj"  # ours win over the template's
        assert labels[C.LABEL_INSTANCE] == "lbl" and labels[C.LABEL_JOB_NAME] == "lbl"
        assert labels[C.LABEL_MANAGED_BY] == "ltj-operator"
        assert labels[C.LABEL_COMPONENT] == components.get(meta["name"], components[child["kind"]])
        assert meta["ownerReferences"] == [{"apiVersion": "ltj.dev/v1alpha1", "kind": "LightningTrainingJob",
                                            "name": "lbl", "uid": UID, "controller": True,
                                            "blockOwnerDeletion": True}]
    pods = [c for c in children if c["kind"] == "Pod"]
    assert all(p["metadata"]["labels"]["team"] == "vision" for p in pods)
    # A child follows what it needs: the relay's binding its Role (the reconciler chains them in this order).
    order = [(c["kind"], c["metadata"]["name"]) for c in render_children(job, CONFIG)]
    assert order.index(("Role", "lbl-relay")) < order.index(("RoleBinding", "lbl-relay"))


def test_restricted_security_everywhere() -> None:
    job = make_job(nodes=2)
    for pod in render_pods(job, 0, CONFIG):
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert spec["restartPolicy"] == "Never"
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["runAsNonRoot"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}
        shm = [v for v in spec["volumes"] if v["name"] == C.VOLUME_SHM]
        assert shm == [{"name": C.VOLUME_SHM, "emptyDir": {"medium": "Memory"}}]
        mounts = {m["mountPath"]: m for m in trainer(pod)["volumeMounts"]}
        assert mounts["/dev/shm"]["name"] == C.VOLUME_SHM
        assert mounts["/etc/ltj"] == {"name": C.VOLUME_CONFIG, "mountPath": "/etc/ltj", "readOnly": True}
        assert C.SA_TOKEN_DIR not in mounts  # the trainer never sees a token
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, container["name"]
        # What the trainer writes outside its volumes goes to scratch emptyDirs: /tmp and its HOME.
        assert {mounts[p]["name"] for p in ("/tmp", "/home/ltj")} == {C.VOLUME_TMP, C.VOLUME_HOME}
        assert [v for v in spec["volumes"] if v["name"] in (C.VOLUME_TMP, C.VOLUME_HOME)] == [
            {"name": C.VOLUME_TMP, "emptyDir": {}}, {"name": C.VOLUME_HOME, "emptyDir": {}}]
        assert trainer(pod)["terminationMessagePath"] == "/dev/termination-log"
        assert trainer(pod)["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_relay_sidecar_only_in_rank_zero() -> None:
    job = make_job(name="rel", nodes=3)
    pods = render_pods(job, 0, CONFIG)
    assert "initContainers" in pods[0]["spec"]
    for pod in pods[1:]:
        assert "initContainers" not in pod["spec"]
        assert pod["spec"]["serviceAccountName"] == "rel-trainer"  # token-less, never the namespace's default
        assert all(v["name"] != C.VOLUME_RELAY_TOKEN for v in pod["spec"]["volumes"])
    spec = pods[0]["spec"]
    assert spec["serviceAccountName"] == "rel-relay"
    (relay,) = spec["initContainers"]
    assert relay["name"] == "relay" and relay["restartPolicy"] == "Always"
    assert relay["image"] == "reg.example/ltj-operator:9" and relay["command"] == ["ltj-relay"]
    env = env_of(relay)
    assert env["LTJ_JOB_NAME"] == "rel" and env["LTJ_EVENTS_FILE"] == f"/output/rel-{UID}/events.jsonl"
    assert env["LTJ_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    mounts = {m["mountPath"]: m for m in relay["volumeMounts"]}
    assert mounts["/output"]["readOnly"] is True and mounts["/output"]["subPath"] == "rel"
    assert mounts[C.SA_TOKEN_DIR] == {"name": C.VOLUME_RELAY_TOKEN, "mountPath": C.SA_TOKEN_DIR, "readOnly": True}
    assert relay["securityContext"]["readOnlyRootFilesystem"] is True
    (token,) = [v for v in spec["volumes"] if v["name"] == C.VOLUME_RELAY_TOKEN]
    sources = token["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}  # default audience
    assert {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in sources


def test_output_volume_existing_claim_with_sub_path() -> None:
    job = make_job(name="out", output={"volumeClaimTemplate": None, "claimName": "shared", "subPath": "runs/out"})
    assert render_pvc(job) is None
    assert all(c["kind"] != "PersistentVolumeClaim" for c in render_children(job, CONFIG))
    pod = render_pod(job, 0, 0, CONFIG)
    (vol,) = [v for v in pod["spec"]["volumes"] if v["name"] == C.VOLUME_OUTPUT]
    assert vol == {"name": C.VOLUME_OUTPUT, "persistentVolumeClaim": {"claimName": "shared"}}
    mounts = {m["mountPath"]: m for m in trainer(pod)["volumeMounts"]}
    assert mounts["/output"] == {"name": C.VOLUME_OUTPUT, "mountPath": "/output", "subPath": "runs/out"}


def test_output_claim_template() -> None:
    job = make_job(name="tpl", nodes=2, output={"volumeClaimTemplate": {"storage": "5Gi", "storageClassName": "fast"}})
    pvc = render_pvc(job)
    assert pvc is not None and pvc["metadata"]["name"] == "tpl-output"
    assert pvc["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "5Gi"}},
                           "storageClassName": "fast"}
    pod = render_pod(job, 1, 0, CONFIG)
    (vol,) = [v for v in pod["spec"]["volumes"] if v["name"] == C.VOLUME_OUTPUT]
    assert vol["persistentVolumeClaim"]["claimName"] == "tpl-output"
    assert "storageClassName" not in render_pvc(make_job(name="tpl2"))["spec"]  # cluster default


def test_headless_service_selects_the_pods() -> None:
    job = make_job(name="svc", nodes=2)
    svc = render_service(job)
    assert svc["metadata"]["name"] == "svc"
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["ports"] == [{"name": "dist", "port": 29500, "targetPort": 29500, "protocol": "TCP"}]
    for pod in render_pods(job, 5, CONFIG):
        labels = pod["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())


def test_relay_rbac_is_limited_to_this_job() -> None:
    job = make_job(name="rb")
    sa = render_relay_service_account(job)
    assert sa["metadata"]["name"] == "rb-relay" and sa["automountServiceAccountToken"] is False
    role = render_relay_role(job)
    # The relay reads and patches the status subresource (relay/kube.py), never the job itself.
    assert role["rules"] == [
        {"apiGroups": ["ltj.dev"], "resources": ["lightningtrainingjobs/status"], "verbs": ["get", "patch"],
         "resourceNames": ["rb"]},
    ]
    binding = render_relay_role_binding(job)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rb-relay"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rb-relay", "namespace": "team-a"}]


def test_pod_template_settings_are_passed_through() -> None:
    template = {
        "metadata": {"annotations": {"example.com/a": "1"}},
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
        "priorityClassName": "high",
        "schedulerName": "volcano",
        "imagePullSecrets": [{"name": "regcred"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "imagenet", "readOnly": True}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
        "terminationGracePeriodSeconds": 120,
    }
    job = make_job(imagePullPolicy="Always", podTemplate=template)
    pod = render_pod(job, 0, 0, CONFIG)
    spec = pod["spec"]
    assert pod["metadata"]["annotations"] == {"example.com/a": "1", C.ANNOTATION_TRAINER_CONFIG: trainer_config_text(job)}
    assert spec["nodeSelector"] == {"pool": "gpu"}
    assert spec["tolerations"] == template["tolerations"]
    assert spec["affinity"] == template["affinity"]
    assert spec["priorityClassName"] == "high" and spec["schedulerName"] == "volcano"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert template["volumes"][0] in spec["volumes"]
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in trainer(pod)["volumeMounts"]
    assert spec["terminationGracePeriodSeconds"] == 120
    assert trainer(pod)["imagePullPolicy"] == "Always"


def test_ranks_prefer_different_nodes_and_the_templates_anti_affinity_wins() -> None:
    spread = {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {
        "topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": selector("mnist")}}}]}
    # Preferred, never required: a cluster of one node (the local one) still runs a 2-node job.
    pods = render_pods(make_job(nodes=2), 0, CONFIG)
    assert [p["spec"]["affinity"] for p in pods] == [{"podAntiAffinity": spread}] * 2
    assert all(selector("mnist").items() <= p["metadata"]["labels"].items() for p in pods)  # it selects the gang
    assert "affinity" not in render_pod(make_job(nodes=1), 0, 0, CONFIG)["spec"]  # one pod: nothing to spread
    node = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]}}
    pod = render_pod(make_job(nodes=2, podTemplate={"affinity": {"nodeAffinity": node}}), 1, 0, CONFIG)
    assert pod["spec"]["affinity"] == {"nodeAffinity": node, "podAntiAffinity": spread}
    # The template's own podAntiAffinity replaces ours; an empty one turns it off.
    required = {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "topology.kubernetes.io/zone", "labelSelector": {"matchLabels": {"team": "a"}}}]}
    for theirs in (required, {}):
        pod = render_pod(make_job(nodes=2, podTemplate={"affinity": {"podAntiAffinity": theirs}}), 0, 0, CONFIG)
        assert pod["spec"]["affinity"] == {"podAntiAffinity": theirs}


def test_default_pull_secrets_reach_every_pod_after_the_jobs_own() -> None:
    config = OperatorConfig(default_image_pull_secrets=("regcred", "mirror"))
    job = make_job(nodes=2, podTemplate={"imagePullSecrets": [{"name": "team-cred"}, {"name": "regcred"}]})
    for pod in render_pods(job, 0, config):
        # Pod-wide: rank 0's relay sidecar is pulled with them too.
        assert pod["spec"]["imagePullSecrets"] == [{"name": "team-cred"}, {"name": "regcred"}, {"name": "mirror"}]
    (pod,) = render_pods(make_job(), 0, config)
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert "imagePullSecrets" not in render_pod(make_job(), 0, 0, CONFIG)["spec"]


def test_rendering_is_deterministic_and_leaves_the_job_untouched() -> None:
    job = make_job(nodes=2, model={"name": "m", "args": {"layers": [1, 2]}})
    before = make_job(nodes=2, model={"name": "m", "args": {"layers": [1, 2]}})
    first = render_children(job, CONFIG) + render_pods(job, 1, CONFIG, resume_from="/x")
    first[-1]["metadata"]["annotations"][C.ANNOTATION_TRAINER_CONFIG] = "mutated"  # a caller's edit must not leak
    first[0]["metadata"]["labels"]["x"] = "mutated"
    second = render_children(job, CONFIG) + render_pods(job, 1, CONFIG, resume_from="/x")
    assert second[-1]["metadata"]["annotations"][C.ANNOTATION_TRAINER_CONFIG] != "mutated"
    assert "x" not in second[0]["metadata"]["labels"]
    assert render_pods(job, 1, CONFIG, resume_from="/x") == second[-2:]
    assert job == before


def test_rank_out_of_range() -> None:
    with pytest.raises(ValueError):
        render_pod(make_job(nodes=2), 2, 0, CONFIG)


def test_trainer_config_round_trips_through_the_trainer_parser() -> None:
    trainer_config_mod = pytest.importorskip("ltj_trainer.config")
    job = make_job(
        nodes=2, gpusPerNode=2, model={"name": "resnet", "args": {"depth": 18}},
        data={"name": "csv", "args": {"path": "/data/x.csv"}, "batchSize": 16, "numWorkers": 2},
        training={"maxEpochs": 4, "precision": "bf16", "valCheckInterval": 0.5, "seed": 3, "testAfterFit": False,
                  "resume": "none", "monitor": {"metric": "val_acc", "mode": "max"},
                  "earlyStopping": {"enabled": True, "patience": 5, "minDelta": 0.01}, "checkpoint": {"saveTopK": 2}})
    raw = yaml.safe_load(trainer_config_text(job))
    parsed = trainer_config_mod.parse(raw, {})
    # Every rendered key reaches the trainer unchanged (nothing renamed, nothing dropped).
    assert {k: parsed.to_dict()[k] for k in trainer_config(job)} == trainer_config(job)
    assert (parsed.model_class, parsed.model_args, parsed.data_class, parsed.data_args) == (
        "resnet", {"depth": 18}, "csv", {"path": "/data/x.csv"})
    assert (parsed.devices, parsed.num_nodes, parsed.accelerator, parsed.precision) == (2, 2, "gpu", "bf16")
    assert (parsed.early_stop_metric, parsed.mode, parsed.early_stop_patience) == ("val_acc", "max", 5)
    assert (parsed.val_check_interval, parsed.save_top_k, parsed.resume) == (0.5, 2, "none")
    assert parsed.default_root_dir == f"/output/mnist-{UID}" and parsed.termination_log == "/dev/termination-log"
    assert parsed.events_path == env_of(render_pod(job, 0, 0, CONFIG)["spec"]["initContainers"][0])["LTJ_EVENTS_FILE"]
    # The pod's env is what the trainer sees on top of the file: a restart's LTJ_RESUME wins.
    last = f"/output/mnist-{UID}/checkpoints/last.ckpt"
    env = env_of(trainer(render_pod(job, 1, 1, CONFIG, resume_from=last)))
    overridden = trainer_config_mod.parse(raw, {k: v for k, v in env.items() if isinstance(v, str)})
    assert overridden.resume == last


def test_every_pod_carries_the_trainer_config_it_mounts_at_the_trainers_path() -> None:
    # A template annotation of the same key cannot replace it: the trainer would read the user's text.
    job = make_job(nodes=2, podTemplate={"metadata": {"annotations": {C.ANNOTATION_TRAINER_CONFIG: "mine"}}})
    for pod in render_pods(job, 0, CONFIG):
        assert pod["metadata"]["annotations"][C.ANNOTATION_TRAINER_CONFIG] == trainer_config_text(job)
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == C.VOLUME_CONFIG)
        (item,) = volume["downwardAPI"]["items"]
        assert item == {"path": C.CONFIG_FILE_NAME,
                        "fieldRef": {"fieldPath": f"metadata.annotations['{C.ANNOTATION_TRAINER_CONFIG}']"}}
        mount = next(m for m in trainer(pod)["volumeMounts"] if m["name"] == C.VOLUME_CONFIG)
        assert f"{mount['mountPath']}/{item['path']}" == C.CONFIG_PATH
    # A spec edit reaches the pods of the next attempt only: each gang keeps what it was created with.
    edited = make_job(nodes=2, training={"maxEpochs": 7})
    assert yaml.safe_load(render_pod(edited, 0, 1, CONFIG)["metadata"]["annotations"][C.ANNOTATION_TRAINER_CONFIG])[
        "max_epochs"] == 7


def test_trainer_config_for_cpu_defaults() -> None:
    cfg = yaml.safe_load(trainer_config_text(make_job()))
    assert cfg["accelerator"] == "cpu" and cfg["devices"] == 1 and cfg["num_nodes"] == 1
    assert cfg["model_class"] == "digits_cnn" and cfg["data_class"] == "digits"
    assert cfg["val_check_interval"] == 1.0 and cfg["early_stopping"] is True


def test_grace_period_defaults_above_torchruns_30s_and_user_value_wins() -> None:
    assert render_pod(make_job(name="g"), 0, 0, CONFIG)["spec"]["terminationGracePeriodSeconds"] == 60
    job = make_job(name="g", podTemplate={"terminationGracePeriodSeconds": 120})
    assert render_pod(job, 0, 0, CONFIG)["spec"]["terminationGracePeriodSeconds"] == 120


def test_scratch_follows_the_trainer_images_home() -> None:
    """HOME_DIR is where the trainer image says HOME is, and its working directory: caches under ~ and
    files a script writes where it runs land on the scratch volume; so does matplotlib's config dir."""
    from dockerfiles import instructions

    dockerfile = instructions(Path(__file__).resolve().parents[3] / "trainer_image" / "Dockerfile")
    env = " ".join(arg for ins, arg in dockerfile if ins == "ENV").split()
    assert f"HOME={C.HOME_DIR}" in env
    assert [arg for ins, arg in dockerfile if ins == "WORKDIR"][-1] == C.HOME_DIR
    assert any(word.startswith(f"MPLCONFIGDIR={C.TMP_DIR}/") for word in env)


def test_a_job_mounting_its_own_scratch_replaces_ours() -> None:
    job = make_job(podTemplate={"volumes": [{"name": "fast", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
                                "volumeMounts": [{"name": "fast", "mountPath": "/tmp/"}]})
    pod = render_pod(job, 0, 0, CONFIG)
    volumes = [v["name"] for v in pod["spec"]["volumes"]]
    assert C.VOLUME_TMP not in volumes and C.VOLUME_HOME in volumes and "fast" in volumes
    mounts = [(m["name"], m["mountPath"]) for m in trainer(pod)["volumeMounts"]]
    assert ("fast", "/tmp/") in mounts and (C.VOLUME_HOME, C.HOME_DIR) in mounts
    assert [path for _, path in mounts].count("/tmp/") == 1 and "/tmp" not in [path for _, path in mounts]


def test_relay_is_limited_in_cpu_and_memory() -> None:
    (relay,) = render_pod(make_job(), 0, 0, CONFIG)["spec"]["initContainers"]
    assert relay["resources"] == {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}


def test_network_policy_admits_only_the_jobs_own_pods() -> None:
    job = make_job(name="np", nodes=3)
    policy = render_network_policy(job)
    assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["metadata"]["name"] == "np"
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]  # egress is the platform's to limit
    (rule,) = spec["ingress"]
    (peer,) = rule["from"]
    assert list(peer) == ["podSelector"]  # no namespaceSelector: this namespace only
    # No port list: the rendezvous port and NCCL's or Gloo's ephemeral ports are all the gang's.
    assert "ports" not in rule
    pods = render_pods(job, 0, CONFIG)
    other = render_pods(make_job(name="other", nodes=1), 0, CONFIG)

    def selected(selector: dict[str, Any]) -> set[str]:
        return {p["metadata"]["name"] for p in pods + other
                if selector["matchLabels"].items() <= p["metadata"]["labels"].items()}

    assert selected(spec["podSelector"]) == selected(peer["podSelector"]) == {"np-node-0", "np-node-1", "np-node-2"}
    ports = {p["containerPort"] for pod in pods for p in trainer(pod)["ports"]}
    assert ports == {C.DIST_PORT}  # the port the policy guards is the rendezvous the pods expose


def test_network_policy_is_left_out_when_the_operator_is_configured_so() -> None:
    off = OperatorConfig(network_policy=False)
    job = make_job(name="np")
    assert "NetworkPolicy" not in [c["kind"] for c in render_children(job, off)]
    assert render_children(job, off) == [c for c in render_children(job, CONFIG) if c["kind"] != "NetworkPolicy"]


def test_ranks_without_a_relay_run_as_the_jobs_token_less_trainer_account() -> None:
    job = make_job(name="acct", nodes=3)
    account = render_trainer_service_account(job)
    assert account is not None and account["metadata"]["name"] == "acct-trainer"
    assert account["automountServiceAccountToken"] is False
    assert account in render_children(job, CONFIG)  # admission refuses a pod whose account is missing
    assert render_relay_token_secret(job) is None  # rank 0 projects the relay's own token
    assert [p["spec"]["serviceAccountName"] for p in render_pods(job, 0, CONFIG)] == [
        "acct-relay", "acct-trainer", "acct-trainer"]
    assert all(p["spec"]["automountServiceAccountToken"] is False for p in render_pods(job, 0, CONFIG))


def test_a_named_account_runs_every_rank_and_the_relay_keeps_its_own_token() -> None:
    job = make_job(name="wi", nodes=2, podTemplate={"serviceAccountName": "dataset-reader"})
    pods = render_pods(job, 0, CONFIG)
    for pod in pods:
        spec = pod["spec"]
        assert spec["serviceAccountName"] == "dataset-reader"
        # The account's own automount setting decides whether its token is mounted (cloud SDKs read it there).
        assert "automountServiceAccountToken" not in spec
        assert all(m["mountPath"] != C.SA_TOKEN_DIR for m in trainer(pod)["volumeMounts"])
        sources = [s for v in spec["volumes"] for s in v.get("projected", {}).get("sources", [])]
        assert not any("serviceAccountToken" in s for s in sources)  # it would be the user's account's
    assert render_trainer_service_account(job) is None
    # The relay's token: a token Secret of its account, made right after that account, owned by the job.
    secret = render_relay_token_secret(job)
    assert secret is not None
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["name"] == "wi-relay-token"
    assert secret["metadata"]["annotations"] == {"kubernetes.io/service-account.name": "wi-relay"}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == UID and "data" not in secret
    children = render_children(job, CONFIG)
    names = [(c["kind"], c["metadata"]["name"]) for c in children]
    at = names.index(("ServiceAccount", "wi-relay"))
    assert children[at + 1] == secret
    assert ("ServiceAccount", "wi-trainer") not in names
    # Only rank 0's relay container mounts it, at the path the relay reads its in-cluster credentials from.
    spec = pods[0]["spec"]
    (relay,) = spec["initContainers"]
    assert {"name": C.VOLUME_RELAY_TOKEN, "mountPath": C.SA_TOKEN_DIR, "readOnly": True} in relay["volumeMounts"]
    (token,) = [v for v in spec["volumes"] if v["name"] == C.VOLUME_RELAY_TOKEN]
    sources = token["projected"]["sources"]
    assert sources[0] == {"secret": {"name": "wi-relay-token", "items": [{"key": "token", "path": "token"}]}}
    assert {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in sources
    assert all(v["name"] != C.VOLUME_RELAY_TOKEN for v in pods[1]["spec"]["volumes"])


# --- Kueue: the Workload and the admission's placement ---------------------------------------------


def test_the_workload_asks_for_what_the_pods_request_in_full_pod_sets() -> None:
    job = make_job(name="big", nodes=3, gpusPerNode=2, resources={"requests": {"cpu": "4", "memory": "8Gi"}},
                   podTemplate={"priorityClassName": "team", "nodeSelector": {"zone": "z1"}})
    job = replace(job, meta=replace(job.meta, queue="gpus"))
    wl = render_workload(job, CONFIG, kueue.Priority(value=100, ref={"group": "scheduling.k8s.io",
                                                                       "kind": "PriorityClass", "name": "team"}))
    assert (wl["apiVersion"], wl["kind"]) == ("kueue.x-k8s.io/v1beta2", "Workload")
    assert wl["metadata"]["name"] == kueue.workload_name(job)
    assert wl["metadata"]["ownerReferences"] == [{"apiVersion": C.API_VERSION, "kind": C.KIND, "name": "big",
                                                  "uid": UID, "controller": True, "blockOwnerDeletion": True}]
    labels = wl["metadata"]["labels"]
    assert labels[C.LABEL_KUEUE_JOB_UID] == UID and labels[C.LABEL_JOB_NAME] == "big"
    assert labels[C.LABEL_MANAGED_BY] == C.MANAGED_BY
    spec = wl["spec"]
    assert spec["queueName"] == "gpus" and spec["priority"] == 100
    assert spec["priorityClassRef"] == {"group": "scheduling.k8s.io", "kind": "PriorityClass", "name": "team"}
    assert [(p["name"], p["count"]) for p in spec["podSets"]] == [("master", 1), ("worker", 2)]
    pods = {0: render_pod(job, 0, 0, CONFIG), 1: render_pod(job, 1, 0, CONFIG)}
    for podset, rank in zip(spec["podSets"], (0, 1)):
        template, pod = podset["template"]["spec"], pods[rank]["spec"]
        # The requests the pods make, container by container (the relay sidecar of rank 0 included).
        for key in ("containers", "initContainers"):
            assert [(c["name"], c.get("resources"), c.get("restartPolicy")) for c in template.get(key, [])] == \
                   [(c["name"], c.get("resources"), c.get("restartPolicy")) for c in pod.get(key, [])]
        for key in ("nodeSelector", "affinity", "priorityClassName"):
            assert template[key] == pod[key]
        assert "env" not in template["containers"][0] and "volumes" not in template
    assert [c["name"] for c in spec["podSets"][0]["template"]["spec"]["initContainers"]] == [C.RELAY_CONTAINER]
    assert "initContainers" not in spec["podSets"][1]["template"]["spec"]
    assert spec["podSets"][0]["template"]["spec"]["containers"][0]["resources"]["requests"][C.GPU_RESOURCE] == "2"


def test_a_one_node_job_is_one_pod_set_without_a_priority_class() -> None:
    job = make_job(name="one")
    job = replace(job, meta=replace(job.meta, queue="gpus"))
    spec = render_workload(job, CONFIG, kueue.Priority())["spec"]
    assert [(p["name"], p["count"]) for p in spec["podSets"]] == [("master", 1)]
    assert spec["priority"] == 0 and "priorityClassRef" not in spec


def test_a_placement_adds_node_labels_tolerations_and_kueues_pod_labels() -> None:
    job = make_job(name="big", nodes=2, podTemplate={
        "nodeSelector": {"zone": "z1"}, "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]})
    placement = kueue.PodSetPlacement("worker", {C.GPU_RESOURCE: "a100"}, {"pool": "a100"},
                                      ({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},
                                       {"key": "spot", "operator": "Exists"}),
                                      {C.LABEL_KUEUE_PODSET: "worker", C.LABEL_KUEUE_LOCAL_QUEUE: "gpus"})
    plain, placed = render_pod(job, 1, 0, CONFIG), render_pod(job, 1, 0, CONFIG, placement=placement)
    assert placed["spec"]["nodeSelector"] == {"zone": "z1", "pool": "a100"}
    # A toleration the job has already is not repeated.
    assert placed["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},
                                             {"key": "spot", "operator": "Exists"}]
    assert placed["metadata"]["labels"] == {**plain["metadata"]["labels"], C.LABEL_KUEUE_PODSET: "worker",
                                            C.LABEL_KUEUE_LOCAL_QUEUE: "gpus"}
    for key in ("nodeSelector", "tolerations"):
        del plain["spec"][key], placed["spec"][key]
    assert {**placed, "metadata": plain["metadata"]} == plain  # nothing else changes
