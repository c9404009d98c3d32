"""Pure functions from a parsed job to the manifests of its children (plain dicts).

No I/O and no clock: the same inputs always give the same manifests, which is what makes the
reconciler idempotent and these functions testable without a cluster. Names are deterministic
(`<job>-node-<i>`, Service `<job>`, `<job>-output`, `<job>-relay`, `<job>-trainer`), and every child
carries the standard labels and a controller owner reference to the job.
"""

from __future__ import annotations

from typing import Any, Iterable

import yaml
from ltj_api import trainer as contract

from . import constants as C
from . import kueue
from .config import OperatorConfig
from .spec import Job, output_claim_name, pod_name, relay_name, relay_token_name, thaw, trainer_account_name

Manifest = dict[str, Any]

DEFAULT_TERMINATION_GRACE_SECONDS = 60
HOSTNAME_TOPOLOGY_KEY = "kubernetes.io/hostname"
# libyaml's emitter where PyYAML has it: the same text as the pure-Python one, made in C (rendered for
# every pod the operator creates).
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


# --- metadata --------------------------------------------------------------------------------


def labels(job: Job, component: str) -> dict[str, str]:
    return {
        C.LABEL_NAME: C.APP_NAME,
        C.LABEL_INSTANCE: job.meta.name,
        C.LABEL_COMPONENT: component,
        C.LABEL_MANAGED_BY: C.MANAGED_BY,
        C.LABEL_JOB_NAME: job.meta.name,
    }


def selector(job_name: str) -> dict[str, str]:
    """What selects the job's trainer pods (Service selector, pod listing)."""
    return {C.LABEL_JOB_NAME: job_name, C.LABEL_MANAGED_BY: C.MANAGED_BY, C.LABEL_COMPONENT: C.COMPONENT_TRAINER}


def owner_reference(job: Job) -> dict[str, Any]:
    return {
        "apiVersion": C.API_VERSION,
        "kind": C.KIND,
        "name": job.meta.name,
        "uid": job.meta.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(job: Job, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": job.meta.namespace,
        "labels": labels(job, component),
        "ownerReferences": [owner_reference(job)],
    }


# --- the trainer config (its keys: ltj_api.trainer.CONFIG_KEYS) -------------------------------


def job_dir(job: Job) -> str:
    """The job's own directory on its output volume (event log, checkpoints), as trainer and relay see it."""
    return contract.job_dir(job.meta.name, job.meta.uid)


def trainer_config(job: Job) -> dict[str, Any]:
    s = job.spec
    t = s.training
    return {
        "model_class": s.model.name,
        "model_args": thaw(s.model.args),
        "data_class": s.data.name,
        "data_args": thaw(s.data.args),
        "batch_size": s.data.batch_size,
        "num_workers": s.data.num_workers,
        "max_epochs": t.max_epochs,
        "early_stopping": t.early_stopping.enabled,
        "early_stop_metric": t.monitor.metric,
        "early_stop_patience": t.early_stopping.patience,
        "early_stop_min_delta": t.early_stopping.min_delta,
        "mode": t.monitor.mode,
        "val_check_interval": t.val_check_interval,
        "precision": t.precision,
        "accelerator": "gpu" if s.gpus_per_node > 0 else "cpu",
        "devices": s.procs_per_node,
        "num_nodes": s.nodes,
        "default_root_dir": job_dir(job),
        "seed": t.seed,
        "save_top_k": t.checkpoint.save_top_k,
        "test_after_fit": t.test_after_fit,
        "resume": t.resume,
        "termination_log": C.TERMINATION_LOG,
    }


def trainer_config_text(job: Job) -> str:
    """The trainer config as the trainer reads it (C.CONFIG_PATH). Each pod carries it in an annotation
    (the way Argo hands its executor the template): a gang keeps the config it was created with (spec
    edits apply to the next attempt), and no other object is written before the pods."""
    return yaml.dump(trainer_config(job), Dumper=_YAML_DUMPER, sort_keys=False, default_flow_style=False)


# --- Service, PVC, RBAC ------------------------------------------------------------------------


def render_service(job: Job) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(job, job.meta.name, C.COMPONENT_SERVICE),
        "spec": {
            "clusterIP": "None",
            # Ranks resolve the master before it is Ready (there is no readiness probe to pass).
            "publishNotReadyAddresses": True,
            "selector": selector(job.meta.name),
            "ports": [{"name": C.DIST_PORT_NAME, "port": C.DIST_PORT, "targetPort": C.DIST_PORT,
                       "protocol": "TCP"}],
        },
    }


def render_pvc(job: Job) -> Manifest | None:
    """The output claim when the spec asks for a template (None for an existing claim)."""
    template = job.spec.output.volume_claim_template
    if template is None:
        return None
    spec: dict[str, Any] = {
        "accessModes": list(template.access_modes),
        "resources": {"requests": {"storage": template.storage}},
    }
    if template.storage_class_name is not None:
        spec["storageClassName"] = template.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(job, output_claim_name(job.meta.name), C.COMPONENT_OUTPUT),
        "spec": spec,
    }


def render_relay_service_account(job: Job) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(job, relay_name(job.meta.name), C.COMPONENT_RELAY),
        # Only the relay container mounts a token, through its own projected volume.
        "automountServiceAccountToken": False,
    }


def render_relay_token_secret(job: Job) -> Manifest | None:
    """The relay's token when rank 0 runs as the user's account (a projected token is always the pod's own
    account's): a token Secret of the relay's account, filled by the token controller, deleted (and with it
    the token revoked) with the job. None when rank 0 runs as the relay's account."""
    if job.spec.pod_template.service_account_name is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": C.SERVICE_ACCOUNT_TOKEN_TYPE,
        "metadata": {**_metadata(job, relay_token_name(job.meta.name), C.COMPONENT_RELAY),
                     "annotations": {C.ANNOTATION_SERVICE_ACCOUNT_NAME: relay_name(job.meta.name)}},
    }


def render_trainer_service_account(job: Job) -> Manifest | None:
    """The account of the ranks that hold no relay: no token and no rights, so a rank never runs as the
    namespace's `default` account (which others may grant rights to). None when the job names its own."""
    if job.spec.pod_template.service_account_name is not None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(job, trainer_account_name(job.meta.name), C.COMPONENT_TRAINER),
        "automountServiceAccountToken": False,
    }


def render_relay_role(job: Job) -> Manifest:
    # The relay reads and patches the status subresource only (relay/kube.py), never the job itself.
    name = job.meta.name
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(job, relay_name(name), C.COMPONENT_RELAY),
        "rules": [
            {"apiGroups": [C.GROUP], "resources": [f"{C.PLURAL}/status"], "verbs": ["get", "patch"],
             "resourceNames": [name]},
        ],
    }


def render_relay_role_binding(job: Job) -> Manifest:
    name = relay_name(job.meta.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(job, name, C.COMPONENT_RELAY),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": job.meta.namespace}],
    }


def render_network_policy(job: Job) -> Manifest:
    """Ingress to the job's pods only from the job's own pods. The rendezvous (MASTER_PORT) and the
    connections NCCL or Gloo then open between ranks on ephemeral ports take no credentials, so the
    rule names no port: every port of a rank is for its gang alone. Egress is the platform's to limit.
    Policies add up: another one selecting these pods can still admit more."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(job, job.meta.name, C.COMPONENT_NETWORK_POLICY),
        "spec": {
            "podSelector": {"matchLabels": selector(job.meta.name)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": selector(job.meta.name)}}]}],
        },
    }


def render_children(job: Job, config: OperatorConfig) -> list[Manifest]:
    """Everything but the pods, each after any child it needs; all of them exist before a gang's pods
    are created. A pod needs some at creation (admission refuses a pod whose ServiceAccount is missing:
    the relay's on rank 0, the trainer's on the others; a pod mounts the claim and the relay's token
    Secret); the NetworkPolicy comes first so no rank ever listens unprotected; the relay's RoleBinding
    and the headless Service are not needed at creation, but a gang never runs beside a binding or a
    Service of its names that the job does not control.

    Order: the relay's token Secret, where there is one, directly follows the relay's ServiceAccount (the
    token controller deletes a token Secret whose account it cannot find), and the RoleBinding follows
    the Role it binds (without the `bind` verb the operator binds only a Role that exists: the API server
    checks that the operator holds what the Role grants)."""
    token, trainer = render_relay_token_secret(job), render_trainer_service_account(job)
    pvc = render_pvc(job)
    return [render_relay_service_account(job), *([token] if token else []), render_relay_role(job),
            *([trainer] if trainer else []), *([pvc] if pvc is not None else []),
            *([render_network_policy(job)] if config.network_policy else []),
            render_relay_role_binding(job), render_service(job)]


# --- pods (the env, paths and port the trainer reads: ltj_api.trainer) -------------------------


def _container_security_context() -> dict[str, Any]:
    # A read-only root: what a process writes goes to a volume (the output, /dev/shm, the trainer's scratch).
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": C.RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": C.RUN_AS_USER,
        "runAsGroup": C.RUN_AS_USER,
        "fsGroup": C.RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def distributed_env(job: Job, rank: int, attempt: int) -> list[dict[str, str]]:
    s = job.spec
    master = f"{pod_name(job.meta.name, 0)}.{job.meta.name}"
    pairs = [
        ("MASTER_ADDR", master),
        ("MASTER_PORT", str(C.DIST_PORT)),
        ("WORLD_SIZE", str(s.world_size)),
        ("RANK", str(rank)),
        ("PET_NNODES", str(s.nodes)),
        ("PET_NPROC_PER_NODE", str(s.procs_per_node)),
        ("PET_NODE_RANK", str(rank)),
        ("PET_MASTER_ADDR", master),
        ("PET_MASTER_PORT", str(C.DIST_PORT)),
        (C.ENV_CONFIG, C.CONFIG_PATH),
        (C.ENV_JOB_NAME, job.meta.name),
        (C.ENV_ATTEMPT, str(attempt)),
    ]
    return [{"name": k, "value": v} for k, v in pairs]


def trainer_env(job: Job, rank: int, attempt: int, resume_from: str | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = distributed_env(job, rank, attempt)
    # spec parsing already dropped user values for the operator-owned names.
    for item in job.spec.pod_template.env:
        if resume_from is not None and item["name"] == C.ENV_RESUME:
            continue  # a restart must continue from the job's own checkpoint
        env.append(thaw(item))
    if resume_from is not None:
        env.append({"name": C.ENV_RESUME, "value": resume_from})
    return env


def _output_mount(job: Job, read_only: bool) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": C.VOLUME_OUTPUT, "mountPath": C.OUTPUT_DIR}
    if job.spec.output.sub_path:
        mount["subPath"] = job.spec.output.sub_path
    if read_only:
        mount["readOnly"] = True
    return mount


def _scratch(job: Job) -> list[tuple[str, str]]:
    """(directory, volume) of the trainer's scratch emptyDirs, but for a directory where the job mounts a
    volume of its own (a bigger or faster scratch)."""
    taken = {m["mountPath"].rstrip("/") for m in job.spec.pod_template.volume_mounts}
    return [(path, volume) for path, volume in C.SCRATCH_VOLUMES if path not in taken]


def _resources(job: Job) -> dict[str, Any]:
    s = job.spec
    requests = dict(s.resources.requests)
    limits = dict(s.resources.limits)
    if s.gpus_per_node > 0:
        # Extended resources must be requested as limits; requests default to them but be explicit.
        requests[C.GPU_RESOURCE] = str(s.gpus_per_node)
        limits[C.GPU_RESOURCE] = str(s.gpus_per_node)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _trainer_container(job: Job, rank: int, attempt: int, config: OperatorConfig,
                       resume_from: str | None) -> dict[str, Any]:
    s = job.spec
    container: dict[str, Any] = {
        "name": C.TRAINER_CONTAINER,
        "image": s.image or config.default_trainer_image,
        # No command: the image's ENTRYPOINT (ltj-train, a torchrun launcher) starts the ranks.
        "env": trainer_env(job, rank, attempt, resume_from),
        "ports": [{"name": C.DIST_PORT_NAME, "containerPort": C.DIST_PORT, "protocol": "TCP"}],
        "volumeMounts": [
            {"name": C.VOLUME_CONFIG, "mountPath": C.CONFIG_DIR, "readOnly": True},
            _output_mount(job, read_only=False),
            {"name": C.VOLUME_SHM, "mountPath": C.SHM_DIR},
            *({"name": volume, "mountPath": path} for path, volume in _scratch(job)),
            *(thaw(m) for m in s.pod_template.volume_mounts),
        ],
        "terminationMessagePath": C.TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _container_security_context(),
    }
    if s.image_pull_policy:
        container["imagePullPolicy"] = s.image_pull_policy
    if s.pod_template.env_from:
        container["envFrom"] = [thaw(e) for e in s.pod_template.env_from]
    resources = _resources(job)
    if resources:
        container["resources"] = resources
    return container


def _relay_container(job: Job, config: OperatorConfig) -> dict[str, Any]:
    return {
        "name": C.RELAY_CONTAINER,
        "image": config.operator_image,
        "imagePullPolicy": config.relay_image_pull_policy,
        "command": list(C.RELAY_COMMAND),
        # restartPolicy Always on an init container makes it a native sidecar: it runs beside the
        # trainer, and the kubelet stops it (SIGTERM: drain to EOF) once the trainer has exited.
        "restartPolicy": "Always",
        "env": [
            {"name": "LTJ_JOB_NAME", "value": job.meta.name},
            {"name": "LTJ_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "LTJ_EVENTS_FILE", "value": contract.events_path(job_dir(job))},
        ],
        "volumeMounts": [
            _output_mount(job, read_only=True),
            {"name": C.VOLUME_RELAY_TOKEN, "mountPath": C.SA_TOKEN_DIR, "readOnly": True},
        ],
        # A whole CPU never throttles the relay's one busy thread (the GIL), and with it a namespace whose
        # quota counts limits.cpu admits the pod when the job limits its trainer.
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _container_security_context(),
    }


def _relay_token_volume(job: Job, config: OperatorConfig) -> dict[str, Any]:
    # The same three files as the kubelet's default kube-api-access volume, so the relay's in-cluster
    # client config works unchanged; the audience is left at the API server's default. A projected token
    # is always the pod's own account's: when rank 0 runs as the user's account, the token comes from
    # the relay's token Secret instead, and naming its key keeps the pod from starting before the token
    # controller has filled it (a missing key fails the mount, which the kubelet retries).
    token: dict[str, Any] = (
        {"serviceAccountToken": {"path": "token", "expirationSeconds": config.relay_token_expiration_seconds}}
        if job.spec.pod_template.service_account_name is None
        else {"secret": {"name": relay_token_name(job.meta.name), "items": [{"key": "token", "path": "token"}]}})
    return {
        "name": C.VOLUME_RELAY_TOKEN,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                token,
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                                            "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ],
        },
    }


def _volumes(job: Job, rank: int, config: OperatorConfig) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": C.VOLUME_CONFIG, "downwardAPI": {"items": [
            {"path": C.CONFIG_FILE_NAME,
             "fieldRef": {"fieldPath": f"metadata.annotations['{C.ANNOTATION_TRAINER_CONFIG}']"}}]}},
        {"name": C.VOLUME_OUTPUT, "persistentVolumeClaim": {"claimName": job.spec.output.claim(job.meta.name)}},
        {"name": C.VOLUME_SHM, "emptyDir": {"medium": "Memory"}},
        *({"name": volume, "emptyDir": {}} for _, volume in _scratch(job)),
    ]
    if rank == 0:
        volumes.append(_relay_token_volume(job, config))
    volumes.extend(thaw(v) for v in job.spec.pod_template.volumes)
    return volumes


def _affinity(job: Job) -> dict[str, Any]:
    """The pod template's affinity, plus, for several nodes, a preferred anti-affinity among the job's pods
    per node: the scheduler puts the ranks on different nodes where it can (one pod per node), and still
    on one node where there is only one (a local cluster). A podAntiAffinity in the template replaces it
    (`podAntiAffinity: {}` turns it off): the user's choice wins."""
    affinity = thaw(job.spec.pod_template.affinity) if job.spec.pod_template.affinity is not None else {}
    if job.spec.nodes > 1 and "podAntiAffinity" not in affinity:
        affinity["podAntiAffinity"] = {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {"topologyKey": HOSTNAME_TOPOLOGY_KEY,
                                "labelSelector": {"matchLabels": selector(job.meta.name)}},
        }]}
    return affinity


def render_pod(job: Job, rank: int, attempt: int, config: OperatorConfig, resume_from: str | None = None,
               placement: kueue.PodSetPlacement | None = None) -> Manifest:
    """Pod `<job>-node-<rank>` of gang attempt `attempt`.

    ``resume_from`` (restart attempts only) becomes LTJ_RESUME so every rank continues from the same
    checkpoint. ``placement``: what Kueue's admission puts on the pods of the rank's pod set."""
    s = job.spec
    pt = s.pod_template
    if not 0 <= rank < s.nodes:
        raise ValueError(f"rank {rank} out of range for {s.nodes} nodes")
    name = pod_name(job.meta.name, rank)
    pod_labels = {**pt.labels, **labels(job, C.COMPONENT_TRAINER),
                  C.LABEL_NODE_RANK: str(rank), C.LABEL_ATTEMPT: str(attempt)}
    metadata = _metadata(job, name, C.COMPONENT_TRAINER)
    metadata["labels"] = pod_labels
    metadata["annotations"] = {**pt.annotations, C.ANNOTATION_TRAINER_CONFIG: trainer_config_text(job)}

    spec: dict[str, Any] = {
        "hostname": name,
        "subdomain": job.meta.name,
        "restartPolicy": "Never",
        # Service links would flood the env in busy namespaces and can shadow MASTER_PORT-like names.
        "enableServiceLinks": False,
        "securityContext": _pod_security_context(),
        "containers": [_trainer_container(job, rank, attempt, config, resume_from)],
        "volumes": _volumes(job, rank, config),
    }
    if pt.service_account_name is not None:
        # Workload identity: every rank is the user's account, its token mounted as the account says
        # (the relay's mount at the token's path keeps that token out of the relay container).
        spec["serviceAccountName"] = pt.service_account_name
    else:
        # Rank 0's projected token is the relay's (only the relay container mounts it); the other ranks
        # get an account of their own with no token and no rights.
        spec["serviceAccountName"] = relay_name(job.meta.name) if rank == 0 else trainer_account_name(job.meta.name)
        spec["automountServiceAccountToken"] = False
    if rank == 0:
        spec["initContainers"] = [_relay_container(job, config)]
    if pt.node_selector:
        spec["nodeSelector"] = dict(pt.node_selector)
    if pt.tolerations:
        spec["tolerations"] = [thaw(t) for t in pt.tolerations]
    affinity = _affinity(job)
    if affinity:
        spec["affinity"] = affinity
    if pt.priority_class_name:
        spec["priorityClassName"] = pt.priority_class_name
    if pt.scheduler_name:
        spec["schedulerName"] = pt.scheduler_name
    # The job's own secrets, then the operator's defaults; pod-wide, so the relay's image is pulled
    # with them too.
    pull_secrets = dict.fromkeys((*pt.image_pull_secrets, *config.default_image_pull_secrets))
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    # torchrun gives its workers 30 s after SIGTERM; the default leaves room to save a checkpoint.
    spec["terminationGracePeriodSeconds"] = (pt.termination_grace_period_seconds
                                             if pt.termination_grace_period_seconds is not None
                                             else DEFAULT_TERMINATION_GRACE_SECONDS)
    if placement is not None:
        _place(metadata, spec, placement)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _place(metadata: dict[str, Any], spec: dict[str, Any], placement: kueue.PodSetPlacement) -> None:
    """As jobframework's podset.Merge: the flavors' node labels join the nodeSelector (kueue.placement
    has refused a conflicting one), their tolerations are added once each, and the pod is labelled with
    its pod set and queues."""
    metadata["labels"] = {**metadata["labels"], **placement.labels}
    if placement.node_selector:
        spec["nodeSelector"] = {**spec.get("nodeSelector", {}), **placement.node_selector}
    tolerations = list(spec.get("tolerations", []))
    tolerations += [thaw(t) for t in placement.tolerations if thaw(t) not in tolerations]
    if tolerations:
        spec["tolerations"] = tolerations


# What of a pod Kueue reads to admit it (requests, sidecars included, as the API server's PodRequests
# sums them) and to pick a flavor (node selection, tolerations, priority): a Workload's pod set templates
# carry only this, so no trainer config or env is copied into the Workload.
_SCHEDULING_FIELDS = ("nodeSelector", "tolerations", "affinity", "priorityClassName", "schedulerName", "restartPolicy")
_CONTAINER_FIELDS = ("name", "image", "restartPolicy", "resources")


def render_workload(job: Job, config: OperatorConfig, priority: kueue.Priority) -> Manifest:
    """The job's Kueue Workload (kueue.x-k8s.io/v1beta2), as jobframework makes one for its jobs: named by
    kueue.workload_name, controlled by the job, labelled with its uid, one pod set per kind of pod (rank
    0, which runs the relay sidecar, and the other ranks) of the full counts, so Kueue admits the whole
    gang or none of it. The templates are the pods' own (render_pod), cut to what Kueue reads."""
    pod_sets = []
    for name, count in kueue.podset_counts(job):
        pod = render_pod(job, 0 if name == kueue.PODSET_MASTER else 1, 0, config)["spec"]
        template = {key: pod[key] for key in _SCHEDULING_FIELDS if key in pod}
        for key in ("initContainers", "containers"):
            if key in pod:
                template[key] = [{k: c[k] for k in _CONTAINER_FIELDS if k in c} for c in pod[key]]
        pod_sets.append({"name": name, "count": count, "template": {"spec": template}})
    metadata = _metadata(job, kueue.workload_name(job), C.COMPONENT_WORKLOAD)
    if job.meta.uid:
        metadata["labels"][C.LABEL_KUEUE_JOB_UID] = job.meta.uid
    spec: dict[str, Any] = {"queueName": job.meta.queue, "podSets": pod_sets, "priority": priority.value}
    if priority.ref is not None:
        spec["priorityClassRef"] = dict(priority.ref)
    return {"apiVersion": C.KUEUE_API, "kind": "Workload", "metadata": metadata, "spec": spec}


def render_pods(job: Job, attempt: int, config: OperatorConfig, resume_from: str | None = None,
                ranks: Iterable[int] | None = None) -> list[Manifest]:
    wanted = range(job.spec.nodes) if ranks is None else sorted(ranks)
    return [render_pod(job, rank, attempt, config, resume_from) for rank in wanted]
