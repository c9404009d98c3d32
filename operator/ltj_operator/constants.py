"""Names the API, the operator and the tests agree on: one place, no magic strings elsewhere."""

from __future__ import annotations

from typing import Final

# --- the API ---------------------------------------------------------------------------------
GROUP: Final = "ltj.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "LightningTrainingJob"
PLURAL: Final = "lightningtrainingjobs"
SINGULAR: Final = "lightningtrainingjob"
SHORT_NAME: Final = "ltj"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# The longest job name for which `<name>-node-<index>` stays a DNS label (also enforced in the CRD).
MAX_JOB_NAME_LENGTH: Final = 49
MAX_NODES: Final = 256
MAX_GPUS_PER_NODE: Final = 16
GPU_RESOURCE: Final = "nvidia.com/gpu"

# --- labels (Contract 2) -----------------------------------------------------------------------
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_JOB_NAME: Final = f"{GROUP}/job-name"
LABEL_NODE_RANK: Final = f"{GROUP}/node-rank"
LABEL_ATTEMPT: Final = f"{GROUP}/attempt"

APP_NAME: Final = "ltj"
MANAGED_BY: Final = "ltj-operator"

COMPONENT_TRAINER: Final = "trainer"
COMPONENT_SERVICE: Final = "service"
COMPONENT_OUTPUT: Final = "output"
COMPONENT_RELAY: Final = "relay"

# --- what the pods look like (Contract 2) ------------------------------------------------------
TRAINER_CONTAINER: Final = "trainer"
RELAY_CONTAINER: Final = "relay"
RELAY_COMMAND: Final = ("ltj-relay",)
DIST_PORT: Final = 29500
DIST_PORT_NAME: Final = "dist"
CONFIG_DIR: Final = "/etc/ltj"
CONFIG_FILE_NAME: Final = "trainer.yaml"
CONFIG_PATH: Final = f"{CONFIG_DIR}/{CONFIG_FILE_NAME}"
# Each pod carries its trainer config in this annotation; a downward API volume makes it CONFIG_PATH.
ANNOTATION_TRAINER_CONFIG: Final = f"{GROUP}/trainer-config"
OUTPUT_DIR: Final = "/output"
EVENTS_FILE: Final = f"{OUTPUT_DIR}/events.jsonl"
SHM_DIR: Final = "/dev/shm"
TERMINATION_LOG: Final = "/dev/termination-log"
SA_TOKEN_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"
RUN_AS_USER: Final = 1000

# Pod volume names the operator owns; user volumes may not reuse them.
VOLUME_CONFIG: Final = "ltj-config"
VOLUME_OUTPUT: Final = "ltj-output"
VOLUME_SHM: Final = "ltj-shm"
VOLUME_RELAY_TOKEN: Final = "ltj-relay-token"
RESERVED_VOLUME_NAMES: Final = frozenset({VOLUME_CONFIG, VOLUME_OUTPUT, VOLUME_SHM, VOLUME_RELAY_TOKEN})
RESERVED_MOUNT_PATHS: Final = frozenset({CONFIG_DIR, OUTPUT_DIR, SHM_DIR})

# Env the operator owns in trainer containers: a user value for these is dropped (Contract 2).
DISTRIBUTED_ENV: Final = frozenset({
    "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK",
    "PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT",
    "LTJ_CONFIG", "LTJ_JOB_NAME", "LTJ_ATTEMPT",
})
# Env override of the trainer's resume setting (Contract 1: LTJ_<KEY>), used for restart attempts.
RESUME_ENV: Final = "LTJ_RESUME"

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
CONDITION_TYPES: Final = (
    COND_CREATED, COND_RUNNING, COND_RESTARTING, COND_SUSPENDED, COND_SUCCEEDED, COND_FAILED,
    COND_EARLY_STOPPED, COND_CHECKPOINT_SAVED, COND_UNSCHEDULABLE, COND_VOLUME_NOT_SHARED, COND_STALLED,
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
    # Running
    ALL_PODS_RUNNING: Final = "AllPodsRunning"
    PODS_PENDING: Final = "PodsPending"
    JOB_FINISHED: Final = "JobFinished"
    # Restarting (the failure reasons below are used as its reason too)
    RESTART_COMPLETE: Final = "RestartComplete"
    # Suspended
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
    # Unschedulable (Contract 3: Unschedulable(PodsUnschedulable))
    PODS_UNSCHEDULABLE: Final = "PodsUnschedulable"
    PODS_SCHEDULED: Final = "PodsScheduled"
    # VolumeNotShared
    ACCESS_MODE_NOT_RWX: Final = "AccessModeNotReadWriteMany"
    VOLUME_SHARED: Final = "VolumeShared"
    # Stalled
    NO_RECENT_EVENTS: Final = "NoRecentEvents"
    EVENTS_FLOWING: Final = "EventsFlowing"
    NOT_RUNNING: Final = "NotRunning"
    # Events only
    TTL_EXPIRED: Final = "TTLExpired"
    SPEC_WARNING: Final = "SpecWarning"
    CLEANED_UP: Final = "PodsCleanedUp"


CLEAN_POD_POLICY_ALL: Final = "All"
CLEAN_POD_POLICY_RUNNING: Final = "Running"
CLEAN_POD_POLICY_NONE: Final = "None"
CLEAN_POD_POLICIES: Final = (CLEAN_POD_POLICY_ALL, CLEAN_POD_POLICY_RUNNING, CLEAN_POD_POLICY_NONE)

# Exit code 2 is the trainer's "invalid configuration" (Contract 1): never worth a retry.
EXIT_INVALID_CONFIG: Final = 2
