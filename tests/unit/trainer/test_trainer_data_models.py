"""Built-in datamodules and models: real data, deterministic splits, shapes that fit together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ltj_trainer import data, models, registry
from ltj_trainer.main import build_modules, instantiate
from ltj_trainer import config
from ltj_trainer.config import ConfigError

pytestmark = pytest.mark.unit


def test_digits_split_is_deterministic_and_disjoint() -> None:
    a, b = data.DigitsDataModule(split_seed=0), data.DigitsDataModule(split_seed=0)
    assert a.data_spec() == data.DataSpec(input_shape=(1, 8, 8), num_classes=10)
    sizes = [len(part[1]) for part in (a.splits.train, a.splits.val, a.splits.test)]
    assert sum(sizes) == 1797 and sizes[1] == sizes[2] == 270
    assert np.array_equal(a.splits.val[0], b.splits.val[0])
    assert 0.0 <= a.splits.train[0].min() and a.splits.train[0].max() <= 1.0
    train_rows = {r.tobytes() for r in a.splits.train[0]}
    assert not any(r.tobytes() in train_rows for r in a.splits.test[0] if (r != 0).any())


def _table(n: int = 120) -> dict[str, list]:
    rng = np.random.default_rng(0)
    return {"f1": rng.normal(size=n).tolist(), "f2": rng.integers(0, 5, size=n).tolist(),
            "label": rng.choice(["cat", "dog", "eel"], size=n).tolist()}


def test_csv_and_parquet_tables(tmp_path: Path) -> None:
    import pyarrow as pa
    from pyarrow import csv, parquet

    table = pa.table(_table())
    csv.write_csv(table, tmp_path / "t.csv")
    parquet.write_table(table, tmp_path / "t.parquet")
    for dm in (data.CsvDataModule(path="t.csv", root_dir=str(tmp_path)),
               data.ParquetDataModule(path=str(tmp_path / "t.parquet"))):
        assert dm.data_spec() == data.DataSpec(input_shape=(2,), num_classes=3)
        x, y = next(iter(dm.train_dataloader()))
        assert x.dtype == torch.float32 and x.shape[1] == 2 and y.dtype == torch.int64
        assert set(np.unique(dm.splits.train[1])) <= {0, 1, 2}


def test_image_size_makes_table_rows_images(tmp_path: Path) -> None:
    """MNIST-style tables: one pixel per column, in (channel, row, column) order."""
    import pyarrow as pa
    from pyarrow import csv

    rng = np.random.default_rng(0)
    pixels = rng.random((60, 2 * 4 * 3), dtype=np.float32)
    table = {f"px{i}": pixels[:, i] for i in range(pixels.shape[1])}
    csv.write_csv(pa.table({"label": rng.integers(0, 3, 60), **table}), tmp_path / "img.csv")
    dm = data.CsvDataModule(path=str(tmp_path / "img.csv"), image_size=[4, 3])
    assert dm.data_spec().input_shape == (2, 4, 3)
    x, y = dm.splits.train
    row = np.flatnonzero((pixels == x[0].reshape(-1)).all(axis=1))
    assert len(row) == 1  # the image is its row's columns, reshaped in order
    square = data.CsvDataModule(path=str(tmp_path / "img.csv"), image_size=2, feature_columns=list(table)[:8])
    assert square.data_spec().input_shape == (2, 2, 2)
    with pytest.raises(ValueError, match=r"24 feature columns are not whole 5x5 images \(a multiple of 25\)"):
        data.CsvDataModule(path=str(tmp_path / "img.csv"), image_size=5).data_spec()
    for bad in (0, [2, 3, 4], "32", True):
        with pytest.raises(ValueError, match="image_size must be a positive side or"):
            data.CsvDataModule(path="x.csv", image_size=bad)


def test_table_errors_name_the_problem(tmp_path: Path) -> None:
    import pyarrow as pa
    from pyarrow import csv

    csv.write_csv(pa.table({**_table(), "name": ["x"] * 120}), tmp_path / "t.csv")
    with pytest.raises(ValueError, match="feature column 'name' is not numeric"):
        data.CsvDataModule(path=str(tmp_path / "t.csv")).data_spec()
    with pytest.raises(ValueError, match="no label column 'target'"):
        data.CsvDataModule(path=str(tmp_path / "t.csv"), label_column="target").data_spec()
    with pytest.raises(FileNotFoundError, match="file not found"):
        data.CsvDataModule(path=str(tmp_path / "nope.csv")).data_spec()


@pytest.mark.parametrize(("model_name", "data_name", "data_args"), [
    ("tabular_mlp", "digits", {}),
    ("digits_cnn", "digits", {}),
    ("tabular_mlp", "synthetic_tabular", {"num_samples": 200, "num_features": 7, "num_classes": 3}),
    ("resnet", "synthetic_images", {"num_samples": 40, "image_size": 16, "channels": 3, "num_classes": 5}),
])
def test_registered_pairs_build_and_run_forward(model_name: str, data_name: str, data_args: dict, tmp_path: Path) -> None:
    model_args = {"widths": [8, 16], "blocks": [1, 1]} if model_name == "resnet" else {}
    cfg = config.parse({"model_class": model_name, "data_class": data_name, "data_args": data_args,
                        "model_args": model_args, "batch_size": 8, "default_root_dir": str(tmp_path)}, {})
    dm, model = build_modules(cfg)
    assert dm.batch_size == 8
    x, y = next(iter(dm.train_dataloader()))
    logits = model(x)
    assert logits.shape == (len(y), dm.data_spec().num_classes)


def test_resnet_imagenet_stem_is_resnet18() -> None:
    # torchvision's resnet18(num_classes=1000) has exactly this many parameters; the benchmark
    # relies on the built-in being that model, not merely ResNet-shaped.
    model = models.ResNet(input_shape=(3, 224, 224), num_classes=1000, stem="imagenet")
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)
    # The 7x7/2 convolution and 3x3/2 pool quarter each side before the first stage.
    assert model.stem(torch.zeros(1, 3, 224, 224)).shape == (1, 64, 56, 56)
    with pytest.raises(ValueError, match="stem must be one of cifar, imagenet"):
        models.ResNet(stem="vit")


# torchvision.models.resnet<depth>(num_classes=1000): sum(p.numel() for p in m.parameters()).
@pytest.mark.parametrize(("depth", "params"), [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032),
                                               (101, 44_549_160), (152, 60_192_808)])
def test_resnet_depth_is_torchvisions_resnet(depth: int, params: int) -> None:
    model = models.ResNet(input_shape=(3, 224, 224), num_classes=1000, stem="imagenet", depth=depth)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.hparams.depth == depth  # saved, so load_from_checkpoint rebuilds the same network


def test_resnet_depth_50_runs_on_small_images_and_rejects_what_it_cannot_build() -> None:
    model = models.ResNet(input_shape=(3, 32, 32), num_classes=10, depth=50)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="depth must be one of 18, 34, 50, 101, 152, got 51"):
        models.ResNet(depth=51)
    with pytest.raises(ValueError, match="give depth .* or blocks .*, not both"):
        models.ResNet(depth=18, blocks=[1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"widths must give one width per stage \(4 stages\)"):
        models.ResNet(depth=34, widths=[8, 16])


def test_model_args_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"^config: model_args: DigitsCNN: .*unexpected keyword argument 'hidden'"):
        instantiate(models.DigitsCNN, {"hidden": 3}, {}, "model_args")
    with pytest.raises(ConfigError, match=r"^config: model_args: TabularMLP: optimizer must be one of"):
        instantiate(models.TabularMLP, {"optimizer": "lbfgs"}, {"input_shape": (4,), "num_classes": 2}, "model_args")


def test_synthetic_data_is_learnable_structure() -> None:
    dm = data.SyntheticTabularDataModule(num_samples=2000, num_features=8, num_classes=3, noise=0.1)
    x, y = dm.splits.train
    counts = np.bincount(y, minlength=3)
    assert (counts > 100).all()  # every class present
    # a linear teacher generated the labels: least squares on one-hot recovers most of them
    w, *_ = np.linalg.lstsq(x, np.eye(3)[y], rcond=None)
    assert ((x @ w).argmax(1) == y).mean() > 0.8


def test_registry_resolves_builtins_and_rejects_unknown_names() -> None:
    assert registry.model_class("digits_cnn") is models.DigitsCNN
    assert registry.data_class("parquet") is data.ParquetDataModule
    assert {"tabular_mlp", "digits_cnn", "resnet"} <= registry.model_names()
    with pytest.raises(registry.RegistryError, match="model 'os.system' is not registered"):
        registry.model_class("os.system")  # a name is never an import path
