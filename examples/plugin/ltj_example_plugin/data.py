"""Two interleaving half-moons (scikit-learn, generated offline) as a LightningDataModule."""

from __future__ import annotations

from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


class MoonsDataModule(pl.LightningDataModule):
    # The trainer passes batch_size / num_workers from the job when the constructor names them;
    # everything else comes from the job's data.args.
    def __init__(self, batch_size: int = 64, num_workers: int = 0, n_samples: int = 2000, noise: float = 0.2, seed: int = 0):
        super().__init__()
        self.batch_size, self.num_workers = batch_size, num_workers
        self.n_samples, self.noise, self.seed = n_samples, noise, seed
        self._parts: dict[str, TensorDataset] | None = None

    def data_spec(self) -> SimpleNamespace:
        # Optional: lets the trainer fill the model's input_shape / num_classes arguments.
        return SimpleNamespace(input_shape=(2,), num_classes=2)

    def setup(self, stage: str) -> None:
        if self._parts is not None:
            return
        from sklearn.datasets import make_moons

        x, y = make_moons(n_samples=self.n_samples, noise=self.noise, random_state=self.seed)
        order = np.random.default_rng(self.seed).permutation(len(y))
        x, y = torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order], dtype=torch.long)
        n_val = n_test = len(y) // 5
        self._parts = {
            "val": TensorDataset(x[:n_val], y[:n_val]),
            "test": TensorDataset(x[n_val : n_val + n_test], y[n_val : n_val + n_test]),
            "train": TensorDataset(x[n_val + n_test :], y[n_val + n_test :]),
        }

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        assert self._parts is not None
        return DataLoader(self._parts[part], batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
