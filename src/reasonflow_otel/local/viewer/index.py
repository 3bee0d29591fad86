"""The viewer's index of the trace file and its log file: read once, then only what was appended.

Each trace keeps its listing summary and the byte offsets of the lines holding its spans and
its log records, so memory grows with the number of traces and lines, not with the spans'
attributes; a trace is read back from those lines when it is opened, and only the attributes
the listing and the analytics use are decoded while indexing. Every request first checks the
files' sizes: new complete lines are read from the last offset (a line still being written
waits for its newline), and a file that shrank or was replaced is read again from the start.
Rotated generations (``traces.jsonl.1``, ...) are read too, oldest first, each followed by its
identity across renames: a rotation re-reads nothing.

One thread reads at a time. A large file is indexed by a background thread started with the
server; meanwhile requests are answered from what is indexed so far (``indexing`` is true).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from reasonflow_otel import semconv
from reasonflow_otel.local.listing import TraceSummary
from reasonflow_otel.local.store import (
    LogLine,
    Signal,
    SpanRecord,
    UnreadableLine,
    decode_line,
    decode_logs,
    decode_spans,
    generations,
    log_file_for,
)
from reasonflow_otel.local.viewer.analytics import Analytics

# The attributes (of spans and their events) that the listing and the analytics read.
INDEXED_KEYS = frozenset(
    {
        semconv.GEN_AI_OPERATION_NAME,
        semconv.GEN_AI_WORKFLOW_NAME,
        semconv.NODE_KIND,
        semconv.NODE_NAME,
        semconv.NODE_CPU_TIME,
        semconv.NODE_MEMORY_GROWTH,
        semconv.NODE_FALLBACK,
        semconv.NODE_ROUTING_MISS,
        semconv.NODE_ACTION,
        semconv.ERROR_TYPE,
        semconv.EXCEPTION_MESSAGE,
    }
)
_decode_indexed = partial(decode_spans, keep=INDEXED_KEYS)
Record = TypeVar("Record", SpanRecord, LogLine)


class IndexedTrace(TraceSummary):
    """A trace's summary, its service and where its spans are in the file."""

    __slots__ = ("offsets", "service")

    def __init__(self, trace_id: str) -> None:
        super().__init__(trace_id)
        self.service = ""
        self.offsets = array("q")

    def add_at(self, span: SpanRecord, offset: int) -> None:
        self.add(span)
        if not span.parent_id or not self.service:
            self.service = sys.intern(span.service)
        if not self.offsets or self.offsets[-1] != offset:
            self.offsets.append(offset)


@dataclass(frozen=True)
class FileState:
    """What the API says about the file it reads."""

    path: str
    exists: bool
    spans: int
    traces: int
    indexing: bool  # another thread is reading the file: the figures will grow
    error: str  # why the file cannot be read ("" when it can)
    skipped_lines: int = 0
    first_skipped: str = ""  # why the first unreadable line was skipped ("" when none was)
    indexed_bytes: int = 0
    size_bytes: int = 0
    source: str = "file"  # or "jaeger": path is then Jaeger's URL

    def report(self) -> dict[str, object]:
        return {
            "source": self.source,
            "path": self.path,
            "exists": self.exists,
            "spans": self.spans,
            "traces": self.traces,
            "skipped_lines": self.skipped_lines,
            "first_skipped": self.first_skipped,
            "indexing": self.indexing,
            "indexed_bytes": self.indexed_bytes,
            "size_bytes": self.size_bytes,
            "error": self.error,
        }


class TraceSource(Protocol):
    """Where the viewer's traces come from: the local file (:class:`TraceIndex`) or Jaeger
    (``jaeger.JaegerIndex``). The API handlers only read through this."""

    def refresh(self) -> None: ...
    def refresh_in_background(self) -> threading.Thread | None: ...
    def newest_first(self) -> list[IndexedTrace]: ...
    def matching(self, prefix: str) -> list[IndexedTrace]: ...
    def spans_of(self, trace: IndexedTrace) -> list[SpanRecord]: ...
    def logs_of(self, trace_id: str) -> list[LogLine]: ...
    def analytics_report(self) -> dict[str, object]: ...
    def state(self) -> FileState: ...


# A line's location: its file's key in the high bits, its byte offset in the low ones.
_OFFSET_BITS = 40
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1
Identity = tuple[int, int]  # (device, inode): a file followed across renames


class AppendedLines:
    """One file, read from where the last read stopped; a line still being written (no
    newline yet) is left for the next read."""

    def __init__(self, path: Path, identity: Identity, key: int) -> None:
        self.path = path
        self.identity = identity
        self.key = key
        self.size = 0
        self.offset = 0
        self.number = 0

    def new_lines(self) -> Iterator[tuple[int, int, bytes]]:
        """Line number, location and bytes of each complete line after the last one read."""
        if self.size <= self.offset:
            return
        with self.path.open("rb") as file:
            file.seek(self.offset)
            for line in file:
                if not line.endswith(b"\n"):
                    return
                self.number += 1
                yield self.number, (self.key << _OFFSET_BITS) | self.offset, line
                self.offset += len(line)


class GenerationLines:
    """A JSON lines file and its rotated generations (``<name>.1``, ...), oldest first, each
    read from where the last read stopped.

    A rotation renames files: each is followed by its identity, so nothing is read twice.
    When a file read before is gone (the oldest generation dropped, the file deleted) or
    shrank, everything is read again from the start.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: list[AppendedLines] = []
        self._keys = itertools.count()

    @property
    def size(self) -> int:
        return sum(file.size for file in self.files)

    @property
    def offset(self) -> int:
        return sum(file.offset for file in self.files)

    def restarted(self) -> bool:
        """Check the files: whether everything read so far must be forgotten."""
        known = {file.identity: file for file in self.files}
        present = _present_generations(self.path)
        sizes = {identity: size for identity, _, size in present}
        restart = any(
            identity not in sizes or sizes[identity] < file.offset
            for identity, file in known.items()
        )
        if restart:
            known = {}
        files = []
        for identity, path, size in present:
            file = known.get(identity) or AppendedLines(path, identity, next(self._keys))
            file.path, file.size = path, size
            files.append(file)
        self.files = files  # one assignment: readers see the old list or the new one
        return restart

    def new_lines(self) -> Iterator[tuple[int, int, bytes]]:
        for file in self.files:
            yield from file.new_lines()


def _present_generations(path: Path) -> list[tuple[Identity, Path, int]]:
    present = []
    for generation in generations(path):
        try:
            status = os.stat(generation)
        except FileNotFoundError:
            continue
        present.append(((status.st_dev, status.st_ino), generation, status.st_size))
    return present


class TraceIndex:
    """Traces of one file, newest first, with the analytics of every span read so far, and
    where the log file beside it holds each trace's log records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # guards the index; held per line while reading
        self._reader = threading.Lock()  # held by the one thread reading the files
        self._error = ""
        self._trace_lines = GenerationLines(path)
        self._log_lines = GenerationLines(log_file_for(path))
        self._log_offsets: dict[str, array[int]] = {}
        self._reset()

    def _reset(self) -> None:
        self._traces: dict[str, IndexedTrace] = {}
        self._newest_first: list[IndexedTrace] | None = []
        self._analytics = Analytics()
        self._spans = 0
        self._skipped = 0
        self._first_skipped = ""

    # --- Reading ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read what was appended to both files since the last call.

        Returns at once when another thread is reading.
        """
        if not self._reader.acquire(blocking=False):
            return
        try:
            self._read_traces()
            with contextlib.suppress(OSError):  # logs are a bonus: a run shows without them
                self._read_logs()
        finally:
            self._reader.release()

    def refresh_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.refresh, name="reasonflow-viewer-index", daemon=True)
        thread.start()
        return thread

    def _read_traces(self) -> None:
        try:
            if self._trace_lines.restarted():
                with self._lock:
                    self._reset()
            for number, offset, line in self._trace_lines.new_lines():
                with self._lock:
                    self._index_line(number, offset, line)
                    self._newest_first = None
            self._error = ""
        except OSError as error:  # a directory, no permission, ...: said in every answer
            self._error = f"cannot read {self.path}: {error.strerror or error}"

    def _index_line(self, number: int, offset: int, line: bytes) -> None:
        if not line.strip():
            return
        try:
            spans = decode_line(line, "traces", _decode_indexed)
        except UnreadableLine as problem:
            self._skipped += 1
            self._first_skipped = self._first_skipped or f"line {number} {problem}"
            return
        for span in spans:
            trace = self._traces.get(span.trace_id)
            if trace is None:
                trace = self._traces[span.trace_id] = IndexedTrace(span.trace_id)
            trace.add_at(span, offset)
            self._analytics.add(span)
        self._spans += len(spans)

    def _read_logs(self) -> None:
        if self._log_lines.restarted():
            with self._lock:
                self._log_offsets = {}
        for _, offset, line in self._log_lines.new_lines():
            try:
                logs = decode_line(line, "logs", decode_logs) if line.strip() else []
            except UnreadableLine:
                continue  # the trace is still shown, with the logs that could be read
            with self._lock:
                for trace_id in {log.trace_id for log in logs if log.trace_id}:
                    self._log_offsets.setdefault(trace_id, array("q")).append(offset)

    # --- Queries (call refresh first) ---------------------------------------------------------

    def newest_first(self) -> list[IndexedTrace]:
        with self._lock:
            if self._newest_first is None:
                self._newest_first = sorted(
                    self._traces.values(), key=lambda trace: trace.first_start, reverse=True
                )
            return self._newest_first

    def matching(self, prefix: str) -> list[IndexedTrace]:
        """The traces whose id starts with ``prefix`` (lower-case hex)."""
        with self._lock:
            exact = self._traces.get(prefix)
            if exact is not None:
                return [exact]
            return [trace for key, trace in self._traces.items() if key.startswith(prefix)]

    def spans_of(self, trace: IndexedTrace) -> list[SpanRecord]:
        """The trace's spans, read back from its lines."""
        with self._lock:
            offsets = list(trace.offsets)
        return _read_back(self._trace_lines, offsets, "traces", decode_spans, trace.trace_id)

    def logs_of(self, trace_id: str) -> list[LogLine]:
        """The trace's log records, read back from their lines of the log file."""
        with self._lock:
            offsets = list(self._log_offsets.get(trace_id, ()))
        try:
            return _read_back(self._log_lines, offsets, "logs", decode_logs, trace_id)
        except (OSError, UnreadableLine):
            return []

    def analytics_report(self) -> dict[str, object]:
        with self._lock:
            return self._analytics.report()

    def state(self) -> FileState:
        with self._lock:
            return FileState(
                path=str(self.path.absolute()),
                exists=bool(self._trace_lines.files),
                spans=self._spans,
                traces=len(self._traces),
                skipped_lines=self._skipped,
                first_skipped=self._first_skipped,
                indexing=self._reader.locked(),
                indexed_bytes=self._trace_lines.offset,
                size_bytes=self._trace_lines.size,
                error=self._error,
            )


def _read_back(
    lines: GenerationLines,
    locations: list[int],
    signal: Signal,
    decode: Callable[[dict[str, Any]], list[Record]],
    trace_id: str,
) -> list[Record]:
    """The records of one trace from the lines at ``locations``; a file rotated away since it
    was indexed is skipped (the next refresh finds it again)."""
    files = {file.key: file for file in lines.files}
    records: list[Record] = []
    with contextlib.ExitStack() as stack:
        opened: dict[int, BinaryIO | None] = {}
        for location in locations:
            key = location >> _OFFSET_BITS
            if key not in opened:
                opened[key] = _open_if_same(files.get(key), stack)
            file = opened[key]
            if file is None:
                continue
            file.seek(location & _OFFSET_MASK)
            records += (
                record
                for record in decode_line(file.readline(), signal, decode)
                if record.trace_id == trace_id
            )
    return records


def _open_if_same(lines: AppendedLines | None, stack: contextlib.ExitStack) -> BinaryIO | None:
    """The file indexed as ``lines``, opened, if its path still names it."""
    if lines is None:
        return None
    try:
        file = stack.enter_context(lines.path.open("rb"))
    except FileNotFoundError:
        return None
    status = os.fstat(file.fileno())
    return file if (status.st_dev, status.st_ino) == lines.identity else None
