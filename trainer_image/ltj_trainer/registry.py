"""Registered models and datamodules: the built-ins plus Python entry points.

A job names a model (``model_class``) and a datamodule (``data_class``); the names resolve here
and nowhere else. Plugins join through the entry-point groups ``ltj.models`` and ``ltj.data`` of
a package installed into an image built FROM the trainer image. A name from the job spec is
never imported as a module path.

Listing names needs no torch (entry points are read from installed metadata), so the launcher
validates ``model_class`` / ``data_class`` before anything heavy starts.
"""

from __future__ import annotations

import importlib.metadata as metadata
import logging
from typing import Any

MODEL_GROUP = "ltj.models"
DATA_GROUP = "ltj.data"

BUILTIN_MODELS = frozenset({"tabular_mlp", "digits_cnn", "resnet"})
BUILTIN_DATA = frozenset({"digits", "csv", "parquet", "synthetic_images", "synthetic_tabular"})

log = logging.getLogger(__name__)


class RegistryError(LookupError):
    pass


def _entry_points(group: str) -> dict[str, list[metadata.EntryPoint]]:
    found: dict[str, list[metadata.EntryPoint]] = {}
    seen: set[tuple[str, str]] = set()
    for ep in metadata.entry_points(group=group):
        # The same distribution can be visible twice on sys.path (e.g. an editable install);
        # the same name pointing at the same object is one registration.
        if (ep.name, ep.value) in seen:
            continue
        seen.add((ep.name, ep.value))
        found.setdefault(ep.name, []).append(ep)
    return found


def model_names() -> frozenset[str]:
    return BUILTIN_MODELS | frozenset(_entry_points(MODEL_GROUP))


def data_names() -> frozenset[str]:
    return BUILTIN_DATA | frozenset(_entry_points(DATA_GROUP))


def _builtin_models() -> dict[str, type]:
    from ltj_trainer import models

    return {"tabular_mlp": models.TabularMLP, "digits_cnn": models.DigitsCNN, "resnet": models.ResNet}


def _builtin_data() -> dict[str, type]:
    from ltj_trainer import data

    return {
        "digits": data.DigitsDataModule,
        "csv": data.CsvDataModule,
        "parquet": data.ParquetDataModule,
        "synthetic_images": data.SyntheticImageDataModule,
        "synthetic_tabular": data.SyntheticTabularDataModule,
    }


def _resolve(name: str, group: str, builtins: dict[str, type], base: type, what: str) -> type:
    eps = _entry_points(group).get(name, [])
    if name in builtins:
        if eps:
            log.warning("entry point %s=%s in group %s is ignored: %r is a built-in", name, eps[0].value, group, name)
        return builtins[name]
    if not eps:
        raise RegistryError(f"{what} {name!r} is not registered (built-ins: {', '.join(sorted(builtins))}; plugins: group {group})")
    if len(eps) > 1:
        raise RegistryError(f"{what} {name!r} is registered twice in {group}: {', '.join(ep.value for ep in eps)}")
    ep = eps[0]
    try:
        obj: Any = ep.load()
    except Exception as e:  # a broken plugin: say which one
        raise RegistryError(f"{what} {name!r}: cannot load entry point {ep.value}: {type(e).__name__}: {e}") from e
    if not isinstance(obj, type) or not issubclass(obj, base):
        raise RegistryError(f"{what} {name!r}: entry point {ep.value} is not a {base.__module__}.{base.__qualname__} subclass")
    return obj


def model_class(name: str) -> type:
    import lightning.pytorch as pl

    return _resolve(name, MODEL_GROUP, _builtin_models(), pl.LightningModule, "model")


def data_class(name: str) -> type:
    import lightning.pytorch as pl

    return _resolve(name, DATA_GROUP, _builtin_data(), pl.LightningDataModule, "datamodule")
