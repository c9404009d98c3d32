"""kubectl ltj against the real local API server: a job whose status the relay would have written
(here patched in as the relay writes it: no operator, no pods), read back by the plugin's commands."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from clitest import ltj
from kubetest import Kube
from ltj_api import events as ev
from ltj_api.events import Event
from ltj_operator import training as tr

pytestmark = pytest.mark.integration


def create_job(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    manifest = {"apiVersion": "ltj.dev/v1alpha1", "kind": "LightningTrainingJob",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"nodes": 2, "model": {"name": "digits_cnn"}, "output": {"claimName": "shared"},
                         "training": {"maxEpochs": 12}}}
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    return kube.get("ltj", name, "-n", namespace)


def relay_write(kube: Kube, namespace: str, name: str, losses: list[float], **status: Any) -> None:
    """The status the relay writes after ``losses`` validated epochs (plus operator fields in ``status``)."""
    now = time.time()
    events = [Event(1, tr.format_time(now - 100), ev.STARTED, {"max_epochs": 12, "monitor": "val_loss", "mode": "min",
                                                                "attempt": 0, "world_size": 2})]
    for epoch, loss in enumerate(losses):
        events.append(Event(len(events) + 1, tr.format_time(now - 90 + 10 * epoch), ev.VALIDATION,
                            {"epoch": epoch, "step": 10 * (epoch + 1), "metrics": {"val_loss": loss, "val_acc": 1 - loss}}))
    state = tr.fold(events)
    body = {"training": tr.to_status(state, now), "trainerStatus": tr.trainer_status(state, now), **status}
    kube.kubectl("patch", "ltj", name, "-n", namespace, "--subresource=status", "--type=merge", "-p",
                 json.dumps({"status": body}))


def test_get_describe_and_plot(kube: Kube, namespace: str, tmp_path: Path) -> None:
    job = create_job(kube, namespace, "digits")
    relay_write(kube, namespace, "digits", [0.9, 0.5, 0.7], phase="Running", restarts=1, attempt=1)
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "digits.created", "namespace": namespace},
             "involvedObject": {"apiVersion": "ltj.dev/v1alpha1", "kind": "LightningTrainingJob", "name": "digits",
                                "namespace": namespace, "uid": job["metadata"]["uid"]},
             "reason": "PodsCreated", "message": "created 2 pods", "type": "Normal",
             "source": {"component": "ltj-operator"}, "firstTimestamp": tr.format_time(time.time())[:19] + "Z",
             "lastTimestamp": tr.format_time(time.time())[:19] + "Z", "count": 1}
    kube.kubectl("create", "-f", "-", input=json.dumps(event))
    n = ("-n", namespace)

    table = ltj(kube.kubeconfig, *n, "get")
    assert table.returncode == 0, table.stderr
    row = next(line.split() for line in table.stdout.splitlines() if line.startswith("digits"))
    assert row[:5] == ["digits", "Running", "3/12", "30", "25%"] and row[-2] == "1", table.stdout

    one = ltj(kube.kubeconfig, "get", "digits", *n)  # -n after the command, as kubectl takes it
    assert one.returncode == 0, one.stderr
    for expected in ("Running", "3/12", "step 30", "ETA", "val_acc=0.3  val_loss=0.7", "1 restart"):
        assert expected in one.stdout, (expected, one.stdout)

    described = ltj(kube.kubeconfig, *n, "describe", "digits")
    assert described.returncode == 0, described.stderr
    for expected in ("digits_cnn", "maxEpochs 12", "Kubeflow progress", "25%", "3 epochs recorded (1-3)",
                     "val_loss: 0.9 -> 0.7  (best 0.5 at epoch 2)", "PodsCreated", "created 2 pods"):
        assert expected in described.stdout, (expected, described.stdout)

    chart = ltj(kube.kubeconfig, *n, "plot", "digits")
    assert chart.returncode == 0, chart.stderr
    assert chart.stdout.startswith("val_loss  (best 0.5 at epoch 2, last 0.7 at epoch 3)"), chart.stdout
    assert "other metrics: val_acc" in chart.stdout

    png = tmp_path / "curves.png"
    written = ltj(kube.kubeconfig, *n, "plot", "digits", "--output", str(png))
    assert written.returncode == 0, written.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.parametrize("args, message", [
    (["get", "nope"], 'lightningtrainingjobs.ltj.dev "nope" in namespace'),
    (["plot", "digits", "val_f1"], "metric 'val_f1' is not in the history; it has: val_loss, val_acc"),
    (["logs", "digits", "--rank", "2"], "--rank: 2 is not a rank of digits, which has 2 node(s): 0 to 1"),
])
def test_errors_go_to_stderr_with_exit_code_1(kube: Kube, namespace: str, args: list[str], message: str) -> None:
    create_job(kube, namespace, "digits")
    relay_write(kube, namespace, "digits", [0.9])
    proc = ltj(kube.kubeconfig, "-n", namespace, *args)
    assert proc.returncode == 1 and proc.stdout == "", (proc.returncode, proc.stdout)
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr


def test_logs_of_a_final_job_whose_pods_are_gone(kube: Kube, namespace: str) -> None:
    create_job(kube, namespace, "done")
    kube.kubectl("patch", "ltj", "done", "-n", namespace, "--subresource=status", "--type=merge", "-p",
                 json.dumps({"status": {"phase": "Failed"}}))
    proc = ltj(kube.kubeconfig, "-n", namespace, "logs", "done", "--rank", "1")
    assert proc.returncode == 1
    assert "rank 1 has no pod" in proc.stderr and "cleanPodPolicy" in proc.stderr, proc.stderr


def test_watch_redraws_on_each_change_and_ends_with_the_job(kube: Kube, namespace: str) -> None:
    create_job(kube, namespace, "live")
    relay_write(kube, namespace, "live", [0.9], phase="Running")
    proc = subprocess.Popen([sys.executable, "-m", "ltj_cli", "--kubeconfig", kube.kubeconfig, "-n", namespace,
                             "watch", "live"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore

    def wait_line(text: str) -> str:
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} in the watch output:\n{''.join(seen)}")

    try:
        wait_line("1/12")  # the first rendering: the job as it is
        relay_write(kube, namespace, "live", [0.9, 0.8], phase="Running")
        wait_line("2/12")  # redrawn from the watch event
        relay_write(kube, namespace, "live", [0.9, 0.8], phase="Succeeded")
        wait_line("Succeeded")
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
