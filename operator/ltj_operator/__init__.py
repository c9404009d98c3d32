"""ltj operator: reconciles LightningTrainingJob resources into gangs of training pods."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("ltj-operator")
except _metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
