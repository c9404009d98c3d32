"""Names the operator and its tests use: one place, no magic strings elsewhere.

What the trainer or a client must agree on is defined in the contract package ``ltj_api`` and
imported here, so operator code reads every name as ``C.<NAME>``.
"""

from __future__ import annotations

from typing import Final

from ltj_api import (  # noqa: F401  (the operator's names for the contract)
    API_VERSION, CRD_NAME, GROUP, KIND, LABEL_ATTEMPT, LABEL_JOB_NAME, LABEL_NODE_RANK, PLURAL, SHORT_NAME,
    SINGULAR, VERSION,
)
from ltj_api.trainer import (  # noqa: F401
    CONFIG_DIR, CONFIG_FILE_NAME, CONFIG_PATH, DIST_PORT, ENV_ATTEMPT, ENV_CONFIG, ENV_JOB_NAME, ENV_RESUME,
    EVENTS_PATH, EXIT_INVALID_CONFIG, OUTPUT_DIR, SIGNAL_EXIT_BASE, TERMINATION_LOG, TORCH_DISTRIBUTED_ENV,
)

# The longest job name for which `<name>-node-<index>` stays a DNS label (also enforced in the CRD).
MAX_JOB_NAME_LENGTH: Final = 49
MAX_NODES: Final = 256
MAX_GPUS_PER_NODE: Final = 16
GPU_RESOURCE: Final = "nvidia.com/gpu"

# --- labels (ltj_api defines the ltj.dev ones) -------------------------------------------------
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"

# A job that carries it asks Kueue to admit it from that LocalQueue (Kueue's own label).
LABEL_KUEUE_QUEUE: Final = "kueue.x-k8s.io/queue-name"
# The job's label naming the WorkloadPriorityClass of its Workload (Kueue's own label).
LABEL_KUEUE_PRIORITY_CLASS: Final = "kueue.x-k8s.io/priority-class"
# What Kueue's integrations label a Workload (the job's uid) and the pods of an admitted job with.
LABEL_KUEUE_JOB_UID: Final = "kueue.x-k8s.io/job-uid"
LABEL_KUEUE_PODSET: Final = "kueue.x-k8s.io/podset"
LABEL_KUEUE_LOCAL_QUEUE: Final = "kueue.x-k8s.io/local-queue-name"
LABEL_KUEUE_CLUSTER_QUEUE: Final = "kueue.x-k8s.io/cluster-queue-name"
# Served exactly where Kueue is installed: what the operator discovers before holding a queued job.
KUEUE_GROUP: Final = "kueue.x-k8s.io"
KUEUE_VERSION: Final = "v1beta2"
KUEUE_API: Final = f"{KUEUE_GROUP}/{KUEUE_VERSION}"
KUEUE_WORKLOADS: Final = "workloads"

APP_NAME: Final = "ltj"
MANAGED_BY: Final = "ltj-operator"

COMPONENT_TRAINER: Final = "trainer"
COMPONENT_SERVICE: Final = "service"
COMPONENT_OUTPUT: Final = "output"
COMPONENT_RELAY: Final = "relay"
COMPONENT_NETWORK_POLICY: Final = "network-policy"
COMPONENT_WORKLOAD: Final = "workload"

# --- what the pods look like (paths, env and port the trainer reads: ltj_api.trainer) -----------
TRAINER_CONTAINER: Final = "trainer"
RELAY_CONTAINER: Final = "relay"
RELAY_COMMAND: Final = ("ltj-relay",)
DIST_PORT_NAME: Final = "dist"
# Each pod carries its trainer config in this annotation; a downward API volume makes it CONFIG_PATH.
ANNOTATION_TRAINER_CONFIG: Final = f"{GROUP}/trainer-config"
SHM_DIR: Final = "/dev/shm"
# The trainer container's root filesystem is read-only: these are its writable scratch (emptyDirs).
# /tmp: tempfile, torchrun's worker logs, MPLCONFIGDIR, torch.compile's caches; HOME (the trainer
# image's, trainer_image/Dockerfile): ~/.cache (torch hub, pip), ~/.triton, ~/.nv, and the working directory.
TMP_DIR: Final = "/tmp"
HOME_DIR: Final = "/home/ltj"
SA_TOKEN_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"
# A Secret of this type, annotated with an account's name, gets a token of that account from the token controller.
SERVICE_ACCOUNT_TOKEN_TYPE: Final = "kubernetes.io/service-account-token"
ANNOTATION_SERVICE_ACCOUNT_NAME: Final = "kubernetes.io/service-account.name"
RUN_AS_USER: Final = 1000

# Pod volume names the operator owns; user volumes may not reuse them.
VOLUME_CONFIG: Final = "ltj-config"
VOLUME_OUTPUT: Final = "ltj-output"
VOLUME_SHM: Final = "ltj-shm"
VOLUME_RELAY_TOKEN: Final = "ltj-relay-token"
VOLUME_TMP: Final = "ltj-tmp"
VOLUME_HOME: Final = "ltj-home"
RESERVED_VOLUME_NAMES: Final = frozenset({VOLUME_CONFIG, VOLUME_OUTPUT, VOLUME_SHM, VOLUME_RELAY_TOKEN, VOLUME_TMP,
                                          VOLUME_HOME})
# (scratch directory, its volume); a user volume mounted at one of these directories replaces ours.
SCRATCH_VOLUMES: Final = ((TMP_DIR, VOLUME_TMP), (HOME_DIR, VOLUME_HOME))
RESERVED_MOUNT_PATHS: Final = frozenset({CONFIG_DIR, OUTPUT_DIR, SHM_DIR})

# Env the operator owns in trainer containers: a user value for these is dropped.
DISTRIBUTED_ENV: Final = frozenset({*TORCH_DISTRIBUTED_ENV, ENV_CONFIG, ENV_JOB_NAME, ENV_ATTEMPT})

# --- status ----------------------------------------------------------------------------------
PHASE_PENDING: Final = "Pending"
PHASE_RUNNING: Final = "Running"
PHASE_RESTARTING: Final = "Restarting"
PHASE_SUSPENDED: Final = "Suspended"
PHASE_SUCCEEDED: Final = "Succeeded"
PHASE_FAILED: Final = "Failed"
PHASES: Final = (PHASE_PENDING, PHASE_RUNNING, PHASE_RESTARTING, PHASE_SUSPENDED, PHASE_SUCCEEDED, PHASE_FAILED)
TERMINAL_PHASES: Final = frozenset({PHASE_SUCCEEDED, PHASE_FAILED})

COND_CREATED: Final = "Created"
COND_RUNNING: Final = "Running"
COND_RESTARTING: Final = "Restarting"
COND_SUSPENDED: Final = "Suspended"
COND_SUCCEEDED: Final = "Succeeded"
COND_FAILED: Final = "Failed"
COND_EARLY_STOPPED: Final = "EarlyStopped"
COND_CHECKPOINT_SAVED: Final = "CheckpointSaved"
COND_UNSCHEDULABLE: Final = "Unschedulable"
COND_VOLUME_NOT_SHARED: Final = "VolumeNotShared"
COND_STALLED: Final = "Stalled"
COND_QUOTA_RESERVED: Final = "QuotaReserved"
COND_EDIT_APPLIED: Final = "EditApplied"
CONDITION_TYPES: Final = (
    COND_CREATED, COND_RUNNING, COND_RESTARTING, COND_SUSPENDED, COND_SUCCEEDED, COND_FAILED,
    COND_EARLY_STOPPED, COND_CHECKPOINT_SAVED, COND_UNSCHEDULABLE, COND_VOLUME_NOT_SHARED, COND_STALLED,
    COND_QUOTA_RESERVED, COND_EDIT_APPLIED,
)

TRUE: Final = "True"
FALSE: Final = "False"


class Reason:
    """Condition / Event reasons (metav1.Condition: CamelCase, no spaces)."""

    # Created
    CREATING_PODS: Final = "CreatingPods"
    PODS_CREATED: Final = "PodsCreated"
    POD_NAME_CONFLICT: Final = "PodNameConflict"
    POD_CREATION_FAILED: Final = "PodCreationFailed"
    ALREADY_EXISTS: Final = "AlreadyExists"  # a child's name is taken by an object the job does not control
    # Running
    ALL_PODS_RUNNING: Final = "AllPodsRunning"
    PODS_PENDING: Final = "PodsPending"
    JOB_FINISHED: Final = "JobFinished"
    # Restarting (the failure reasons below are used as its reason too)
    RESTART_COMPLETE: Final = "RestartComplete"
    # Suspended (and WORKLOAD_EVICTED: Kueue evicted the job's Workload)
    SUSPENDED: Final = "Suspended"
    RESUMED: Final = "Resumed"
    # Succeeded
    EARLY_STOPPED: Final = "EarlyStopped"
    MAX_EPOCHS_REACHED: Final = "MaxEpochsReached"
    EARLY_STOPPING_DISABLED: Final = "EarlyStoppingDisabled"
    # Failed
    BACKOFF_LIMIT_EXCEEDED: Final = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
    INVALID_SPEC: Final = "InvalidSpec"
    # Pod failure reasons (status.failure.reason, Restarting/Failed condition reasons)
    INVALID_CONFIG: Final = "InvalidConfig"
    NON_RETRYABLE_EXIT_CODE: Final = "NonRetryableExitCode"
    RETRYABLE_EXIT_CODE: Final = "RetryableExitCode"
    OOM_KILLED: Final = "OOMKilled"
    SIGNALED: Final = "Signaled"
    EVICTED: Final = "Evicted"
    PREEMPTED: Final = "Preempted"
    NODE_LOST: Final = "NodeLost"
    POD_DELETED: Final = "PodDeleted"
    POD_FAILED: Final = "PodFailed"
    # Training-derived
    CHECKPOINT_SAVED: Final = "CheckpointSaved"
    # Unschedulable
    PODS_UNSCHEDULABLE: Final = "PodsUnschedulable"
    PODS_SCHEDULED: Final = "PodsScheduled"
    # VolumeNotShared
    ACCESS_MODE_NOT_RWX: Final = "AccessModeNotReadWriteMany"
    VOLUME_SHARED: Final = "VolumeShared"
    # Stalled
    NO_RECENT_EVENTS: Final = "NoRecentEvents"
    EVENTS_FLOWING: Final = "EventsFlowing"
    NOT_RUNNING: Final = "NotRunning"
    # QuotaReserved (and Kueue's own reasons, copied from the job's Workload: Pending, Inadmissible, ...)
    KUEUE_NOT_INSTALLED: Final = "KueueNotInstalled"
    WORKLOAD_CREATED: Final = "WorkloadCreated"  # Kueue has not considered the Workload yet
    ADMITTED: Final = "Admitted"
    WORKLOAD_EVICTED: Final = "WorkloadEvicted"  # its quota is released once the job's pods are gone
    WORKLOAD_FINISHED: Final = "WorkloadFinished"  # the job ended and Kueue released the quota
    PRIORITY_CLASS_NOT_FOUND: Final = "PriorityClassNotFound"
    WORKLOAD_NOT_OWNED: Final = "WorkloadNotOwned"
    PLACEMENT_FAILED: Final = "PlacementFailed"
    # Events of the job's Workload (jobframework's names)
    CREATED_WORKLOAD: Final = "CreatedWorkload"
    FINISHED_WORKLOAD: Final = "FinishedWorkload"
    # EditApplied (JOB_FINISHED too: an edit of a finished job that does not train it on)
    INVALID_EDIT: Final = "InvalidEdit"
    EDIT_APPLIED: Final = "EditApplied"
    # Succeeded=False and its Event: a higher maxEpochs trains a succeeded job on
    TRAINING_EXTENDED: Final = "TrainingExtended"
    # Events only
    EDIT_IGNORED: Final = "EditIgnored"
    TTL_EXPIRED: Final = "TTLExpired"
    SPEC_WARNING: Final = "SpecWarning"
    CLEANED_UP: Final = "PodsCleanedUp"


CLEAN_POD_POLICY_ALL: Final = "All"
CLEAN_POD_POLICY_RUNNING: Final = "Running"
CLEAN_POD_POLICY_NONE: Final = "None"
CLEAN_POD_POLICIES: Final = (CLEAN_POD_POLICY_ALL, CLEAN_POD_POLICY_RUNNING, CLEAN_POD_POLICY_NONE)
