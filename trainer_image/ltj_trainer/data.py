"""Built-in LightningDataModules.

- ``digits``: scikit-learn's 8x8 handwritten digits (ships with scikit-learn, no download).
- ``csv`` / ``parquet``: a table on the job's volume, read with pyarrow; one label column, the
  other (numeric) columns are features, or with ``image_size`` the pixels of one image per row.
- ``synthetic_tabular`` / ``synthetic_images``: learnable generated data for benchmarks.

All are in-memory arrays split deterministically (``split_seed``), so every rank sees the same
split and Lightning's DistributedSampler shards it. :meth:`ArrayDataModule.data_spec` tells the
model its input shape and class count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


@dataclass(frozen=True)
class DataSpec:
    input_shape: tuple[int, ...]
    num_classes: int


@dataclass(frozen=True)
class Splits:
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def split_arrays(x: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """A seeded shuffle then train/val/test slices; identical on every rank."""
    n = len(y)
    n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
    if n - n_val - n_test < 1 or n_val < 1 or n_test < 1:
        raise ValueError(
            f"{n} samples cannot be split with val_fraction={val_fraction}, test_fraction={test_fraction}"
        )
    order = np.random.default_rng(seed).permutation(n)
    val_idx, test_idx, train_idx = order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]
    return Splits(train=(x[train_idx], y[train_idx]), val=(x[val_idx], y[val_idx]), test=(x[test_idx], y[test_idx]))


class ArrayDataModule(pl.LightningDataModule):
    """Base: subclasses implement ``_load() -> Splits``; this class does the loaders."""

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 < frac < 1:
                raise ValueError(f"{name} must be in (0, 1), got {frac!r}")
        if val_fraction + test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self._splits: Splits | None = None

    def _load(self) -> Splits:
        raise NotImplementedError

    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self._splits = self._load()
        return self._splits

    def data_spec(self) -> DataSpec:
        x, y = self.splits.train
        return DataSpec(input_shape=tuple(int(d) for d in x.shape[1:]), num_classes=self._num_classes())

    def _num_classes(self) -> int:
        return int(max(int(part[1].max()) for part in (self.splits.train, self.splits.val, self.splits.test)) + 1)

    def setup(self, stage: str) -> None:
        _ = self.splits

    def _loader(self, part: tuple[np.ndarray, np.ndarray], shuffle: bool) -> DataLoader:
        x, y = part
        ds = TensorDataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64)))
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits.train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits.val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits.test, shuffle=False)


class DigitsDataModule(ArrayDataModule):
    """scikit-learn digits: 1797 grey 8x8 images (values scaled to [0, 1]), 10 classes."""

    def _load(self) -> Splits:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
        return split_arrays(x, digits.target.astype(np.int64), self.val_fraction, self.test_fraction, self.split_seed)


class _TableDataModule(ArrayDataModule):
    """A table file: ``path`` (absolute, or relative to the job's output directory), optional
    ``val_path`` / ``test_path`` (else split by fractions), ``label_column``, ``feature_columns``.

    ``image_size`` (a side, or [height, width]) makes each row an image: the feature columns, in
    order, are its pixels in (channels, height, width) order, as in CIFAR's and downsampled
    ImageNet's arrays (one channel for MNIST-style tables); the channel count follows from the
    number of columns.
    """

    kind = "table"

    def __init__(
        self,
        path: str,
        label_column: str = "label",
        feature_columns: Sequence[str] | None = None,
        val_path: str | None = None,
        test_path: str | None = None,
        image_size: int | Sequence[int] | None = None,
        root_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not path:
            raise ValueError(f"{self.kind} data needs data_args.path")
        self.image_hw = _image_hw(image_size)
        self.root_dir = root_dir
        self.path = self._abs(path)
        self.val_path = self._abs(val_path) if val_path else None
        self.test_path = self._abs(test_path) if test_path else None
        if (self.val_path is None) != (self.test_path is None):
            raise ValueError("give both val_path and test_path, or neither (then path is split)")
        self.label_column = label_column
        self.feature_columns = list(feature_columns) if feature_columns is not None else None
        self._label_codes: dict[Any, int] | None = None

    def _abs(self, p: str) -> str:
        if os.path.isabs(p) or not self.root_dir:
            return p
        return os.path.join(self.root_dir, p)

    def _read_table(self, path: str) -> Any:
        raise NotImplementedError

    def _arrays(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            table = self._read_table(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.kind} data: file not found: {path}") from None
        names = table.column_names
        if self.label_column not in names:
            raise ValueError(f"{self.kind} data {path}: no label column {self.label_column!r} (columns: {', '.join(names)})")
        features = self.feature_columns or [c for c in names if c != self.label_column]
        missing = [c for c in features if c not in names]
        if missing:
            raise ValueError(f"{self.kind} data {path}: feature columns not found: {', '.join(missing)}")
        if not features:
            raise ValueError(f"{self.kind} data {path}: no feature columns")
        cols = []
        for c in features:
            col = table.column(c).to_numpy(zero_copy_only=False)
            if not np.issubdtype(col.dtype, np.number) and col.dtype != np.bool_:
                raise ValueError(f"{self.kind} data {path}: feature column {c!r} is not numeric ({col.dtype})")
            cols.append(col.astype(np.float32))
        x = np.stack(cols, axis=1)
        if np.isnan(x).any():
            raise ValueError(f"{self.kind} data {path}: feature columns contain missing values")
        if self.image_hw is not None:
            pixels = self.image_hw[0] * self.image_hw[1]
            if len(features) % pixels:
                raise ValueError(f"{self.kind} data {path}: {len(features)} feature columns are not whole "
                                 f"{self.image_hw[0]}x{self.image_hw[1]} images (a multiple of {pixels})")
            x = x.reshape(len(x), len(features) // pixels, *self.image_hw)
        return x, self._encode_labels(table.column(self.label_column).to_numpy(zero_copy_only=False), path)

    def _encode_labels(self, labels: np.ndarray, path: str) -> np.ndarray:
        if np.issubdtype(labels.dtype, np.integer):
            if labels.min() < 0:
                raise ValueError(f"{self.kind} data {path}: integer labels must be >= 0")
            return labels.astype(np.int64)
        # Non-integer labels become class indices in sorted order of the training file's values.
        if self._label_codes is None:
            self._label_codes = {v: i for i, v in enumerate(sorted(set(labels.tolist())))}
        try:
            return np.array([self._label_codes[v] for v in labels.tolist()], dtype=np.int64)
        except KeyError as e:
            raise ValueError(f"{self.kind} data {path}: label {e.args[0]!r} does not occur in {self.path}") from None

    def _load(self) -> Splits:
        x, y = self._arrays(self.path)
        if self.val_path and self.test_path:
            return Splits(train=(x, y), val=self._arrays(self.val_path), test=self._arrays(self.test_path))
        return split_arrays(x, y, self.val_fraction, self.test_fraction, self.split_seed)


def _image_hw(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    sides = [image_size] if isinstance(image_size, int) else list(image_size)
    if len(sides) not in (1, 2) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sides):
        raise ValueError(f"image_size must be a positive side or [height, width], got {image_size!r}")
    return sides[0], sides[-1]


class CsvDataModule(_TableDataModule):
    kind = "csv"

    def _read_table(self, path: str) -> Any:
        from pyarrow import csv

        return csv.read_csv(path)


class ParquetDataModule(_TableDataModule):
    kind = "parquet"

    def _read_table(self, path: str) -> Any:
        from pyarrow import parquet

        return parquet.read_table(path)


class SyntheticTabularDataModule(ArrayDataModule):
    """Gaussian features labelled by a random linear teacher (plus label noise): learnable."""

    def __init__(
        self, num_samples: int = 20000, num_features: int = 32, num_classes: int = 4, noise: float = 0.5, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if num_samples < 10 or num_features < 1 or num_classes < 2:
            raise ValueError("need num_samples >= 10, num_features >= 1, num_classes >= 2")
        self.num_samples, self.num_features, self.num_classes, self.noise = num_samples, num_features, num_classes, noise

    def _load(self) -> Splits:
        rng = np.random.default_rng(self.split_seed)
        x = rng.standard_normal((self.num_samples, self.num_features), dtype=np.float32)
        teacher = rng.standard_normal((self.num_features, self.num_classes), dtype=np.float32)
        logits = x @ teacher / np.sqrt(self.num_features) + self.noise * rng.gumbel(size=(self.num_samples, self.num_classes))
        y = logits.argmax(axis=1).astype(np.int64)
        return split_arrays(x, y, self.val_fraction, self.test_fraction, self.split_seed)

    def _num_classes(self) -> int:
        return self.num_classes


class SyntheticImageDataModule(ArrayDataModule):
    """Images = a per-class smooth prototype + Gaussian noise: learnable, any size."""

    def __init__(
        self,
        num_samples: int = 4096,
        image_size: int = 32,
        channels: int = 3,
        num_classes: int = 10,
        noise: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_samples < 10 or image_size < 1 or channels < 1 or num_classes < 2:
            raise ValueError("need num_samples >= 10, image_size >= 1, channels >= 1, num_classes >= 2")
        self.num_samples, self.image_size, self.channels = num_samples, image_size, channels
        self.num_classes, self.noise = num_classes, noise

    def _load(self) -> Splits:
        rng = np.random.default_rng(self.split_seed)
        coarse = max(1, self.image_size // 4)
        protos = rng.standard_normal((self.num_classes, self.channels, coarse, coarse), dtype=np.float32)
        reps = -(-self.image_size // coarse)
        protos = np.repeat(np.repeat(protos, reps, axis=2), reps, axis=3)[:, :, : self.image_size, : self.image_size]
        y = rng.integers(0, self.num_classes, size=self.num_samples)
        x = protos[y] + self.noise * rng.standard_normal(
            (self.num_samples, self.channels, self.image_size, self.image_size), dtype=np.float32
        )
        return split_arrays(x.astype(np.float32), y.astype(np.int64), self.val_fraction, self.test_fraction, self.split_seed)

    def _num_classes(self) -> int:
        return self.num_classes
