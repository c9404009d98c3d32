"""The relay loop: follow the events file, fold it, write ``status.training`` throttled and safely.

State is always the fold of the file, so a failed write loses nothing: the next attempt sends the
latest state. Writes never move the status backwards: the relay learns the server's
``status.training.seq`` (GET at start and after any failed write, then from each PATCH answer) and
replaces ``status.training`` with a JSON patch whose ``test`` op checks that seq, so a concurrent
writer (e.g. the relay of a terminating pod) makes the patch fail instead of being overwritten.

That order holds within one log. When the file holds a new log (deleted and started again, seq from
1), the relay folds it from its first event, and a status whose ``logStartTime`` names another log is
replaced whatever its seq, with ``logRestarts`` counting such replacements: the status follows the
training instead of freezing at the old log's seq.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

from ltj_api.events import Reader

from .. import training as tr
from .config import RelayConfig
from .kube import ApiError, JobStatusClient, Unavailable, training_of

log = logging.getLogger("ltj.relay")

BACKOFF_BASE = 0.2
# Bytes read and folded at a time: with the fold's bounded state, what bounds the relay's memory.
READ_CHUNK_BYTES = 256 * 1024
# In a set of rejected status.training keys: a cause within status.trainerStatus, which is then left out
# whole (status.training has no key of this name).
TRAINER_STATUS = "trainerStatus"


def _rejected_keys(e: ApiError) -> set[str]:
    """Top-level keys of status.training named by an Invalid answer's causes (TRAINER_STATUS for any
    cause within status.trainerStatus)."""
    prefix = "status.training."
    keys = set()
    for f in e.fields:
        if f.startswith(prefix):
            keys.add(f[len(prefix):].split(".")[0].split("[")[0])
        elif f.split(".")[:2] == ["status", TRAINER_STATUS]:
            keys.add(TRAINER_STATUS)
    return keys


def backoff_delay(failures: int, cap: float, base: float = BACKOFF_BASE) -> float:
    """Exponential backoff before retry number ``failures`` (1-based), capped."""
    return min(cap, base * (2 ** max(0, failures - 1)))


def next_write_at(*, pending: bool, final: bool, last_write: float | None, retry_at: float,
                  min_interval: float) -> float | None:
    """When (monotonic seconds) the next status write may start, or None when nothing is pending.

    At most one write per ``min_interval``, except that a final event goes out at once; a backoff
    after a failure (``retry_at``) holds for final events too.
    """
    if not pending:
        return None
    at = retry_at
    if not final and last_write is not None:
        at = max(at, last_write + min_interval)
    return at


@dataclass
class Stats:
    writes: int = 0
    skipped_writes: int = 0  # the server already had a newer seq
    failures: int = 0
    conflicts: int = 0


class Relay:
    def __init__(self, cfg: RelayConfig, client: JobStatusClient, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.cfg = cfg
        self.client = client
        self.clock, self.wall, self.sleep = clock, wall, sleep
        self.reader = Reader(cfg.events_file)
        self.state = tr.TrainingState()
        self.written: tr.TrainingState | None = None
        self.pending_final = False
        self.pending_since: float | None = None  # wall time of the oldest event not yet written
        self.last_write: float | None = None
        self.retry_at = 0.0
        self.failures = 0  # consecutive
        self.server_known = False
        self.server_training: dict[str, Any] | None = None
        self.stats = Stats()
        self.stopping = False
        self._replayed = False
        self._read_error = ""

    # -- reading -------------------------------------------------------------------------------------
    def read(self) -> int:
        """Reads the file to its end, folding each chunk as it is read; returns how many events were applied.

        Memory is a chunk and the fold's bounded state, never the log: a long log replays in the
        same room as a short one. A file that starts a new log (see ``Reader``) starts a new fold.
        """
        applied = 0
        while True:
            before, restarts = self.reader.offset, self.reader.restarts
            try:
                batch = self.reader.poll(READ_CHUNK_BYTES)
            except OSError as e:  # e.g. a stale NFS handle or permissions: keep what we have, retry later
                if str(e) != self._read_error:
                    log.warning("cannot read %s: %s", self.cfg.events_file, e)
                self._read_error = str(e)
                break
            if self.reader.restarts != restarts:
                log.warning("%s now holds a new log (deleted, replaced or rewritten from seq 1): following it "
                            "from its first event instead of the %d events read before", self.cfg.events_file,
                            self.state.seq)
                self.state = tr.TrainingState(log_restarts=self.state.log_restarts)
                self.written = None
                applied = 0
            applied += self._fold(batch)
            if self.reader.offset == before and self.reader.restarts == restarts:
                self._read_error = ""
                break
        self.state = tr.with_skipped(self.state, self.reader.skipped)
        if not self._replayed:
            self._replayed = True
            log.info("read %s: %d events up to seq %d, %d lines skipped", self.cfg.events_file,
                     applied, self.state.seq, self.reader.skipped)
        return applied

    def _fold(self, batch: list[Any]) -> int:
        prior_seq = self.state.seq
        self.state = tr.fold(batch, self.state)
        applied = [e for e in batch if e.seq > prior_seq]
        if applied:
            if any(e.type in tr.FINAL_TYPES for e in applied):
                self.pending_final = True
            if self.pending_since is None:
                first = min(applied, key=lambda e: e.seq)
                self.pending_since = tr.parse_time(first.time) or self.wall()
        return len(applied)

    def pending(self) -> bool:
        if self.written is None:
            return self.state.seq > 0 or self.state.skipped_lines > 0
        return (self.state.seq, self.state.skipped_lines) != (self.written.seq, self.written.skipped_lines)

    def next_write_at(self) -> float | None:
        return next_write_at(pending=self.pending(), final=self.pending_final, last_write=self.last_write,
                             retry_at=self.retry_at, min_interval=self.cfg.min_interval)

    # -- writing -------------------------------------------------------------------------------------
    def _learn(self, job: dict[str, Any]) -> None:
        self.server_training = training_of(job)
        self.server_known = True

    def _server_seq(self) -> int | None:
        seq = (self.server_training or {}).get("seq")
        return seq if isinstance(seq, int) and not isinstance(seq, bool) else None

    def _other_log(self, state: tr.TrainingState) -> bool:
        """Whether the server's status.training comes from another log than ``state`` (its first event's
        time differs); unknown on either side counts as the same log."""
        theirs = (self.server_training or {}).get("logStartTime")
        return state.log_start is not None and isinstance(theirs, str) and theirs != state.log_start

    def _server_log_restarts(self) -> int:
        n = (self.server_training or {}).get("logRestarts")
        return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else 0

    def write_once(self, timeout: float | None = None) -> None:
        """Writes the current state (raises ApiError / Unavailable).

        A lost seq race (failed test op, conflict) re-reads the server once. Fields the API server
        rejects as invalid are left out and the write retried, so one odd value cannot hold back
        the rest of the status.
        """
        reread = False
        rejected: set[str] = set()
        while True:
            state = self.state
            t0 = self.clock()
            if not self.server_known:
                self._learn(self.client.get(timeout))
            server_seq = self._server_seq()
            if self._other_log(state):
                # The server's status folds an earlier log of this path: this log replaces it, seq and all.
                log.warning("status.training (seq %s) folds a log that started at %s; %s now holds one that started "
                            "at %s: replacing it", server_seq, (self.server_training or {}).get("logStartTime"),
                            self.cfg.events_file, state.log_start)
                state = self.state = dataclasses.replace(state, log_restarts=self._server_log_restarts() + 1)
            elif server_seq is not None and server_seq > state.seq:
                self.stats.skipped_writes += 1
                log.warning("status.training.seq is %d on the server, ahead of the log's %d: not writing",
                            server_seq, state.seq)
                self._done(state)
                return
            at = self.wall()
            body = {k: v for k, v in tr.to_status(state, at).items() if k not in rejected}
            # Kubeflow-compatible progress, in the same write as the training block it is derived from.
            trainer = {} if TRAINER_STATUS in rejected else {TRAINER_STATUS: tr.trainer_status(state, at)}
            tested = False
            try:
                if self.server_training is None:
                    answer = self.client.merge_patch({"status": {"training": body, **trainer}}, timeout)
                else:
                    ops: list[dict[str, Any]] = []
                    if server_seq is not None:
                        ops.append({"op": "test", "path": "/status/training/seq", "value": server_seq})
                        tested = True
                    ops.append({"op": "replace", "path": "/status/training", "value": body})
                    ops.extend({"op": "add", "path": f"/status/{k}", "value": v} for k, v in trainer.items())
                    answer = self.client.json_patch(ops, timeout)
            except ApiError as e:
                self.server_known = False
                bad = _rejected_keys(e) - rejected - {"seq"}
                if e.status == 422 and bad:
                    rejected |= bad
                    log.warning("the API server rejected status fields %s (%s): writing without them",
                                sorted(bad), e.message)
                    continue
                # A failed test op (422 Invalid with no causes: another writer moved seq) or a conflict.
                if not reread and (e.status == 409 or (tested and e.status == 422 and not e.fields)):
                    reread = True
                    self.stats.conflicts += 1
                    log.info("status.training changed on the server (%s): re-reading", e)
                    continue
                raise
            except Unavailable:
                self.server_known = False
                raise
            self._learn(answer)
            now = self.wall()
            lag = now - self.pending_since if self.pending_since is not None else 0.0
            self.stats.writes += 1
            log.info("wrote status.training seq=%d epoch=%s step=%s finished=%s lag=%.3fs request=%.0fms",
                     state.seq, state.epoch, state.step, state.finished, lag, 1000 * (self.clock() - t0))
            self._done(state)
            return

    def _done(self, state: tr.TrainingState) -> None:
        self.written = state
        self.last_write = self.clock()
        if state.seq == self.state.seq:
            self.pending_final = False
            self.pending_since = None
        self.failures = 0
        self.retry_at = 0.0

    def try_write(self) -> bool:
        try:
            self.write_once(self.cfg.request_timeout)
            return True
        except (ApiError, Unavailable) as e:
            self.failures += 1
            self.stats.failures += 1
            delay = backoff_delay(self.failures, self.cfg.max_backoff) * random.uniform(0.8, 1.2)
            if isinstance(e, ApiError) and e.retry_after:
                delay = max(delay, min(e.retry_after, self.cfg.max_backoff))
            self.retry_at = self.clock() + delay
            log.warning("status write of seq %d failed (%s); retrying in %.1fs", self.state.seq, e, delay)
            return False

    # -- lifecycle -----------------------------------------------------------------------------------
    def stop(self) -> None:
        self.stopping = True

    def step(self) -> None:
        self.read()
        at = self.next_write_at()
        if at is not None and self.clock() >= at:
            self.try_write()

    def run(self) -> int:
        log.info("relaying %s to %s/%s status.training (min interval %.2fs)", self.cfg.events_file,
                 self.cfg.namespace, self.cfg.job, self.cfg.min_interval)
        while not self.stopping:
            self.step()
            if self.stopping:
                break
            wait = self.cfg.poll_interval
            at = self.next_write_at()
            if at is not None:
                wait = min(wait, max(0.01, at - self.clock()))
            self.sleep(wait)
        return self.drain()

    def drain(self) -> int:
        """Reads to the end of the file and writes the final state, within ``drain_seconds``."""
        deadline = self.clock() + self.cfg.drain_seconds
        self.read()
        log.info("draining: log read to seq %d", self.state.seq)
        while self.pending():
            left = deadline - self.clock()
            if left <= 0.05:
                log.error("gave up writing seq %d after %.1fs of draining", self.state.seq, self.cfg.drain_seconds)
                break
            try:
                self.write_once(min(self.cfg.request_timeout, left))
            except (ApiError, Unavailable) as e:
                log.warning("final write failed (%s)", e)
                self.sleep(min(0.5, max(0.0, deadline - self.clock())))
            self.read()
        self.client.close()
        log.info("relay stopped: %d writes, %d failures, %d conflicts, %d lines skipped", self.stats.writes,
                 self.stats.failures, self.stats.conflicts, self.reader.skipped)
        return 0
