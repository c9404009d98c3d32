"""Container log files in the CRI format, and the kubelet's log query options (pure).

Each line: `<RFC3339Nano time> <stdout|stderr> <F|P> <content>\n`; P marks a partial line that
continues in the next entry (a long line split, or output without a trailing newline).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

MAX_LINE = 16 * 1024


def format_time_ns(t_ns: int) -> str:
    secs, nanos = divmod(t_ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos:09d}Z"


def parse_time_ns(text: str) -> int:
    """Parse RFC3339 with optional fractional seconds (up to ns) into epoch nanoseconds."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    frac_ns = 0
    if "." in text:
        head, rest = text.split(".", 1)
        digits = ""
        while rest and rest[0].isdigit():
            digits += rest[0]
            rest = rest[1:]
        frac_ns = int((digits + "000000000")[:9]) if digits else 0
        text = head + rest
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000 + frac_ns


@dataclass(frozen=True)
class LogEntry:
    time_ns: int
    stream: str
    partial: bool
    content: bytes


def encode_entry(entry: LogEntry) -> bytes:
    tag = b"P" if entry.partial else b"F"
    return b"%s %s %s %s\n" % (format_time_ns(entry.time_ns).encode(), entry.stream.encode(), tag, entry.content)


def parse_entry(line: bytes) -> LogEntry | None:
    line = line.rstrip(b"\n")
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return None
    try:
        t_ns = parse_time_ns(parts[0].decode())
    except ValueError:
        return None
    content = parts[3] if len(parts) == 4 else b""
    return LogEntry(t_ns, parts[1].decode(errors="replace"), parts[2] == b"P", content)


def parse_entries(data: bytes) -> tuple[list[LogEntry], bytes]:
    """Complete entries in data, and the unterminated remainder."""
    entries: list[LogEntry] = []
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end == -1:
            break
        entry = parse_entry(data[start : end + 1])
        if entry is not None:
            entries.append(entry)
        start = end + 1
    return entries, data[start:]


class LineSplitter:
    """Turns raw stream chunks into log entries (full lines, long ones split into partials)."""

    def __init__(self, stream: str, clock: callable = time.time_ns) -> None:  # type: ignore[valid-type]
        self.stream = stream
        self._buf = b""
        self._clock = clock

    def feed(self, chunk: bytes) -> list[LogEntry]:
        self._buf += chunk
        out: list[LogEntry] = []
        now = self._clock()
        while True:
            nl = self._buf.find(b"\n")
            if nl == -1:
                break
            line, self._buf = self._buf[:nl], self._buf[nl + 1 :]
            while len(line) > MAX_LINE:
                out.append(LogEntry(now, self.stream, True, line[:MAX_LINE]))
                line = line[MAX_LINE:]
            out.append(LogEntry(now, self.stream, False, line))
        while len(self._buf) > MAX_LINE:
            out.append(LogEntry(now, self.stream, True, self._buf[:MAX_LINE]))
            self._buf = self._buf[MAX_LINE:]
        return out

    def flush(self) -> list[LogEntry]:
        """At end of stream a pending fragment is written as a final (full) entry."""
        if not self._buf:
            return []
        entry = LogEntry(self._clock(), self.stream, False, self._buf)
        self._buf = b""
        return [entry]


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    timestamps: bool = False
    since_ns: int | None = None
    previous: bool = False


class LogOptionsError(ValueError):
    pass


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


def _int(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)  # type: ignore[arg-type]
    except ValueError as exc:
        raise LogOptionsError(f"{name}: must be an integer, got {raw!r}") from exc
    if value < 0:
        raise LogOptionsError(f"{name}: must be >= 0, got {value}")
    return value


def options_from_query(query: Mapping[str, str], now_ns: int) -> LogOptions:
    since_ns = None
    since_seconds = _int(query, "sinceSeconds")
    if since_seconds is not None:
        since_ns = now_ns - since_seconds * 1_000_000_000
    if query.get("sinceTime"):
        try:
            since_ns = parse_time_ns(query["sinceTime"])
        except ValueError as exc:
            raise LogOptionsError(f"sinceTime: not RFC3339: {query['sinceTime']!r}") from exc
    return LogOptions(
        follow=_bool(query.get("follow")),
        tail_lines=_int(query, "tailLines"),
        limit_bytes=_int(query, "limitBytes"),
        timestamps=_bool(query.get("timestamps")),
        since_ns=since_ns,
        previous=_bool(query.get("previous")),
    )


def render_entries(entries: Iterable[LogEntry], timestamps: bool, at_line_start: bool = True) -> bytes:
    """Entries as kubectl shows them; at_line_start=False continues a partial line."""
    out = bytearray()
    for e in entries:
        if timestamps and at_line_start:
            out += format_time_ns(e.time_ns).encode() + b" "
        out += e.content
        if not e.partial:
            out += b"\n"
        at_line_start = not e.partial
    return bytes(out)


def select_entries(entries: list[LogEntry], opts: LogOptions) -> list[LogEntry]:
    """Apply sinceTime/sinceSeconds, then tailLines (counted in full lines)."""
    if opts.since_ns is not None:
        entries = [e for e in entries if e.time_ns >= opts.since_ns]
    if opts.tail_lines is not None:
        if opts.tail_lines == 0:
            return []
        full = 0
        cut = 0
        for i in range(len(entries) - 1, -1, -1):
            if not entries[i].partial:
                full += 1
                if full > opts.tail_lines:
                    cut = i + 1
                    break
        entries = entries[cut:]
    return entries


def tail_text(entries: list[LogEntry], max_lines: int, max_bytes: int) -> str:
    """FallbackToLogsOnError message: last max_lines lines, at most max_bytes (the end kept)."""
    data = render_entries(select_entries(entries, LogOptions(tail_lines=max_lines)), timestamps=False)
    if len(data) > max_bytes:
        data = data[-max_bytes:]
    return data.decode("utf-8", errors="replace")
