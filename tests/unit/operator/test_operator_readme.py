"""The README's example `kubectl get ltj` output is what the sample prints: its header is the CRD's printer
columns as kubectl spells them, and its row is the display a finished run of the sample folds into."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ltj_api import events
from ltj_operator import constants as C
from ltj_operator import training
from ltj_trainer.trainer_factory import checkpoint_filename

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
SAMPLE = yaml.safe_load((REPO / "crds" / "samples" / "cpu-digits-2node.yaml").read_text())


def readme_table() -> list[list[str]]:
    """The rows under the README's `$ kubectl get ltj`, cells split where kubectl pads (2+ spaces)."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"^\$ kubectl get ltj\n((?:.+\n)+?)```", text, re.M)
    assert block, "the README shows no `$ kubectl get ltj` output"
    return [re.split(r" {2,}", line.strip()) for line in block.group(1).splitlines()]


def test_the_header_is_the_crds_printer_columns() -> None:
    crd = yaml.safe_load((REPO / "crds" / "ltj.dev_lightningtrainingjobs.yaml").read_text())
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    header = readme_table()[0]
    assert header == ["NAME", *(c["name"].upper() for c in columns if not c.get("priority"))]


def test_the_row_is_what_a_finished_run_of_the_sample_displays(tmp_path: Path) -> None:
    spec = SAMPLE["spec"]
    max_epochs, monitor = spec["training"]["maxEpochs"], spec["training"]["monitor"]["metric"]
    header, *rows = readme_table()
    (row,) = rows
    shown = dict(zip(header, row))
    # The sample's finished run, in the trainer's own words: its last epoch was the best one.
    last, score = max_epochs - 1, float(shown["BEST"].partition("=")[2])
    path = "/output/checkpoints/" + checkpoint_filename(spec["model"]["name"], monitor).format(
        epoch=last, **{monitor: score}) + ".ckpt"
    writer = events.Writer(tmp_path / "events.jsonl")
    writer.write(events.STARTED, max_epochs=max_epochs, monitor=monitor, mode="min", world_size=spec["nodes"],
                 num_nodes=spec["nodes"], devices=1, attempt=0)
    writer.write(events.VALIDATION, epoch=last, step=100, metrics={monitor: score})
    writer.write(events.CHECKPOINT, path=path, score=score, kind="top_k", epoch=last, step=100,
                 top_k=[{"path": path, "score": score}], best_path=path, best_score=score)
    writer.write(events.FIT_END, epoch=last, step=100, best_path=path, best_score=score, stopped_early=False)
    display = training.display(training.fold(events.read_all(tmp_path / "events.jsonl")))
    assert shown == {
        "NAME": SAMPLE["metadata"]["name"], "PHASE": C.PHASE_SUCCEEDED, "NODES": str(spec["nodes"]),
        "EPOCH": display["epoch"], "BEST": display["best"], "BEST CHECKPOINT": display["bestCheckpoint"],
        "RESTARTS": "0", "AGE": shown["AGE"],
    }
