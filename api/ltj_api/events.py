"""The training event log: one definition of its format, shared by the writer and the readers.

The trainer's global rank 0 appends one JSON object per line to ``<output>/events.jsonl``:
``{"v": 1, "seq": N, "time": "<RFC 3339>", "type": "<type>", ...fields}``. Each event is
flushed and fsynced before the next, and ``seq`` continues across restarts (the writer resumes
from the last complete line). Readers are robust by construction: they read incrementally from
an offset, skip torn, garbage, oversized and unknown lines (counting them), and drop events
whose seq they have already seen. This module imports nothing beyond the standard library, so
the relay (operator image, no torch) uses it too.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

VERSION = 1
FILENAME = "events.jsonl"
# A line longer than this is garbage, never an event: bounded memory for the reader.
MAX_LINE_BYTES = 64 * 1024

STARTED = "started"
PROGRESS = "progress"
VALIDATION = "validation"
CHECKPOINT = "checkpoint"
EARLY_STOPPED = "early_stopped"
FIT_END = "fit_end"
TEST = "test"
ERROR = "error"
TYPES = frozenset({STARTED, PROGRESS, VALIDATION, CHECKPOINT, EARLY_STOPPED, FIT_END, TEST, ERROR})


@dataclass(frozen=True)
class Event:
    seq: int
    time: str
    type: str
    fields: Mapping[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def now_rfc3339() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(seq: int, type_: str, fields: Mapping[str, Any], time: str | None = None) -> bytes:
    """One event as a complete line (UTF-8, newline-terminated)."""
    if type_ not in TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    record = {"v": VERSION, "seq": seq, "time": time or now_rfc3339(), "type": type_}
    record.update({k: v for k, v in fields.items() if k not in record})
    line = json.dumps(_finite(record), separators=(",", ":"), allow_nan=False, default=str).encode() + b"\n"
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(f"event {type_} is {len(line)} bytes, over the {MAX_LINE_BYTES}-byte limit")
    return line


def _finite(value: Any) -> Any:
    """NaN and infinities (a diverged metric) become null: JSON and the API server reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def decode(line: bytes) -> Event | None:
    """An event from one complete line, or None when the line is not a valid event of ours."""
    if len(line) > MAX_LINE_BYTES:
        return None
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deeply nested garbage recurses
        return None
    if not isinstance(record, dict) or record.get("v") != VERSION:
        return None
    seq, type_, time = record.get("seq"), record.get("type"), record.get("time")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return None
    if type_ not in TYPES or not isinstance(time, str):
        return None
    fields = {k: v for k, v in record.items() if k not in ("v", "seq", "time", "type")}
    return Event(seq=seq, time=time, type=type_, fields=fields)


def last_seq(path: str | os.PathLike[str]) -> int:
    """The highest seq among the complete, valid lines of an existing log (0 when none); reads it in
    chunks, holding none of its events."""
    reader = Reader(path)
    while True:
        before = reader.offset
        reader.poll()
        if reader.offset == before:
            return reader.max_seq


class Writer:
    """Appends events durably; seq continues from what the file already holds."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._seq = last_seq(self.path)
        self._terminate_torn_line()

    @property
    def seq(self) -> int:
        return self._seq

    def _terminate_torn_line(self) -> None:
        # A crash mid-write leaves a line without its newline; end it so the next event starts
        # on a line of its own (readers skip the torn one as garbage).
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() == 0:
                    return
                f.seek(-1, os.SEEK_END)
                if f.read(1) == b"\n":
                    return
        except FileNotFoundError:
            return
        self._append(b"\n")

    def _append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def write(self, type_: str, **fields: Any) -> Event:
        seq = self._seq + 1
        line = encode(seq, type_, fields)
        self._append(line)
        self._seq = seq
        event = decode(line.rstrip(b"\n"))
        assert event is not None
        return event


# The start of the file that identifies its log: the first line, up to this many bytes (the first event's
# seq and time come first). A file whose start no longer matches is a new log, not more of the old one.
HEAD_BYTES = 256
# Seqs below the highest seen that may still arrive (out-of-order lines) are remembered up to this
# many; older gaps are forgotten, so the reader's memory does not grow with the log.
MAX_GAPS = 4096


@dataclass
class Reader:
    """Incremental, idempotent reader of an event log, in memory bounded whatever the log's length.

    ``poll()`` returns the new valid events since the last call, in file order, each seq at most
    once. A last line without its newline is left for the next poll (it may still be being
    written). Garbage, oversized, unknown-type and duplicate lines are skipped and counted.

    A truncated or replaced file is read again from its start; while its first line is the one
    already read (a restored copy, a rewrite of the same log) seqs already returned stay duplicates.
    A file that starts differently holds a new log (deleted and recreated, seq starting over):
    ``restarts`` counts it, and its events are returned from its first one.
    """

    path: str | os.PathLike[str]
    offset: int = 0
    max_seq: int = 0
    skipped: int = 0
    duplicates: int = 0
    restarts: int = 0
    _gaps: set[int] = field(default_factory=set)  # seqs below max_seq not seen yet
    _head: bytes = b""  # the file's start as first read (HEAD_BYTES at most, up to its first newline)
    _discarding: bool = False  # inside an oversized line: drop bytes until its newline
    _file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file being read

    def poll(self, max_bytes: int = 4 * 1024 * 1024) -> list[Event]:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                file_id = (st.st_dev, st.st_ino)
                head = os.pread(f.fileno(), len(self._head), 0) if self._head else b""
                if head and head != self._head and not self._head.startswith(head):
                    self._new_log()
                # Truncated, replaced by another file (even a longer one), or its start rewritten (a shorter
                # start may be a rewrite in progress): read it again from the start, seq dedups.
                elif (st.st_size < self.offset or (self._file_id is not None and file_id != self._file_id)
                      or head != self._head):
                    self.offset = 0
                    self._discarding = False
                self._file_id = file_id
                f.seek(self.offset)
                chunk = f.read(max_bytes)
        except FileNotFoundError:
            return []
        if self.offset == 0 and not self._head:
            nl = chunk.find(b"\n", 0, HEAD_BYTES)
            if nl >= 0 or len(chunk) >= HEAD_BYTES:
                self._head = chunk[:nl + 1 if nl >= 0 else HEAD_BYTES]
        events: list[Event] = []
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                rest = len(chunk) - start
                if rest > MAX_LINE_BYTES:  # an endless line: skip what we have, keep skipping
                    if not self._discarding:
                        self.skipped += 1
                    self._discarding = True
                    start = len(chunk)
                break
            line = chunk[start:nl]
            start = nl + 1
            if self._discarding:
                self._discarding = False
                continue
            if not line.strip():
                continue
            event = decode(line)
            if event is None:
                self.skipped += 1
            elif self._fresh(event.seq):
                events.append(event)
            else:
                self.duplicates += 1
        self.offset += start
        return events

    def _fresh(self, seq: int) -> bool:
        """Whether ``seq`` is seen for the first time (and remember that it now is)."""
        if seq > self.max_seq:
            self._gaps.update(range(max(self.max_seq + 1, seq - MAX_GAPS), seq))
            if len(self._gaps) > MAX_GAPS:
                self._gaps = set(sorted(self._gaps)[-MAX_GAPS:])
            self.max_seq = seq
            return True
        if seq in self._gaps:
            self._gaps.discard(seq)
            return True
        return False

    def _new_log(self) -> None:
        self.restarts += 1
        self.offset = self.max_seq = 0
        self._gaps = set()
        self._head = b""
        self._discarding = False


def read_all(path: str | os.PathLike[str]) -> list[Event]:
    """Every valid event of a finished log (tests, summaries)."""
    reader = Reader(path)
    out: list[Event] = []
    while True:
        before = reader.offset
        out.extend(reader.poll())
        if reader.offset == before:
            return out


def as_dicts(events: Iterable[Event]) -> list[dict[str, Any]]:
    return [{"seq": e.seq, "time": e.time, "type": e.type, **e.fields} for e in events]
