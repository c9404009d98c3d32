"""What the operator hands a trainer pod, and what the trainer hands back.

In: the trainer config (a flat YAML mapping with the keys below, at CONFIG_PATH, each key
overridable by the environment variable ``LTJ_<KEY>``), the distributed environment
(PyTorchJob's and torchrun's names plus ours), the output volume at OUTPUT_DIR and the
rendezvous port. Out: the event log (:mod:`ltj_api.events`) under the output directory, the
termination summary (:mod:`ltj_api.summary`) at TERMINATION_LOG and the exit code.
"""

from __future__ import annotations

import posixpath
import signal
from typing import Final

from ltj_api import events

# --- the config file ---------------------------------------------------------------------------
CONFIG_DIR: Final = "/etc/ltj"
CONFIG_FILE_NAME: Final = "trainer.yaml"
CONFIG_PATH: Final = posixpath.join(CONFIG_DIR, CONFIG_FILE_NAME)

# Every key the trainer accepts, in the order the operator renders them; the trainer's TrainerConfig
# has exactly these fields and the operator renders only these (tests hold both).
CONFIG_KEYS: Final = (
    "model_class", "model_args", "data_class", "data_args", "batch_size", "num_workers", "max_epochs",
    "early_stopping", "early_stop_metric", "early_stop_patience", "early_stop_min_delta", "mode",
    "val_check_interval", "precision", "accelerator", "devices", "num_nodes", "default_root_dir", "seed",
    "save_top_k", "test_after_fit", "resume", "termination_log", "ddp_timeout_seconds", "log_every_n_steps",
)

# --- the environment ---------------------------------------------------------------------------
ENV_PREFIX: Final = "LTJ_"


def env_key(key: str) -> str:
    """The environment variable that overrides config key ``key`` (``resume`` -> ``LTJ_RESUME``)."""
    return ENV_PREFIX + key.upper()


ENV_CONFIG: Final = "LTJ_CONFIG"  # the config file's path
ENV_JOB_NAME: Final = "LTJ_JOB_NAME"  # set in every pod the operator makes (and only there)
ENV_ATTEMPT: Final = "LTJ_ATTEMPT"  # the gang attempt, 0 first
# Restart attempts set it so every rank resumes from the same checkpoint.
ENV_RESUME: Final = env_key("resume")
ENV_TERMINATION_LOG: Final = env_key("termination_log")
# PyTorchJob's and torchrun's names, which foreign training scripts read too.
TORCH_DISTRIBUTED_ENV: Final = (
    "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK",
    "PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT",
)
DIST_PORT: Final = 29500  # the rendezvous port on rank 0 (torchrun's default)

# --- paths -------------------------------------------------------------------------------------
OUTPUT_DIR: Final = "/output"  # the output volume's mount: checkpoints, event log, logger files
CHECKPOINTS_DIR_NAME: Final = "checkpoints"  # under the output directory
EVENTS_PATH: Final = posixpath.join(OUTPUT_DIR, events.FILENAME)
TERMINATION_LOG: Final = "/dev/termination-log"


def job_dir(job_name: str, job_uid: str, output_dir: str = OUTPUT_DIR) -> str:
    """The job's own directory on the output volume, ``<output>/<job-name>-<uid>``: its event log,
    checkpoints and logger files. Jobs may share a claim; the uid keeps each job's files (and so its
    status) apart from every other job's, an earlier job of the same name included."""
    if not job_name or not job_uid or "/" in job_name + job_uid or job_name in (".", ".."):
        raise ValueError(f"a job directory needs a job name and uid without '/', got {job_name!r}, {job_uid!r}")
    return posixpath.join(output_dir, f"{job_name}-{job_uid}")


def events_path(directory: str) -> str:
    """The event log of the job whose directory is ``directory``."""
    return posixpath.join(directory, events.FILENAME)


def checkpoints_dir(directory: str) -> str:
    """Where the job whose directory is ``directory`` keeps its checkpoints."""
    return posixpath.join(directory, CHECKPOINTS_DIR_NAME)


def within(path: str, directory: str) -> bool:
    """Whether ``path`` (absolute) names something inside ``directory``, after resolving '.' and '..'
    lexically (the trainer also resolves symlinks before it loads a file)."""
    path, directory = posixpath.normpath(path), posixpath.normpath(directory)
    return posixpath.isabs(path) and path.startswith(directory.rstrip("/") + "/")

# --- exit codes --------------------------------------------------------------------------------
EXIT_OK: Final = 0
EXIT_ERROR: Final = 1  # training failed: retrying the same config fails again
EXIT_INVALID_CONFIG: Final = 2  # the config was refused before training started: never worth a retry
# 128 + N: the process died of (or stopped on) signal N; the operator restarts the gang for these.
SIGNAL_EXIT_BASE: Final = 128
EXIT_SIGTERM: Final = SIGNAL_EXIT_BASE + signal.SIGTERM
