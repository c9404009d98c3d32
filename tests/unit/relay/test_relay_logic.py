"""The relay's pure parts: configuration from env/flags, throttling and backoff decisions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ltj_operator.relay import ConfigError, backoff_delay, next_write_at, parse
from ltj_operator.relay.kube import Endpoint, JobStatusClient, seq_of

pytestmark = pytest.mark.unit


def test_config_from_the_sidecar_env(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    (sa / "ca.crt").write_text("ca")
    env = {"LTJ_JOB_NAME": "mnist", "LTJ_NAMESPACE": "team-a", "LTJ_EVENTS_FILE": "/output/events.jsonl",
           "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443", "LTJ_SA_DIR": str(sa),
           "LTJ_RELAY_MIN_INTERVAL": "0.5"}
    cfg = parse([], env)
    assert (cfg.job, cfg.namespace, str(cfg.events_file)) == ("mnist", "team-a", "/output/events.jsonl")
    assert cfg.server == "https://10.0.0.1:443"
    assert cfg.token_file == sa / "token" and cfg.ca_file == sa / "ca.crt"
    assert cfg.min_interval == 0.5


def test_config_namespace_from_the_token_dir_and_ipv6_host(tmp_path: Path) -> None:
    (tmp_path / "namespace").write_text("ns-from-sa\n")
    cfg = parse([], {"LTJ_JOB_NAME": "j", "KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443",
                     "LTJ_SA_DIR": str(tmp_path)})
    assert cfg.namespace == "ns-from-sa"
    assert cfg.server == "https://[fd00::1]:6443"
    assert cfg.ca_file is None  # no ca.crt there: the system trust store


def test_config_flags_for_a_dev_host(tmp_path: Path) -> None:
    cfg = parse(["--job", "j", "--namespace", "n", "--server", "https://127.0.0.1:6443", "--token-file",
                 str(tmp_path / "tok"), "--ca-file", str(tmp_path / "ca.crt"), "--events-file", "e.jsonl"], {})
    assert cfg.server == "https://127.0.0.1:6443"
    assert cfg.token_file == tmp_path / "tok" and cfg.ca_file == tmp_path / "ca.crt"


@pytest.mark.parametrize("env, message", [
    ({}, "LTJ_JOB_NAME"),
    ({"LTJ_JOB_NAME": "j", "LTJ_SA_DIR": "/nonexistent"}, "LTJ_NAMESPACE"),
    ({"LTJ_JOB_NAME": "j", "LTJ_NAMESPACE": "n"}, "--server"),
    ({"LTJ_JOB_NAME": "j", "LTJ_NAMESPACE": "n", "KUBERNETES_SERVICE_HOST": "h",
      "LTJ_RELAY_MIN_INTERVAL": "soon"}, "LTJ_RELAY_MIN_INTERVAL"),
    ({"LTJ_JOB_NAME": "j", "LTJ_NAMESPACE": "n", "KUBERNETES_SERVICE_HOST": "h",
      "LTJ_RELAY_MIN_INTERVAL": "-1"}, "LTJ_RELAY_MIN_INTERVAL"),
])
def test_config_errors_name_the_setting(env: dict[str, str], message: str) -> None:
    env = {"LTJ_SA_DIR": "/nonexistent", **env}
    with pytest.raises(ConfigError, match=message):
        parse([], env)


def test_client_paths() -> None:
    c = JobStatusClient(Endpoint("https://127.0.0.1:6443", Path("t"), None), "ns", "job-1")
    assert c.path == "/apis/ltj.dev/v1alpha1/namespaces/ns/lightningtrainingjobs/job-1/status"
    with pytest.raises(ValueError, match="server"):
        JobStatusClient(Endpoint("http://127.0.0.1:6443", Path("t"), None), "ns", "j")
    assert seq_of({"status": {"training": {"seq": 7}}}) == 7
    assert seq_of({"status": {"phase": "Running"}}) == 0
    assert seq_of({}) == 0


def test_throttle_leading_edge_then_at_most_one_write_per_interval() -> None:
    kw = dict(retry_at=0.0, min_interval=1.0)
    assert next_write_at(pending=False, final=False, last_write=None, **kw) is None
    assert next_write_at(pending=True, final=False, last_write=None, **kw) == 0.0  # first write: at once
    assert next_write_at(pending=True, final=False, last_write=10.0, **kw) == 11.0
    assert next_write_at(pending=True, final=True, last_write=10.0, **kw) == 0.0  # final: at once


def test_backoff_holds_even_for_final_events() -> None:
    assert next_write_at(pending=True, final=True, last_write=10.0, retry_at=12.5, min_interval=1.0) == 12.5
    assert next_write_at(pending=True, final=False, last_write=10.0, retry_at=10.5, min_interval=1.0) == 11.0


def test_backoff_grows_exponentially_and_is_capped() -> None:
    delays = [backoff_delay(n, cap=5.0) for n in range(1, 9)]
    assert delays[:4] == [0.2, 0.4, 0.8, 1.6]
    assert max(delays) == 5.0
    assert delays == sorted(delays)


def test_fields_rejected_by_the_api_server_are_named_by_top_level_key() -> None:
    from ltj_operator.relay.core import _rejected_keys
    from ltj_operator.relay.kube import ApiError

    # The causes of a real 422 answer to a status.training patch (kube-apiserver 1.34).
    e = ApiError(422, "Invalid", "LightningTrainingJob.ltj.dev \"j1\" is invalid", None,
                 ("status.training.epoch", "status.training.topK[0].epoch", "status.training.lastEventTime", ""))
    assert _rejected_keys(e) == {"epoch", "topK", "lastEventTime"}
    assert _rejected_keys(ApiError(422, "Invalid", "the server rejected our request", None, ())) == set()
    # Any cause within status.trainerStatus leaves it out whole; status.training is still written.
    e = ApiError(422, "Invalid", "invalid", None, ("status.trainerStatus.metrics[3].name", "status.training.seq"))
    assert _rejected_keys(e) == {"trainerStatus", "seq"}


def _relay(tmp_path: Path, events: Path):
    from ltj_operator.relay import Relay

    cfg = parse(["--job", "j", "--namespace", "n", "--server", "https://127.0.0.1:1", "--token-file",
                 str(tmp_path / "token"), "--events-file", str(events)], {"LTJ_SA_DIR": "/nonexistent"})
    # The client is never called by read(): these tests cover the reading side only.
    return Relay(cfg, JobStatusClient(Endpoint(cfg.server, cfg.token_file, None), cfg.namespace, cfg.job))


def test_relay_read_tracks_pending_and_final_events(tmp_path: Path) -> None:
    from ltj_api import events as ev

    events = tmp_path / "out" / "events.jsonl"
    r = _relay(tmp_path, events)
    assert r.read() == 0 and not r.pending() and r.next_write_at() is None  # no file yet
    w = ev.Writer(events)
    w.write(ev.STARTED, attempt=0, max_epochs=2)
    w.write(ev.VALIDATION, epoch=0, step=5, metrics={"val_loss": 0.5})
    assert r.read() == 2 and r.pending() and not r.pending_final
    r._done(r.state)  # as after a successful write
    assert not r.pending()
    with open(events, "ab") as f:
        f.write(b"torn garbage\n")
    assert r.read() == 0 and r.pending()  # a newly skipped line is news too
    r._done(r.state)
    w.write(ev.EARLY_STOPPED, epoch=0, reason="patience", message="m", best_score=0.5)
    assert r.read() == 1 and r.pending_final
    assert r.next_write_at() == 0.0  # at once, despite the write just now


def test_relay_read_survives_an_unreadable_events_path(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.mkdir()  # reading it raises IsADirectoryError
    r = _relay(tmp_path, events)
    assert r.read() == 0 and r.read() == 0
    assert not r.pending()


def test_relay_read_starts_a_new_fold_when_the_file_starts_a_new_log(tmp_path: Path) -> None:
    from ltj_api import events as ev

    events = tmp_path / "events.jsonl"
    r = _relay(tmp_path, events)
    w = ev.Writer(events)
    w.write(ev.STARTED, attempt=0, max_epochs=5)
    for epoch in range(3):
        w.write(ev.VALIDATION, epoch=epoch, step=epoch + 1, metrics={"val_loss": 1.0})
    assert r.read() == 4 and r.state.epoch == 2
    r.written = r.state  # as after a write: nothing pending
    assert not r.pending()
    events.unlink()
    events.write_bytes(ev.encode(1, ev.STARTED, {"attempt": 1, "max_epochs": 5}, time="2030-01-01T00:00:00.000Z"))
    assert r.read() == 1
    # Not frozen at the old seq: a fresh fold of the new log, due for a write.
    assert (r.state.seq, r.state.epoch, r.state.log_start) == (1, None, "2030-01-01T00:00:00.000Z")
    assert r.pending()


def test_the_relay_loads_neither_the_kubernetes_client_nor_kopf() -> None:
    # The sidecar starts with each rank-0 pod: it stays on the standard library (and the contract).
    probe = ("import sys, ltj_operator.relay.__main__; "
             "print(sorted(m for m in ('kubernetes', 'kopf', 'urllib3', 'prometheus_client') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert loaded.strip() == "[]"


def test_the_operator_and_the_relay_raise_one_api_error() -> None:
    from ltj_operator import kube as operator_kube
    from ltj_operator.relay import kube as relay_kube

    assert relay_kube.ApiError is operator_kube.ApiError
    assert issubclass(operator_kube.StaleWrite, relay_kube.ApiError)
    assert issubclass(operator_kube.NotOwned, relay_kube.ApiError)
