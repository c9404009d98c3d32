"""docs/model-out.md: its Python snippet, exactly as written, loads a checkpoint the trainer saved and
predicts from inputs preprocessed as the datamodule does; its tables name every built-in."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ltj_trainer import config, registry
from ltj_trainer.main import build_modules
from unit.trainer.trainer_helpers import REPO

pytestmark = pytest.mark.unit

DOC = REPO / "docs" / "model-out.md"


def doc_blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)


# Lightning 2.6 calls a torch pytree API that torch deprecated; nothing of ours.
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_the_python_snippet_loads_the_trainers_checkpoint_and_predicts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import lightning.pytorch as pl

    # What a job of the sample trains (digits_cnn on digits), one epoch, saved by Lightning as the
    # trainer's ModelCheckpoint saves it.
    cfg = config.parse({"model_class": "digits_cnn", "data_class": "digits", "default_root_dir": str(tmp_path)}, {})
    pl.seed_everything(0)
    dm, trained = build_modules(cfg)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(trained, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "best.ckpt")

    (snippet,) = doc_blocks("python")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(snippet, str(DOC), "exec"), ns)

    x, pred = ns["x"], ns["pred"]
    assert capsys.readouterr().out.strip() == str(pred.tolist())
    # The snippet's inputs are exactly rows the datamodule fed the model.
    seen = np.concatenate([part[0] for part in (dm.splits.train, dm.splits.val, dm.splits.test)])
    assert all((seen == row).all(axis=(1, 2, 3)).any() for row in x.numpy())
    # The loaded model is the trained one: same weights, same BatchNorm statistics, eval mode.
    trained.eval()
    with torch.no_grad():
        assert torch.equal(pred, trained(x).argmax(dim=1))
    assert pred.shape == (5,) and all(0 <= p < 10 for p in pred.tolist())


def test_the_tables_name_every_built_in_model_class_and_datamodule() -> None:
    text = DOC.read_text()
    for name in registry.BUILTIN_MODELS:
        cls = registry.model_class(name)
        assert f"| `{name}` | `{cls.__module__}.{cls.__qualname__}` |" in text, name
    for name in registry.BUILTIN_DATA:
        assert re.search(rf"^\| [^|]*`{name}`", text, re.MULTILINE), name
