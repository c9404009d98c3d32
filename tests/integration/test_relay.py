"""The relay against the real local API server: a real ``ltj-relay`` process, the per-job RBAC the
operator renders, a token from ``kubectl create token``, and an events file written by the trainer's
Writer. Status is observed with the admin credentials, independently of the relay's token."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from kubetest import Kube, wait_for
from ltj_operator import constants as C
from ltj_operator import render
from ltj_operator.relay.kube import ApiError, Endpoint, JobStatusClient
from ltj_operator.spec import parse_job, relay_name
from ltj_api import events as ev
from ltj_api.events import Writer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "ltj.dev_lightningtrainingjobs.yaml"
RELAY_BIN = Path(sys.executable).parent / "ltj-relay"


# -- helpers ----------------------------------------------------------------------------------------
@dataclass
class Admin:
    """Reads objects with the cluster's admin client certificate (an observer independent of the relay)."""

    kube: Kube

    def __post_init__(self) -> None:
        cfg = yaml.safe_load(Path(self.kube.kubeconfig).read_text())
        cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
        self.server: str = cluster["server"]
        self.ca: str = cluster["certificate-authority"]
        self._ctx = ssl.create_default_context(cafile=self.ca)
        self._ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        url = urllib.parse.urlsplit(self.server)
        self._host, self._port = url.hostname or "127.0.0.1", url.port or 443

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return self.kube.kubectl(*args, input=input, check=check)

    def job(self, namespace: str, name: str) -> dict[str, Any]:
        conn = http.client.HTTPSConnection(self._host, self._port, context=self._ctx, timeout=10)
        try:
            conn.request("GET", f"/apis/{C.GROUP}/{C.VERSION}/namespaces/{namespace}/{C.PLURAL}/{name}")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body[:500]
            return json.loads(body)
        finally:
            conn.close()

    def training(self, namespace: str, name: str) -> dict[str, Any]:
        return (self.job(namespace, name).get("status") or {}).get("training") or {}


def create_job(admin: Admin, namespace: str, name: str) -> dict[str, Any]:
    """A job object plus the relay's ServiceAccount, Role and RoleBinding exactly as the operator renders them.
    No operator runs here: the relay is the only writer of the status."""
    manifest = {
        "apiVersion": C.API_VERSION, "kind": C.KIND, "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"name": "digits_cnn"}, "output": {"claimName": "shared-output"},
                 "training": {"maxEpochs": 5}},
    }
    admin.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    body = admin.job(namespace, name)
    job = parse_job(body)
    rbac = [render.render_relay_service_account(job), render.render_relay_role(job),
            render.render_relay_role_binding(job)]
    admin.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    return body


def relay_token(admin: Admin, namespace: str, job: str, path: Path) -> Path:
    token = admin.kubectl("create", "token", "-n", namespace, relay_name(job), "--duration=1h").stdout.strip()
    path.write_text(token)
    return path


@dataclass
class RelayProcess:
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def writes(self) -> int:
        return self.output().count("wrote status.training")

    def terminate(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"relay did not stop within {timeout}s after SIGTERM:\n{self.output()[-3000:]}")


@contextmanager
def relay(admin: Admin, ca: Path, token: Path, namespace: str, job: str, events: Path, *extra: str,
          log: Path) -> Iterator[RelayProcess]:
    out = open(log, "ab")
    proc = subprocess.Popen(
        [str(RELAY_BIN), "--job", job, "--namespace", namespace, "--server", admin.server, "--token-file", str(token),
         "--ca-file", str(ca), "--events-file", str(events), "--log-level", "INFO", *extra],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, "LTJ_SA_DIR": "/nonexistent"})
    out.close()
    r = RelayProcess(proc, log)
    try:
        yield r
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def checkpoint(w: Writer, epoch: int, loss: float, top: list[tuple[str, float]], kind: str = "top_k") -> None:
    """A top-k checkpoint event as ModelCheckpoint(save_top_k=2) reports it; ``top`` is updated in place."""
    path = f"/output/checkpoints/digits_cnn_epoch={epoch:02d}-val_loss={loss:.2f}.ckpt"
    top[:] = sorted(top + [(path, loss)], key=lambda t: t[1])[:2]
    w.write(ev.CHECKPOINT, path=path, score=loss, epoch=epoch, step=10 * (epoch + 1), kind=kind,
            top_k=[{"path": p, "score": s} for p, s in top], best_path=top[0][0], best_score=top[0][1])


@pytest.fixture
def admin(kube: Any) -> Admin:
    return Admin(kube)


@pytest.fixture
def ca(kube: Any) -> Path:
    return Path(kube.run_dir) / "pki" / "ca.crt"


# -- the tests ----------------------------------------------------------------------------------------
def test_events_arrive_in_status_while_written(admin: Admin, ca: Path, namespace: str, tmp_path: Path) -> None:
    create_job(admin, namespace, "live")
    token = relay_token(admin, namespace, "live", tmp_path / "token")
    events = tmp_path / "out" / "events.jsonl"  # does not exist yet when the relay starts
    min_interval = 3.0
    with relay(admin, ca, token, namespace, "live", events, "--min-interval", str(min_interval),
               log=tmp_path / "relay.log") as r:
        time.sleep(0.5)
        assert r.proc.poll() is None, r.output()
        assert admin.training(namespace, "live") == {}
        w = Writer(events)
        w.write(ev.STARTED, world_size=2, num_nodes=2, devices=1, precision="32-true", accelerator="cpu",
                sync_batchnorm=False, resumed_from=None, attempt=0, max_epochs=5, monitor="val_loss", mode="min",
                model_class="digits_cnn", data_class="digits")
        # How soon each write may go is next_write_at's (test_relay_logic, on given times); speed is the
        # benchmark's (benchmarks/relay_latency.py). Here: that the writes arrive, and what they hold.
        st = wait_for(lambda: admin.training(namespace, "live").get("seq") == 1 and admin.training(namespace, "live"),
                      10, what="the started event in status")
        assert st["maxEpochs"] == 5 and st["attempt"] == 0 and st["progress"] == 0
        assert st["finished"] is False and "epoch" not in st

        top: list[tuple[str, float]] = []
        losses = [0.9, 0.6, 0.7]
        seen: list[dict[str, Any]] = []
        for epoch, loss in enumerate(losses):
            time.sleep(0.3)
            w.write(ev.VALIDATION, epoch=epoch, step=10 * (epoch + 1), metrics={"val_loss": loss, "val_acc": 1 - loss})
            checkpoint(w, epoch, loss, top)
            want = w.seq
            st = wait_for(lambda: (t := admin.training(namespace, "live")).get("seq") == want and t,
                          min_interval + 8, what=f"epoch {epoch} in status")
            seen.append(st)
            assert st["epoch"] == epoch and st["step"] == 10 * (epoch + 1)
            assert st["metrics"]["val_loss"] == loss
            assert st["progress"] == pytest.approx(100 * (epoch + 1) / 5)
            assert st["bestScore"] == min(losses[: epoch + 1])
            assert [k["score"] for k in st["topK"]] == sorted(losses[: epoch + 1])[:2]
            assert st["lastCheckpoint"].endswith(f"epoch={epoch:02d}-val_loss={loss:.2f}.ckpt")
        assert "etaSeconds" in seen[-1]
        assert seen[-1]["bestCheckpoint"].endswith("epoch=01-val_loss=0.60.ckpt")

        # A final event skips the throttle: early stop shows up at once, not min_interval later.
        time.sleep(0.3)
        w.write(ev.VALIDATION, epoch=3, step=40, metrics={"val_loss": 0.8, "val_acc": 0.2})
        w.write(ev.EARLY_STOPPED, epoch=3, reason="patience", best_score=0.6, monitor="val_loss",
                message="Monitored metric val_loss did not improve in the last 2 records. Best score: 0.600.")
        want = w.seq
        st = wait_for(lambda: (t := admin.training(namespace, "live")).get("seq") == want and t, 10,
                      what="the early stop in status")
        assert st["earlyStopped"]["epoch"] == 3 and st["earlyStopped"]["reason"] == "patience"
        assert st["earlyStopped"]["bestScore"] == 0.6
        # The trainer is SIGKILLed here (no fit_end): the status still says it stopped early.
        assert r.terminate() == 0
    final = admin.training(namespace, "live")
    assert final["earlyStopped"]["epoch"] == 3 and final["finished"] is False
    # Throttled: 3 epochs of 2 events each and the stop took far fewer writes than events.
    assert r.writes() <= 6, r.output()
    assert [h["epoch"] for h in final["history"]] == [0, 1, 2, 3]
    assert [h["metrics"]["val_loss"] for h in final["history"]] == [*losses, 0.8]
    # The relay wrote only status.training and the Kubeflow-style trainerStatus derived from it, which
    # the API server accepted (the phase is the CRD's default), and the spec is untouched.
    body = admin.job(namespace, "live")
    assert body["status"] == {"phase": "Pending", "training": final, "trainerStatus": body["status"]["trainerStatus"]}
    progress = body["status"]["trainerStatus"]
    assert progress["progressPercentage"] == 80
    assert progress.get("estimatedRemainingSeconds") == final.get("etaSeconds")  # from the same write
    assert progress["metrics"] == [{"name": "val_acc", "value": "0.2"}, {"name": "val_loss", "value": "0.8"}]
    assert progress["lastUpdatedTime"] == final["updateTime"][:19] + "Z"
    assert body["metadata"]["generation"] == 1


def test_relay_token_is_scoped_to_its_own_job_status(admin: Admin, ca: Path, namespace: str, tmp_path: Path) -> None:
    create_job(admin, namespace, "mine")
    create_job(admin, namespace, "other")
    admin.kubectl("create", "secret", "generic", "-n", namespace, "s3", "--from-literal=key=hunter2")
    token = relay_token(admin, namespace, "mine", tmp_path / "token")
    ep = Endpoint(admin.server, token, ca)

    mine = JobStatusClient(ep, namespace, "mine")
    mine.merge_patch({"status": {"training": {"seq": 1}}})
    assert admin.training(namespace, "mine") == {"seq": 1}

    other = JobStatusClient(ep, namespace, "other")
    for call in (lambda: other.merge_patch({"status": {"training": {"seq": 99}}}), other.get):
        with pytest.raises(ApiError) as err:
            call()
        assert err.value.status == 403, err.value
    assert admin.training(namespace, "other") == {}

    def raw(method: str, path: str, body: Any = None, ctype: str = "application/merge-patch+json") -> int:
        url = urllib.parse.urlsplit(admin.server)
        conn = http.client.HTTPSConnection(url.hostname, url.port, context=ssl.create_default_context(cafile=str(ca)),
                                           timeout=10)
        headers = {"Authorization": f"Bearer {token.read_text().strip()}"}
        if body is not None:
            headers["Content-Type"] = ctype
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        status = conn.getresponse().status
        conn.close()
        return status

    jobs = f"/apis/{C.GROUP}/{C.VERSION}/namespaces/{namespace}/{C.PLURAL}"
    assert raw("GET", f"/api/v1/namespaces/{namespace}/secrets/s3") == 403
    assert raw("GET", f"/api/v1/namespaces/{namespace}/secrets") == 403
    assert raw("GET", jobs) == 403  # no list, even of jobs
    assert raw("PATCH", f"{jobs}/mine", {"spec": {"nodes": 8}}) == 403  # no spec writes on its own job
    assert raw("DELETE", f"{jobs}/mine") == 403
    assert raw("GET", f"{jobs}/mine") == 403  # not even its own job: the relay reads only its status
    assert raw("GET", f"{jobs}/mine/status") == 200


def test_sigterm_drains_the_tail(admin: Admin, ca: Path, namespace: str, tmp_path: Path) -> None:
    create_job(admin, namespace, "drain")
    token = relay_token(admin, namespace, "drain", tmp_path / "token")
    events = tmp_path / "events.jsonl"
    w = Writer(events)
    w.write(ev.STARTED, attempt=0, max_epochs=50, monitor="val_loss", mode="min", resumed_from=None)
    with relay(admin, ca, token, namespace, "drain", events, "--min-interval", "60",
               log=tmp_path / "relay.log") as r:
        wait_for(lambda: admin.training(namespace, "drain").get("seq") == 1, 10, what="the first write")
        for epoch in range(20):  # non-final events, held back by the 60 s throttle (writes() == 2 below)
            w.write(ev.VALIDATION, epoch=epoch, step=epoch + 1, metrics={"val_loss": 1.0 / (epoch + 1)})
        w.write(ev.VALIDATION, epoch=20, step=21, metrics={"val_loss": 0.01})  # the tail, just before SIGTERM
        assert r.terminate() == 0
    st = admin.training(namespace, "drain")
    assert st["seq"] == w.seq == 22
    assert st["epoch"] == 20 and st["metrics"] == {"val_loss": 0.01}
    assert r.writes() == 2, r.output()


def test_restarted_relay_replays_and_never_moves_status_backwards(admin: Admin, ca: Path, namespace: str,
                                                                 tmp_path: Path) -> None:
    create_job(admin, namespace, "replay")
    token = relay_token(admin, namespace, "replay", tmp_path / "token")
    events = tmp_path / "events.jsonl"
    w = Writer(events)
    w.write(ev.STARTED, attempt=0, max_epochs=3, monitor="val_acc", mode="max", resumed_from=None)
    for epoch in range(3):
        w.write(ev.VALIDATION, epoch=epoch, step=5 * (epoch + 1), metrics={"val_acc": 0.5 + 0.1 * epoch})
    with open(events, "ab") as f:
        f.write(b"garbage line\n")
    w.write(ev.FIT_END, epoch=3, step=15, best_path=None, best_score=None, stopped_early=False)
    w.write(ev.TEST, metrics={"test_acc": 0.75}, ckpt_path="best")

    # A restarted relay folds the whole file from scratch and converges to the same status.
    for i in range(2):
        with relay(admin, ca, token, namespace, "replay", events, log=tmp_path / f"relay{i}.log") as r:
            wait_for(r.writes, 10, what="a write by this relay")  # the status may already be there from run 0
            st = admin.training(namespace, "replay")
            assert st["seq"] == w.seq
            assert r.terminate() == 0
        assert st["finished"] is True and st["testMetrics"] == {"test_acc": 0.75}
        assert st["skippedLines"] == 1 and st["mode"] == "max" and st["metrics"] == {"val_acc": pytest.approx(0.7)}

    # Another writer (say, the relay of a newer pod) is ahead: an old log must not overwrite it.
    admin.kubectl("patch", "ltj", "replay", "-n", namespace, "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": {"training": {"seq": 1000, "epoch": 42}}}))
    ahead = admin.training(namespace, "replay")
    assert ahead["seq"] == 1000
    with relay(admin, ca, token, namespace, "replay", events, log=tmp_path / "relay-stale.log") as r:
        wait_for(lambda: "ahead of the log" in r.output(), 10, what="the relay to notice the newer status")
        assert r.terminate() == 0
    assert admin.training(namespace, "replay") == ahead


# -- the API server down for a while (on a private control plane: the shared one stays undisturbed) ------
class Component:
    """One control-plane process of a local cluster, paused or restarted with its own command line."""

    def __init__(self, run_dir: Path, name: str):
        self.run_dir, self.name = run_dir, name
        self.pid = json.loads((run_dir / "pids.json").read_text())[name]
        self.cmdline = [a.decode() for a in Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")[:-1]]

    def pause(self) -> None:
        os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        os.killpg(self.pid, signal.SIGKILL)  # a crash: no graceful shutdown (that waits ~60 s for watches)
        try:
            os.waitpid(self.pid, 0)  # our child (the ControlPlane was started in this process)
        except ChildProcessError:
            wait_for(lambda: not Path(f"/proc/{self.pid}").exists(), 30, what=f"{self.name} to exit")

    def start(self) -> None:
        with open(self.run_dir / "logs" / f"{self.name}.log", "ab") as out:
            proc = subprocess.Popen(self.cmdline, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.pid = proc.pid
        pids = json.loads((self.run_dir / "pids.json").read_text())
        pids[self.name] = proc.pid  # so that the cluster's down() stops the new process
        (self.run_dir / "pids.json").write_text(json.dumps(pids))


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[tuple[Admin, Path]]:
    from ltj_localcluster.cluster import down, ensure_binaries
    from ltj_localcluster.controlplane import ControlPlane

    run_dir = tmp_path / "cp"
    info = ControlPlane(run_dir, ensure_binaries()).start()
    try:
        admin = Admin(Kube(info.kubeconfig, Path(info.bin_dir), Path(info.run_dir)))
        admin.kubectl("apply", "--server-side", "-f", str(CRD))
        # `kubectl wait` errors out (instead of waiting) while the new CRD has no conditions yet.
        wait_for(lambda: admin.kubectl("wait", "--for=condition=Established", "--timeout=10s", f"crd/{C.CRD_NAME}",
                                       check=False).returncode == 0, 60, what="the CRD to be established")
        yield admin, run_dir
    finally:
        down(run_dir)  # processes (also a restarted API server) and the bridge


def api_ready(admin: Admin) -> bool:
    return admin.kubectl("get", "--raw", "/readyz", check=False).returncode == 0


@pytest.mark.slow
def test_api_server_down_loses_no_event(private_cluster: tuple[Admin, Path], tmp_path: Path) -> None:
    from ltj_operator import training as tr

    admin, run_dir = private_cluster
    ns = "relay"
    admin.kubectl("create", "namespace", ns)
    wait_for(lambda: admin.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0, 30,
             what="the namespace's default ServiceAccount")
    create_job(admin, ns, "outage")
    token = relay_token(admin, ns, "outage", tmp_path / "token")
    events = tmp_path / "events.jsonl"
    w = Writer(events)
    ca = run_dir / "pki" / "ca.crt"

    def at_seq() -> Any:
        return (t := admin.training(ns, "outage")).get("seq") == w.seq and t

    def failures(r: RelayProcess) -> int:
        return r.output().count("failed")

    with relay(admin, ca, token, ns, "outage", events, "--min-interval", "0.5", "--max-backoff", "2",
               "--request-timeout", "2", log=tmp_path / "relay.log") as r:
        w.write(ev.STARTED, attempt=0, max_epochs=6, monitor="val_loss", mode="min", resumed_from=None)
        w.write(ev.VALIDATION, epoch=0, step=10, metrics={"val_loss": 0.9})
        wait_for(at_seq, 15, what="status before the outage")

        # 1. The API server hangs (SIGSTOP): requests time out.
        apiserver = Component(run_dir, "kube-apiserver")
        apiserver.pause()
        try:
            for epoch in (1, 2):
                w.write(ev.VALIDATION, epoch=epoch, step=10 * (epoch + 1), metrics={"val_loss": 0.9 - 0.1 * epoch})
                time.sleep(0.5)
            wait_for(lambda: failures(r) >= 1, 15, what="a failed write while the API server hangs")
        finally:
            apiserver.resume()
        st = wait_for(at_seq, 30, what="the events written while the API server hung")
        assert st["epoch"] == 2 and st["metrics"] == {"val_loss": pytest.approx(0.7)}

        # 2. The API server crashes (connection refused) and stays down a while; final events wait for it.
        apiserver.kill()
        down_since = time.monotonic()
        before = failures(r)
        for epoch in (3, 4):
            w.write(ev.VALIDATION, epoch=epoch, step=10 * (epoch + 1), metrics={"val_loss": 0.9 - 0.1 * epoch})
        w.write(ev.EARLY_STOPPED, epoch=4, reason="stopping_threshold", message="below threshold", best_score=0.5,
                monitor="val_loss")
        w.write(ev.FIT_END, epoch=5, step=50, best_path=None, best_score=None, stopped_early=True)
        w.write(ev.TEST, metrics={"test_loss": 0.55}, ckpt_path="best")
        wait_for(lambda: failures(r) >= before + 3 and time.monotonic() - down_since > 5, 30,
                 what="failed writes while the API server is down")
        assert r.proc.poll() is None, "the relay must keep retrying, not exit"
        apiserver.start()
        wait_for(lambda: api_ready(admin), 90, what="the restarted API server")
        st = wait_for(at_seq, 30, what="the events written while the API server was down")
        assert r.terminate() == 0

    # Nothing lost: what the CRD stores of status.training is exactly the fold of the whole file.
    crd = yaml.safe_load(CRD.read_text())
    stored = set(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
                 ["training"]["properties"]) - {"updateTime", "etaSeconds"}
    want = json.loads(json.dumps(tr.to_status(tr.fold(ev.read_all(events)), time.time())))
    assert {k: v for k, v in st.items() if k in stored} == {k: v for k, v in want.items() if k in stored}
    assert {"seq", "epoch", "metrics", "earlyStopped", "testMetrics", "finished"} <= set(st)
    assert st["finished"] is True and st["earlyStopped"]["epoch"] == 4 and st["testMetrics"] == {"test_loss": 0.55}
    assert "retrying in" in r.output()


def test_a_new_log_replaces_the_status_instead_of_freezing_it(admin: Admin, ca: Path, namespace: str,
                                                              tmp_path: Path) -> None:
    """The events file deleted and started again (seq from 1): while the relay follows it, and when a
    relay starts on it later, the status describes the new log and logRestarts counts the replacements."""
    create_job(admin, namespace, "anew")
    token = relay_token(admin, namespace, "anew", tmp_path / "token")
    events = tmp_path / "events.jsonl"

    def new_log(epochs: int, started_at: str) -> None:
        events.unlink(missing_ok=True)
        with open(events, "wb") as f:  # the same bytes the Writer makes, with a first event time of our choosing
            f.write(ev.encode(1, ev.STARTED, {"attempt": 0, "max_epochs": 5, "monitor": "val_loss", "mode": "min",
                                              "resumed_from": None}, time=started_at))
        w = Writer(events)
        for epoch in range(epochs):
            w.write(ev.VALIDATION, epoch=epoch, step=epoch + 1, metrics={"val_loss": 1.0 / (epoch + 1)})

    new_log(4, "2025-01-01T00:00:00.000Z")
    with relay(admin, ca, token, namespace, "anew", events, "--min-interval", "0.2", log=tmp_path / "r0.log") as r:
        st = wait_for(lambda: (t := admin.training(namespace, "anew")).get("seq") == 5 and t, 10, what="the first log")
        assert st["logStartTime"] == "2025-01-01T00:00:00.000Z" and st["logRestarts"] == 0 and st["epoch"] == 3
        new_log(1, "2025-01-02T00:00:00.000Z")  # fewer events than before: seq 2 < 5
        st = wait_for(lambda: (t := admin.training(namespace, "anew")).get("logRestarts") == 1 and t, 10,
                      what="the second log, read while the relay runs")
        assert st["seq"] == 2 and st["epoch"] == 0 and st["logStartTime"] == "2025-01-02T00:00:00.000Z"
        assert r.terminate() == 0
    new_log(2, "2025-01-03T00:00:00.000Z")  # while no relay runs: the next relay finds the status of another log
    with relay(admin, ca, token, namespace, "anew", events, log=tmp_path / "r1.log") as r:
        st = wait_for(lambda: (t := admin.training(namespace, "anew")).get("logRestarts") == 2 and t, 10,
                      what="the third log, found by a relay started on it")
        assert st["seq"] == 3 and st["epoch"] == 1 and st["logStartTime"] == "2025-01-03T00:00:00.000Z"
        assert r.terminate() == 0
