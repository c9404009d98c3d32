"""The contract between the operator, the relay and the trainer: what one side writes, another reads.

Both images install this package and neither image's own package imports the other's, so every
name, path, key and code they share is defined once, here. Standard library only (a unit test
scans the imports): the operator image carries no torch, the trainer image no Kubernetes client.

- this module: the API's identity (the Python face of crds/) and the labels on a job's children
- :mod:`ltj_api.trainer`: what the operator hands a trainer pod (config file and keys, environment,
  paths, port) and what the trainer hands back (exit codes)
- :mod:`ltj_api.events`: the event log's format, writer and reader
- :mod:`ltj_api.summary`: the termination summary's keys, writer and reader
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "ltj.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "LightningTrainingJob"
PLURAL: Final = "lightningtrainingjobs"
SINGULAR: Final = "lightningtrainingjob"
SHORT_NAME: Final = "ltj"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# Labels the operator puts on a job's children, by which clients (kubectl ltj, tests) find them.
LABEL_JOB_NAME: Final = f"{GROUP}/job-name"
LABEL_NODE_RANK: Final = f"{GROUP}/node-rank"
LABEL_ATTEMPT: Final = f"{GROUP}/attempt"
