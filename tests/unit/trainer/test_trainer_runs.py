"""Real training through the image's entrypoint (`ltj-train` -> torchrun -> ltj_trainer.main) on
CPU: early stopping, the event log and summary against Lightning's own state, 2-node DDP over
gloo, SIGKILL + restart, SIGTERM -> resumable checkpoint + exit 143."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from ltj_trainer import noise
from unit.trainer.trainer_helpers import (
    TrainProcess, callback_state, ckpt_files, digits_config, last_checkpoint_saved, load_ckpt, of_type, read_events,
    sigterm_then_resume, start_pods, status_matches_lightning, wait_while_running, write_config,
)

pytestmark = [pytest.mark.training, pytest.mark.slow]  # real processes, several of them: not unit tests

RUN_TIMEOUT = 240  # seconds; a healthy run takes ~20 s on 2 busy cores


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One single-process run that early-stops deterministically: min_delta is larger than any
    improvement, so epoch 0 stays the best for EarlyStopping and patience 3 stops it at epoch 3,
    while ModelCheckpoint ranks all four epochs by val_loss and keeps three."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg = write_config(tmp / "trainer.yaml", **digits_config(
        tmp, max_epochs=10, early_stop_patience=3, early_stop_min_delta=100.0, save_top_k=3))
    proc = TrainProcess(cfg, tmp / "log.txt")
    code = proc.wait(RUN_TIMEOUT)
    return {"tmp": tmp, "root": tmp / "output", "cfg": cfg, "code": code, "log": proc.tail(200_000)}


def test_run_trains_early_stops_and_keeps_top3_plus_last(finished_run: dict[str, Any]) -> None:
    assert finished_run["code"] == 0, finished_run["log"][-6000:]
    root: Path = finished_run["root"]
    last = load_ckpt(root / "checkpoints" / "last.ckpt")
    mc = callback_state(last, "ModelCheckpoint")
    es = callback_state(last, "EarlyStopping")

    # Lightning's own record: stopped by patience at epoch 3 of max 10.
    assert es["stopped_epoch"] == 3 and es["wait_count"] == 3
    assert last["epoch"] == 3
    # Files: exactly Lightning's top-3 plus last.ckpt (epoch 0's was evicted and deleted).
    assert len(mc["best_k_models"]) == 3
    assert ckpt_files(root) == set(mc["best_k_models"]) | {str(root / "checkpoints" / "last.ckpt")}
    assert all(Path(p).name.startswith("digits_cnn_epoch") and "-val_loss" in p for p in mc["best_k_models"])

    evs = read_events(root)
    assert [e.seq for e in evs] == list(range(1, len(evs) + 1))
    started = of_type(evs, "started")
    assert len(started) == 1
    s = started[0].fields
    assert (s["world_size"], s["num_nodes"], s["devices"], s["precision"], s["accelerator"]) == (1, 1, 1, "32-true", "cpu")
    assert s["sync_batchnorm"] is False and "GPU" in s["sync_batchnorm_note"]
    assert s["resumed_from"] is None and (s["monitor"], s["mode"], s["model_class"]) == ("val_loss", "min", "digits_cnn")

    vals = of_type(evs, "validation")
    assert [v.get("epoch") for v in vals] == [0, 1, 2, 3]  # never the sanity check
    # progress: the first optimizer step, then every log_every_n_steps (5) steps, each placed in
    # its epoch; the first comes before the first validation.
    progress = of_type(evs, "progress")
    per_epoch = progress[0].get("steps_per_epoch")
    assert per_epoch == progress[0].get("batches") == vals[0].get("step")  # one optimizer step per batch
    assert [p.get("step") for p in progress] == [1, *range(5, vals[-1].get("step") + 1, 5)]
    assert all(p.get("epoch") == (p.get("step") - 1) // per_epoch for p in progress)
    assert all(p.get("batch") == (p.get("step") - 1) % per_epoch + 1 for p in progress)
    assert evs.index(progress[0]) < evs.index(vals[0])
    assert all("val_loss" in v.get("metrics") for v in vals)

    ckpts = of_type(evs, "checkpoint")
    top_k_paths = {c.get("path") for c in ckpts if c.get("kind") == "top_k"}
    assert set(mc["best_k_models"]) <= top_k_paths
    assert {c.get("path") for c in ckpts if c.get("kind") == "last"} == {str(root / "checkpoints" / "last.ckpt")}
    assert {t["path"] for t in ckpts[-1].get("top_k")} == set(mc["best_k_models"])
    for c in ckpts:
        if c.get("kind") == "top_k":
            assert Path(c.get("path")).name.startswith(f"digits_cnn_epoch{c.get('epoch'):02d}-")

    (stopped,) = of_type(evs, "early_stopped")
    assert stopped.get("epoch") == es["stopped_epoch"]
    assert stopped.get("reason") == "patience_exhausted" and stopped.get("monitor") == "val_loss"
    assert stopped.get("best_score") == pytest.approx(float(es["best_score"]))

    (fit_end,) = of_type(evs, "fit_end")
    assert fit_end.get("best_path") == mc["best_model_path"]
    assert fit_end.get("best_score") == pytest.approx(float(mc["best_model_score"]))
    assert fit_end.get("stopped_early") is True and fit_end.get("epoch") == 3

    (test,) = of_type(evs, "test")
    assert test.get("ckpt_path") == mc["best_model_path"]
    assert set(test.get("metrics")) == {"test_loss", "test_acc"}
    assert [e.type for e in evs][-3:] == ["early_stopped", "fit_end", "test"]

    term = json.loads((finished_run["tmp"] / "termination-log").read_text())
    assert term == {
        "best_checkpoint": mc["best_model_path"], "best_score": pytest.approx(float(mc["best_model_score"])),
        "monitor": "val_loss", "epochs": last["epoch"] + 1, "early_stopped": True,
        "test_metrics": test.get("metrics"), "last_seq": evs[-1].seq,
    }
    assert "sync_batchnorm is off" in finished_run["log"]
    assert (root / "csv" / "attempt_0" / "metrics.csv").is_file()


def test_the_event_log_folds_into_the_status_lightning_reports(finished_run: dict[str, Any]) -> None:
    assert finished_run["code"] == 0, finished_run["log"][-6000:]
    status = status_matches_lightning(finished_run["root"], world_size=1, attempt=0)
    assert status["earlyStopped"]["epoch"] == status["epoch"] == 3


def test_the_log_has_progress_lines_and_none_of_the_dropped_noise(finished_run: dict[str, Any]) -> None:
    """stdout is a file here, as in a container without a TTY (kubectl logs): progress comes as single
    lines at the steps of the progress events and one at each epoch's end, never as carriage-return
    bars; nothing that ltj_trainer.noise drops shows."""
    assert finished_run["code"] == 0, finished_run["log"][-6000:]
    text: str = finished_run["log"]
    assert "\r" not in text
    lines = re.findall(r"ltj_trainer\.callbacks: epoch (\d+)/10 step (\d+)/(\d+) (done: )?(.*)$", text, re.M)
    evs = read_events(finished_run["root"])
    progress, vals = of_type(evs, "progress"), of_type(evs, "validation")
    steps = [(int(epoch), int(step)) for epoch, step, _, done, _ in lines if not done]
    assert steps == [(p.get("epoch") + 1, p.get("step")) for p in progress]  # 1-based epochs, as users count
    assert {int(total) for _, _, total, _, _ in lines} == {10 * progress[0].get("steps_per_epoch")}
    ends = [(int(epoch), int(step), rest) for epoch, step, _, done, rest in lines if done]
    assert [(epoch, step) for epoch, step, _ in ends] == [(v.get("epoch") + 1, v.get("step")) for v in vals]
    assert all("train_loss=" in rest and "steps/s=" in rest for *_, done, rest in lines if not done)
    assert all("val_loss=" in rest and "val_acc=" in rest for *_, rest in ends)
    for dropped in noise.DROPPED:
        assert dropped.opening not in text, dropped.why
    assert "training from the first epoch (no checkpoint resumed)" in text


def test_a_finished_run_does_not_train_again(finished_run: dict[str, Any]) -> None:
    assert finished_run["code"] == 0
    root: Path = finished_run["root"]
    before = (root / "events.jsonl").read_bytes()
    files = {p: p.stat().st_mtime_ns for p in (root / "checkpoints").iterdir()}
    tmp: Path = finished_run["tmp"]
    proc = TrainProcess(finished_run["cfg"], tmp / "log2.txt", env={"LTJ_ATTEMPT": "1"})
    assert proc.wait(RUN_TIMEOUT) == 0, proc.tail()
    assert (root / "events.jsonl").read_bytes() == before
    assert {p: p.stat().st_mtime_ns for p in (root / "checkpoints").iterdir()} == files
    assert "already finished" in proc.tail()
    assert json.loads((tmp / "termination-log").read_text())["early_stopped"] is True


def test_two_nodes_ddp_over_gloo_through_the_entrypoint(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "trainer.yaml", **digits_config(tmp_path, max_epochs=2, early_stopping=False,
                                                                   num_nodes=2, devices=1))
    procs = start_pods(cfg, tmp_path)
    codes = [p.wait(RUN_TIMEOUT) for p in procs]
    assert codes == [0, 0], "\n\n".join(p.tail() for p in procs)

    root = tmp_path / "output"
    evs = read_events(root)
    assert [e.seq for e in evs] == list(range(1, len(evs) + 1))  # one writer: global rank 0
    (started,) = of_type(evs, "started")
    assert (started.get("world_size"), started.get("num_nodes"), started.get("devices")) == (2, 2, 1)
    assert started.get("strategy") == "ddp" and started.get("sync_batchnorm") is False
    assert [v.get("epoch") for v in of_type(evs, "validation")] == [0, 1]
    assert len(of_type(evs, "fit_end")) == 1 and len(of_type(evs, "test")) == 1
    last = load_ckpt(root / "checkpoints" / "last.ckpt")
    mc = callback_state(last, "ModelCheckpoint")
    assert of_type(evs, "fit_end")[0].get("best_path") == mc["best_model_path"]
    summaries = [json.loads((tmp_path / f"term-{i}").read_text()) for i in range(2)]
    assert summaries[0]["best_checkpoint"] == summaries[1]["best_checkpoint"] == mc["best_model_path"]
    assert summaries[0]["last_seq"] == evs[-1].seq
    assert "--node-rank=1" in procs[1].tail(200_000)


def test_sigkill_then_restart_resumes_from_last(tmp_path: Path) -> None:
    # Small batches make epochs long enough (~1 s) to kill one mid-run.
    cfg = write_config(tmp_path / "trainer.yaml", **digits_config(tmp_path, batch_size=8, max_epochs=8,
                                                                   early_stopping=False, save_top_k=2))
    root = tmp_path / "output"
    first = TrainProcess(cfg, tmp_path / "run1.txt")

    wait_while_running(first, last_checkpoint_saved(root, min_epoch=2), RUN_TIMEOUT, "the epoch-2 checkpoint")
    first.kill_tree(signal.SIGKILL)
    first.wait(30)
    before = read_events(root)
    assert not of_type(before, "fit_end"), "the run finished before it was killed"
    killed_at = load_ckpt(root / "checkpoints" / "last.ckpt")
    killed_epoch = killed_at["epoch"]
    killed_top_k = set(callback_state(killed_at, "ModelCheckpoint")["best_k_models"])

    second = TrainProcess(cfg, tmp_path / "run2.txt", env={"LTJ_ATTEMPT": "1"})
    assert second.wait(RUN_TIMEOUT) == 0, second.tail()
    evs = read_events(root)
    after = evs[len(before):]
    assert after[0].type == "started" and after[0].seq == before[-1].seq + 1  # seq continues
    assert after[0].get("resumed_from") == str(root / "checkpoints" / "last.ckpt")
    assert after[0].get("attempt") == 1
    # The resumed fit's first step follows the restored checkpoint's.
    assert of_type(after, "progress")[0].get("step") == killed_at["global_step"] + 1
    assert [e.seq for e in evs] == list(range(1, len(evs) + 1))
    epochs_after = [v.get("epoch") for v in of_type(after, "validation")]
    assert epochs_after == list(range(killed_epoch + 1, 8))  # did not restart at 0
    # Top-k state survived: the first save after the restart ranks against the restored files ...
    first_save = next(e for e in after if e.type == "checkpoint")
    restored = {t["path"] for t in first_save.get("top_k")} & killed_top_k
    assert restored, (first_save.fields, killed_top_k)
    # ... and files evicted later were ones saved before the kill: only top-2 + last remain.
    final = callback_state(load_ckpt(root / "checkpoints" / "last.ckpt"), "ModelCheckpoint")
    assert ckpt_files(root) == set(final["best_k_models"]) | {str(root / "checkpoints" / "last.ckpt")}
    assert (root / "csv" / "attempt_1" / "metrics.csv").is_file()


def test_sigterm_saves_a_resumable_checkpoint_and_exits_143(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "trainer.yaml", **digits_config(tmp_path, batch_size=8, max_epochs=4,
                                                                   early_stopping=False))
    sigterm_then_resume(cfg, tmp_path, RUN_TIMEOUT)


def test_ddp_pods_signalled_at_different_times_all_stop_and_save(tmp_path: Path) -> None:
    """Kubelets on different nodes deliver SIGTERM at different moments. Rank 1 alone is
    signalled first: both ranks must stop at the same batch, save one resumable checkpoint and
    exit 143 (Lightning's own handler deadlocks here; ltj_trainer.signals explains why)."""
    cfg = write_config(tmp_path / "trainer.yaml", **digits_config(tmp_path, batch_size=8, max_epochs=6,
                                                                   early_stopping=False, num_nodes=2))
    root = tmp_path / "output"
    procs = start_pods(cfg, tmp_path)
    wait_while_running(procs[0], last_checkpoint_saved(root), RUN_TIMEOUT, "the first checkpoint")
    procs[1].proc.send_signal(signal.SIGTERM)
    assert procs[1].wait(60) == 143, procs[1].tail()
    procs[0].proc.send_signal(signal.SIGTERM)  # the other kubelet, later (may find it exiting)
    assert procs[0].wait(60) == 143, procs[0].tail()
    evs = read_events(root)
    saved = [e for e in evs if e.type == "checkpoint" and e.get("kind") == "sigterm"]
    assert [e.get("path") for e in saved] == [str(root / "checkpoints" / "sigterm.ckpt")]
    assert not of_type(evs, "error")
    assert load_ckpt(root / "checkpoints" / "sigterm.ckpt")["global_step"] == saved[0].get("step")
    for i in range(2):
        assert json.loads((tmp_path / f"term-{i}").read_text())["interrupted"] == "SIGTERM"


def test_a_training_error_exits_1_with_an_error_event(tmp_path: Path) -> None:
    # A misspelt monitor: EarlyStopping(strict=True) raises at the first validation.
    cfg = write_config(tmp_path / "trainer.yaml", **digits_config(tmp_path, early_stop_metric="val_los", max_epochs=2))
    proc = TrainProcess(cfg, tmp_path / "log.txt")
    assert proc.wait(RUN_TIMEOUT) == 1, proc.tail()
    evs = read_events(tmp_path / "output")
    (error,) = of_type(evs, "error")
    assert error.get("exception") == "RuntimeError" and "val_los" in error.get("message")
    term = json.loads((tmp_path / "termination-log").read_text())
    assert term["exit_code"] == 1 and "val_los" in term["error"] and term["last_seq"] == error.seq


def test_more_epochs_after_a_finished_run_train_on_from_its_last_checkpoint(tmp_path: Path) -> None:
    settings: dict[str, Any] = dict(max_epochs=2, early_stopping=False, save_top_k=1)
    first = TrainProcess(write_config(tmp_path / "trainer.yaml", **digits_config(tmp_path, **settings)),
                         tmp_path / "run1.txt")
    assert first.wait(RUN_TIMEOUT) == 0, first.tail()
    root = tmp_path / "output"
    before = read_events(root)
    more = write_config(tmp_path / "more.yaml", **digits_config(tmp_path, **{**settings, "max_epochs": 3}))
    second = TrainProcess(more, tmp_path / "run2.txt", env={"LTJ_ATTEMPT": "1"})
    assert second.wait(RUN_TIMEOUT) == 0, second.tail()
    assert "max_epochs is 3 now: training on from its last checkpoint" in second.tail()
    after = read_events(root)[len(before):]
    assert after[0].type == "started" and after[0].get("resumed_from") == str(root / "checkpoints" / "last.ckpt")
    assert [v.get("epoch") for v in of_type(after, "validation")] == [2]  # the third epoch only
    assert len(of_type(after, "fit_end")) == 1 and len(of_type(after, "test")) == 1  # tested again
    assert load_ckpt(root / "checkpoints" / "last.ckpt")["epoch"] == 2
    assert json.loads((tmp_path / "termination-log").read_text())["epochs"] == 3
