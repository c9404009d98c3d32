"""The event log reader against what a real volume can hold: torn, duplicate, out-of-order,
garbage and huge lines, lines that grow across polls, a file that appears late or is replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ltj_api import events as ev
from ltj_api.events import Reader, Writer, decode, encode, read_all

pytestmark = pytest.mark.unit


def line(seq: int, type_: str = ev.VALIDATION, **fields: object) -> bytes:
    if type_ == ev.VALIDATION and not fields:
        fields = {"epoch": seq, "step": 10 * seq, "metrics": {"val_loss": 1.0 / seq}}
    return encode(seq, type_, fields, time="2025-01-01T00:00:00.000Z")


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def seqs(events: list[ev.Event]) -> list[int]:
    return [e.seq for e in events]


def test_missing_file_then_created(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    r = Reader(path)
    assert r.poll() == []
    append(path, line(1) + line(2))
    assert seqs(r.poll()) == [1, 2]
    assert r.poll() == []
    assert r.offset == path.stat().st_size


def test_torn_last_line_waits_for_its_end(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    full = line(2)
    append(path, line(1) + full[:10])
    r = Reader(path)
    assert seqs(r.poll()) == [1]
    assert r.skipped == 0
    append(path, full[10:-1])  # everything but the newline: still not complete
    assert r.poll() == []
    append(path, b"\n")
    assert seqs(r.poll()) == [2]
    assert r.skipped == 0


def test_line_growing_byte_by_byte(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    r = Reader(path)
    got: list[int] = []
    for b in line(1) + line(2):
        append(path, bytes([b]))
        got += seqs(r.poll())
    assert got == [1, 2]
    assert r.skipped == 0


def test_torn_line_terminated_by_a_restarted_writer_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append(path, line(1) + line(2)[:15])  # crash mid-write
    w = Writer(path)  # a restarted trainer ends the torn line and continues the seq
    assert w.seq == 1
    w.write(ev.STARTED, attempt=1)
    r = Reader(path)
    events = r.poll()
    assert seqs(events) == [1, 2]
    assert events[1].type == ev.STARTED
    assert r.skipped == 1


def test_duplicates_and_out_of_order(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append(path, line(1) + line(3) + line(2) + line(3) + line(1))
    r = Reader(path)
    events = r.poll()
    assert seqs(events) == [1, 3, 2]  # file order, each seq once; the fold sorts
    assert r.duplicates == 2
    assert r.max_seq == 3
    append(path, line(2) + line(4))
    assert seqs(r.poll()) == [4]
    assert r.duplicates == 3


@pytest.mark.parametrize("garbage", [
    b"not json",
    b"{",
    b"[1, 2, 3]",
    b'"just a string"',
    b'{"v":2,"seq":9,"time":"t","type":"validation"}',  # another format version
    b'{"v":1,"seq":9,"time":"t","type":"mystery"}',  # unknown type
    b'{"v":1,"seq":0,"time":"t","type":"fit_end"}',  # seq must be >= 1
    b'{"v":1,"seq":true,"time":"t","type":"fit_end"}',
    b'{"v":1,"seq":"9","time":"t","type":"fit_end"}',
    b'{"v":1,"seq":9,"time":1,"type":"fit_end"}',
    b"\xff\xfe\x00garbage",
    b"\x00" * 100,
    b"[" * 50_000,  # deep nesting: must not blow the recursion limit
    b'{"a":' * 20_000,
])
def test_garbage_lines_are_skipped_and_counted(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "events.jsonl"
    append(path, line(1) + garbage + b"\n" + line(2))
    r = Reader(path)
    assert seqs(r.poll()) == [1, 2]
    assert r.skipped == 1


def test_blank_lines_are_not_counted(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append(path, b"\n\n" + line(1) + b"   \n" + line(2))
    r = Reader(path)
    assert seqs(r.poll()) == [1, 2]
    assert r.skipped == 0


def test_huge_complete_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    huge = b'{"v":1,"seq":2,"time":"t","type":"validation","x":"' + b"a" * (ev.MAX_LINE_BYTES + 10) + b'"}\n'
    append(path, line(1) + huge + line(3))
    r = Reader(path)
    assert seqs(r.poll()) == [1, 3]
    assert r.skipped == 1


def test_huge_line_growing_across_polls_is_skipped_once(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append(path, line(1))
    r = Reader(path)
    assert seqs(r.poll()) == [1]
    # An endless line written in pieces: memory stays bounded, the reader keeps up with the file.
    for _ in range(6):
        append(path, b"z" * (ev.MAX_LINE_BYTES // 2))
        assert r.poll() == []
    assert r.skipped == 1
    assert path.stat().st_size - r.offset <= ev.MAX_LINE_BYTES
    append(path, b"zzz\n" + line(2))
    assert seqs(r.poll()) == [2]
    assert r.skipped == 1


def test_small_read_chunks_resume_at_line_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    data = b"".join(line(i) for i in range(1, 51))
    append(path, data)
    r = Reader(path)
    got: list[int] = []
    while r.offset < len(data):
        got += seqs(r.poll(max_bytes=300))  # a few lines per poll, boundaries mid-line
    assert got == list(range(1, 51))
    assert r.skipped == 0


def test_truncated_file_starts_over_without_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append(path, line(1) + line(2) + line(3))
    r = Reader(path)
    assert seqs(r.poll()) == [1, 2, 3]
    path.write_bytes(line(1) + line(4))  # shorter than what was read
    assert seqs(r.poll()) == [4]


def test_replaced_file_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append(path, line(1) + line(2))
    r = Reader(path)
    assert seqs(r.poll()) == [1, 2]
    # A new file (another inode) already longer than the old offset: e.g. a restored volume.
    other = tmp_path / "events.new"
    other.write_bytes(line(1) + line(2) + line(5, ev.FIT_END, epoch=1) + line(6))
    os.replace(other, path)
    assert seqs(r.poll()) == [5, 6]
    assert r.skipped == 0


def test_read_all_and_last_seq(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append(path, line(1) + b"junk\n" + line(2) + line(3)[:5])
    assert seqs(read_all(path)) == [1, 2]
    assert ev.last_seq(path) == 2


def test_writer_continues_seq_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "out" / "events.jsonl"
    w = Writer(path)
    w.write(ev.STARTED, attempt=0, max_epochs=3)
    w.write(ev.VALIDATION, epoch=0, step=5, metrics={"val_loss": 0.5})
    w2 = Writer(path)
    assert w2.seq == 2
    e = w2.write(ev.FIT_END, epoch=3, step=15)
    assert e.seq == 3
    events = read_all(path)
    assert [(x.seq, x.type) for x in events] == [(1, ev.STARTED), (2, ev.VALIDATION), (3, ev.FIT_END)]
    assert events[1].get("metrics") == {"val_loss": 0.5}
    assert decode(path.read_bytes().splitlines()[0]) == events[0]


def test_a_file_that_starts_a_new_log_is_read_from_its_first_event(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append(path, line(1) + line(2) + line(3))
    r = Reader(path)
    assert seqs(r.poll()) == [1, 2, 3] and r.restarts == 0
    # Deleted and started again (seq from 1, another first event): a new log, not duplicates of the old.
    path.unlink()
    new_first = encode(1, ev.STARTED, {"attempt": 1}, time="2025-01-02T00:00:00.000Z")
    append(path, new_first + line(2))
    assert seqs(r.poll()) == [1, 2] and r.restarts == 1
    append(path, line(3))
    assert seqs(r.poll()) == [3] and r.restarts == 1


def test_a_log_rewritten_in_place_past_the_old_offset_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append(path, line(1) + line(2))
    r = Reader(path)
    assert seqs(r.poll()) == [1, 2]
    # Same inode, truncated and written again beyond the old offset before the next poll.
    new_first = encode(1, ev.STARTED, {"attempt": 1}, time="2025-01-02T00:00:00.000Z")
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(new_first + line(2) + line(3) + line(4))
    assert seqs(r.poll()) == [1, 2, 3, 4] and r.restarts == 1


def test_a_start_being_rewritten_waits_for_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append(path, line(1) + line(2))
    r = Reader(path)
    assert seqs(r.poll()) == [1, 2]
    path.write_bytes(line(1)[:10])  # a copy of the same log in progress: nothing new, no restart yet
    assert r.poll() == [] and r.restarts == 0
    path.write_bytes(line(1) + line(2) + line(3))
    assert seqs(r.poll()) == [3] and r.restarts == 0


def test_dedup_memory_is_bounded_not_the_log(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    far = 10 * ev.MAX_GAPS
    append(path, line(1) + line(far))
    r = Reader(path)
    assert seqs(r.poll()) == [1, far]
    # A seq just below the highest may still come (out of order); one beyond the window is a duplicate.
    append(path, line(far - 1) + line(far - ev.MAX_GAPS - 1) + line(far - 1))
    assert seqs(r.poll()) == [far - 1]
    assert r.duplicates == 2
