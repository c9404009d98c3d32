"""kubectl ltj's pure parts: a job's status rendered as text, the metric charts, flags and kubeconfig."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from ltj_api import events as ev
from ltj_api.events import Event
from ltj_cli import plot, view
from ltj_cli.main import parser
from ltj_operator import training as tr

pytestmark = pytest.mark.unit

T0 = tr.parse_time("2025-01-01T00:00:00Z")
assert T0 is not None
BEST = "/output/checkpoints/digits_cnn_epoch=01-val_loss=0.03.ckpt"
LOSSES = [0.9, 0.031234567, 0.05]


def _event(seq: int, at: float, type_: str, **fields: Any) -> Event:
    return Event(seq=seq, time=tr.format_time(T0 + at), type=type_, fields=fields)


def running_job(now: float = T0 + 35) -> dict[str, Any]:
    """A job as the API returns it mid-run: status.training and trainerStatus as the relay writes them."""
    events = [_event(1, 0, ev.STARTED, attempt=1, world_size=2, max_epochs=12, monitor="val_loss", mode="min",
                     precision="32-true", resumed_from=None)]
    for epoch, loss in enumerate(LOSSES):
        events.append(_event(len(events) + 1, 10 * (epoch + 1), ev.VALIDATION, epoch=epoch, step=20 * (epoch + 1),
                             metrics={"val_loss": loss, "lr-AdamW": 0.001}))
        if epoch == 1:  # the best so far: saved as a top-k checkpoint
            events.append(_event(len(events) + 1, 20.1, ev.CHECKPOINT, path=BEST, score=loss, epoch=1, step=40,
                                 kind="top_k", top_k=[{"path": BEST, "score": loss}], best_path=BEST, best_score=loss))
    state = tr.fold(events)
    return {
        "apiVersion": "ltj.dev/v1alpha1", "kind": "LightningTrainingJob",
        "metadata": {"name": "digits", "namespace": "team-a", "uid": "u1",
                     "creationTimestamp": tr.format_time(T0 - 60)[:19] + "Z"},
        "spec": {"nodes": 2, "gpusPerNode": 0, "model": {"name": "digits_cnn"}, "data": {"name": "digits"},
                 "training": {"maxEpochs": 12, "monitor": {"metric": "val_loss", "mode": "min"},
                              "earlyStopping": {"enabled": True, "patience": 3}},
                 "output": {"claimName": "shared"}, "runPolicy": {"backoffLimit": 3, "cleanPodPolicy": "Running"}},
        "status": {"phase": "Running", "attempt": 1, "restarts": 1, "readyNodes": 2, "nodes": 2,
                   "conditions": [{"type": "Running", "status": "True", "reason": "AllPodsRunning",
                                   "message": "2 of 2 pods running", "lastTransitionTime": tr.format_time(T0)}],
                   "training": tr.to_status(state, now), "trainerStatus": tr.trainer_status(state, now)},
    }


def text(renderable: Any) -> str:
    return view.render_text(renderable, width=140)


def test_table_row_per_job_with_progress_and_best() -> None:
    pending = {"metadata": {"name": "fresh", "namespace": "team-a", "creationTimestamp": "2025-01-01T00:00:30Z"}}
    out = text(view.jobs_table([running_job(), pending], T0 + 35))
    header, *rows = [line.split() for line in out.splitlines() if line.strip() and not set(line.strip()) <= {"─", " "}]
    assert header == ["NAME", "PHASE", "EPOCH", "STEP", "PROGRESS", "ETA", "BEST", "RESTARTS", "AGE"]
    assert rows[0][:6] == ["digits", "Running", "3/12", "60", "25%", "1m25s"]
    assert "val_loss=0.03123" in rows[0] and "(digits_cnn_epoch=01-val_loss=0.03.ckpt)" in rows[0]
    assert rows[0][-2:] == ["1", "1m35s"]
    # A job the operator has not recorded yet reads as Pending (the CRD's default), every value unknown.
    assert rows[1] == ["fresh", "Pending", "-", "-", "-", "-", "-", "0", "5s"]
    assert text(view.jobs_table([running_job()], T0 + 35, with_namespace=True)).split()[0] == "NAMESPACE"


def test_progress_view_shows_what_a_user_watches() -> None:
    out = text(view.job_view(running_job(), T0 + 35))
    for expected in ("team-a/digits", "Running", "attempt 1", "2/2 nodes ready", "1 restart)", "3/12", "step 60",
                     "25%", "ETA 1m25s", "lr-AdamW=0.001", "val_loss=0.05",
                     "val_loss=0.03123  (digits_cnn_epoch=01-val_loss=0.03.ckpt)", "Last event", "5s ago"):
        assert expected in out, (expected, out)


@pytest.mark.parametrize("change, expected", [
    ({"phase": "Failed", "failure": {"message": "pod digits-node-1 (rank 1) exited with code 1: ValueError: bad"}},
     "pod digits-node-1 (rank 1) exited with code 1: ValueError: bad"),
    ({"conditions": [{"type": "Stalled", "status": "True", "reason": "NoRecentEvents",
                      "message": "no training event since 10:00"}]}, "Stalled: no training event since 10:00"),
    ({"phase": "Restarting", "failure": {"message": "pod digits-node-0 was OOMKilled"}},
     "restarting after: pod digits-node-0 was OOMKilled"),
    ({"training": {"earlyStopped": {"epoch": 4, "reason": "patience", "message": "no improvement"}}},
     "stopped early at epoch 5: no improvement"),
])
def test_the_view_says_why_a_job_failed_stalls_or_stopped(change: dict[str, Any], expected: str) -> None:
    job = running_job()
    job["status"] = {**job["status"], **change}
    assert expected in text(view.job_view(job, T0 + 35))
    assert expected in text(view.describe(job, [], T0 + 35))


def test_finished_job_has_no_eta_and_shows_test_metrics() -> None:
    job = running_job()
    t = job["status"]["training"]
    t.update(finished=True, testMetrics={"test_loss": 0.04, "test_acc": 0.987654})
    job["status"]["phase"] = "Succeeded"
    out = text(view.job_view(job, T0 + 35))
    assert "ETA done" in out and "test_acc=0.9877  test_loss=0.04" in out
    job["status"]["phase"], t["finished"] = "Failed", False
    assert "ETA -" in text(view.job_view(job, T0 + 35))


def test_describe_reads_well() -> None:
    events = [
        {"type": "Warning", "reason": "PodFailed", "message": "pod digits-node-0 was OOMKilled", "count": 2,
         "lastTimestamp": tr.format_time(T0 + 5)[:19] + "Z", "source": {"component": "ltj-operator"}},
        {"type": "Normal", "reason": "PodsCreated", "message": "created 2 pods",
         "lastTimestamp": tr.format_time(T0)[:19] + "Z", "source": {"component": "ltj-operator"}},
    ]
    out = text(view.describe(running_job(), events, T0 + 35))
    sections = [line.strip() for line in out.splitlines() if line.strip() in (
        "Spec", "Status", "Conditions", "Training", "History", "Events")]
    assert sections == ["Spec", "Status", "Conditions", "Training", "History", "Events"]
    for expected in ("digits_cnn", "2 (CPU)", "maxEpochs 12", "monitor val_loss (min)", "early stopping (patience 3)",
                     "backoffLimit 3, cleanPodPolicy Running", "Attempt", "1 (1 restart)", "AllPodsRunning",
                     "2 of 2 pods running", f"val_loss=0.03123  ({BEST})", "Kubeflow progress", "25%",
                     "3 epochs recorded (1-3)", "val_loss: 0.9 -> 0.05  (best 0.03123 at epoch 2)",
                     "lr-AdamW: 0.001 -> 0.001", "30s (x2)"):
        assert expected in out, (expected, out)
    # Events oldest first, as kubectl describe lists them.
    assert out.index("PodsCreated") < out.index("PodFailed")
    # Metric names are shown as logged (kubectl describe would re-spell lr-AdamW as "Lr - Adam W").
    assert "Lr - Adam W" not in out


def test_describe_of_a_job_without_training() -> None:
    job = running_job()
    job["status"] = {"phase": "Pending"}
    out = text(view.describe(job, [], T0))
    assert "no training event yet" in out and "no validated epoch yet" in out and "none yet" in out


def test_durations_read_like_kubectl_ages() -> None:
    assert [view.duration(s) for s in (None, -3, 0, 59.9, 60, 3599, 3600, 86399, 90061)] == [
        "-", "0s", "0s", "59s", "1m00s", "59m59s", "1h00m", "23h59m", "1d01h"]
    assert [view.number(v) for v in (None, float("nan"), True, 0.031234567, 1234567.0, 3)] == [
        "n/a", "n/a", "n/a", "0.03123", "1.235e+06", "3"]


# -- plot -------------------------------------------------------------------------------------------
def history() -> list[dict[str, Any]]:
    return running_job()["status"]["training"]["history"]


def test_text_chart_draws_the_curve_and_marks_the_best() -> None:
    points = plot.series(history(), "val_loss")
    assert points == [(1, 0.9), (2, 0.031234567), (3, 0.05)]  # epochs counted from 1
    chart = plot.text_chart(points, "val_loss", width=21, height=9, mode="min").splitlines()
    assert chart[0] == "val_loss  (best 0.03123 at epoch 2, last 0.05 at epoch 3)"
    rows = chart[1:10]
    pad = rows[0].index("│")
    grid = [r[pad + 1:] for r in rows]
    assert rows[0].startswith("    0.9 │") and rows[-1].startswith("0.03123 │")
    assert grid[0][0] == plot.POINT  # epoch 1, the highest value: top left
    assert grid[-1][10] == plot.BEST  # epoch 2, the best (lowest): bottom, middle
    assert grid[-1][20] == plot.POINT or any(g[20] == plot.POINT for g in grid)
    assert all(plot.LINE in g for g in grid[1:-1])  # the segment from epoch 1 down to epoch 2 is drawn
    assert chart[-2].split() == ["1", "3"] and chart[-1].strip() == "epoch"
    # max mode marks the highest value instead.
    up = plot.text_chart(points, "val_loss", width=21, height=9, mode="max").splitlines()
    assert up[1][pad + 1] == plot.BEST


def test_chart_of_one_point_or_a_flat_line() -> None:
    assert plot.BEST in plot.text_chart([(1, 0.5)], "m", width=10, height=3)
    flat = plot.text_chart([(1, 0.5), (2, 0.5), (3, 0.5)], "m", width=10, height=5).splitlines()
    assert plot.BEST in flat[3] and plot.POINT in flat[3]  # the middle row


def test_choose_names_what_is_missing() -> None:
    h = history()
    assert plot.choose(h, None, "val_loss") == ["val_loss"]
    assert plot.metric_names(h, "val_loss") == ["val_loss", "lr-AdamW"]
    with pytest.raises(plot.PlotError, match="'val_acc' is not in the history; it has: lr-AdamW, val_loss"):
        plot.choose(h, "val_acc", None)
    with pytest.raises(plot.PlotError, match="no validated epoch"):
        plot.choose([], None, None)
    nan = copy.deepcopy(h)
    for entry in nan:
        entry["metrics"]["val_loss"] = None
    assert plot.series(nan, "val_loss") == []
    with pytest.raises(plot.PlotError, match="val_loss has no finite value"):
        plot.text_chart([], "val_loss")


def test_png_is_written_with_one_panel_per_metric(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = plot.png(history(), ["val_loss", "lr-AdamW"], tmp_path / "curves.png", "team-a/digits", "val_loss", "min")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    with pytest.raises(plot.PlotError, match="no finite metric value"):
        plot.png(history(), ["missing"], tmp_path / "none.png", "t")


# -- flags and kubeconfig ------------------------------------------------------------------------------
def test_connection_flags_before_or_after_the_command() -> None:
    args = parser().parse_args(["-n", "a", "--context", "c", "get", "job"])
    assert (args.namespace, args.context, args.kubeconfig, args.job) == ("a", "c", None, "job")
    args = parser().parse_args(["--context", "c", "logs", "job", "-n", "b", "--rank", "1", "-f"])
    assert (args.namespace, args.context, args.rank, args.follow) == ("b", "c", 1, True)
    assert parser().parse_args(["plot", "j", "val_acc", "-o", "x.png"]).output == "x.png"


@pytest.mark.parametrize("argv", [["get", "a", "b"], ["logs"], ["logs", "j", "--rank", "one"], ["frobnicate"]])
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "usage: kubectl ltj" in capsys.readouterr().err


def _kubeconfig(path: Path, contexts: dict[str, str | None], current: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": n, "context": {"cluster": "c", "user": "u", **({"namespace": ns} if ns else {})}}
                     for n, ns in contexts.items()]}))
    return path


def test_namespace_and_context_as_kubectl_chooses_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ltj_cli.cluster import CliError, connect

    main = _kubeconfig(tmp_path / "main", {"dev": "team-a", "prod": None}, "dev")
    assert connect(str(main), None, None).namespace == "team-a"  # the current context's namespace
    assert connect(str(main), "prod", None).namespace == "default"
    assert connect(str(main), "dev", "other").namespace == "other"  # -n wins
    # $KUBECONFIG as a list of files, as kubectl merges it.
    extra = _kubeconfig(tmp_path / "extra", {"ci": "ci-ns"}, "ci")
    monkeypatch.setenv("KUBECONFIG", f"{main}:{extra}")
    assert connect(None, "ci", None).namespace == "ci-ns"
    with pytest.raises(CliError, match=f"kubeconfig {tmp_path / 'missing'}"):
        connect(str(tmp_path / "missing"), None, None)
    with pytest.raises(CliError, match="nope"):
        connect(str(main), "nope", None)


def test_a_queued_jobs_queue_and_evictions_are_shown() -> None:
    job = running_job()
    job["status"].update({
        "queue": {"name": "gpus", "workload": "lightningtrainingjob-digits-1a2b3", "admitted": False,
                  "reason": "Pending", "message": "couldn't assign flavors to pod set master"},
        "evictions": 2,
        "lastEviction": {"reason": "Preempted", "message": "Preempted to accommodate a workload (UID: u1)",
                         "time": "2026-12-07T10:00:00Z", "attempt": 1}})
    out = text(view.describe(job, [], T0 + 35))
    for expected in ("gpus (Pending: couldn't assign flavors to pod set master)", "lightningtrainingjob-digits-1a2b3",
                     "2, last at 2026-12-07T10:00:00Z during attempt 1 (Preempted: Preempted to accommodate a "
                     "workload (UID: u1))"):
        assert expected in out, (expected, out)
    progress = text(view.job_view(job, T0 + 35))
    assert "2 evictions" in progress and "gpus (Pending: couldn't assign" in progress
    job["status"]["queue"].update(admitted=True, clusterQueue="team-a")
    assert "gpus (admitted to ClusterQueue team-a)" in text(view.describe(job, [], T0 + 35))
    # An unqueued job shows neither.
    plain = text(view.describe(running_job(), [], T0 + 35))
    assert "Queue" not in plain and "Evictions" not in plain
