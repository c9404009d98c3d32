"""The termination summary: valid JSON under 4 KiB whatever it carries, and read back by the operator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltj_api import summary

pytestmark = pytest.mark.unit


def test_every_summary_carries_the_keys() -> None:
    assert tuple(summary.build()) == summary.KEYS
    assert tuple(summary.build(exit_code=2, error="bad", interrupted="SIGTERM"))[:len(summary.KEYS)] == summary.KEYS


def test_contract_fields() -> None:
    s = summary.build(best_checkpoint="/o/c/m.ckpt", best_score=0.5, monitor="val_loss", epochs=4,
                      early_stopped=True, test_metrics={"test_acc": 0.9}, last_seq=17)
    assert json.loads(summary.render(s)) == {
        "best_checkpoint": "/o/c/m.ckpt", "best_score": 0.5, "monitor": "val_loss", "epochs": 4,
        "early_stopped": True, "test_metrics": {"test_acc": 0.9}, "last_seq": 17,
    }


def test_oversized_summary_is_trimmed_not_cut() -> None:
    metrics = {f"test/metric_{i:04d}_with_a_long_name": float(i) for i in range(400)}
    s = summary.build(best_checkpoint="/o/" + "d" * 5000 + "/m_epoch03.ckpt", monitor="val_loss",
                      test_metrics=metrics, last_seq=9, exit_code=1, error="boom " * 3000)
    data = summary.render(s)
    assert len(data) <= summary.MAX_BYTES
    parsed = json.loads(data)
    assert parsed["last_seq"] == 9 and parsed["test_metrics_truncated"] is True
    assert parsed["error"].startswith("boom") and parsed["error"].endswith("...")
    assert parsed["best_checkpoint"].endswith("m_epoch03.ckpt")


def test_write_is_best_effort(tmp_path: Path) -> None:
    assert summary.write(str(tmp_path / "t"), summary.build(last_seq=1))
    assert json.loads((tmp_path / "t").read_text())["last_seq"] == 1
    assert not summary.write(str(tmp_path / "missing-dir" / "t"), summary.build(last_seq=1))


def test_parse_reads_what_render_writes() -> None:
    written = summary.render(summary.build(best_checkpoint="/output/checkpoints/a.ckpt", best_score=0.1,
                                           early_stopped=True, epochs=4, last_seq=9))
    parsed = summary.parse(written.decode())
    assert parsed is not None and parsed["early_stopped"] is True and parsed["last_seq"] == 9


def test_parse_refuses_what_is_no_summary() -> None:
    assert summary.parse("Traceback (most recent call last): ...") is None  # FallbackToLogsOnError
    assert summary.parse('{"unrelated": 1}') is None
    assert summary.parse("{not json") is None
    assert summary.parse("[1, 2]") is None
    assert summary.parse(None) is None
    assert summary.parse('{"error": "boom", "last_seq": 3}') == {"error": "boom", "last_seq": 3}
