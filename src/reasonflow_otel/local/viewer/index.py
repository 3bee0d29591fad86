"""The viewer's index of the trace file: read once, then only what was appended.

Each trace keeps its listing summary and the byte offsets of the lines holding its spans, so
memory grows with the number of traces and lines, not with the spans' attributes; a trace is
read back from those lines when it is opened, and only the attributes the listing and the
analytics use are decoded while indexing. Every request first checks the file's size: new
complete lines are read from the last offset (a line still being written waits for its
newline), and a file that shrank or was replaced is read again from the start.

One thread reads at a time. A large file is indexed by a background thread started with the
server; meanwhile requests are answered from what is indexed so far (``indexing`` is true).
"""

from __future__ import annotations

import os
import sys
import threading
from array import array
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from reasonflow_otel import semconv
from reasonflow_otel.local.listing import TraceSummary
from reasonflow_otel.local.store import (
    LogLine,
    SpanRecord,
    UnreadableLine,
    decode_line,
    decode_spans,
    log_file_for,
    read_logs,
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
        semconv.ERROR_TYPE,
        semconv.EXCEPTION_MESSAGE,
    }
)
_decode_indexed = partial(decode_spans, keep=INDEXED_KEYS)


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
    skipped_lines: int
    first_skipped: str  # why the first unreadable line was skipped ("" when none was)
    indexing: bool  # another thread is reading the file: the figures will grow
    indexed_bytes: int
    size_bytes: int
    error: str  # why the file cannot be read ("" when it can)

    def report(self) -> dict[str, object]:
        return {
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


class TraceIndex:
    """Traces of one file, newest first, with the analytics of every span read so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # guards the index; held per line while reading
        self._reader = threading.Lock()  # held by the one thread reading the file
        self._error = ""
        self._reset(None)

    def _reset(self, identity: tuple[int, int] | None) -> None:
        self._identity = identity
        self._offset = 0
        self._lines = 0
        self._traces: dict[str, IndexedTrace] = {}
        self._newest_first: list[IndexedTrace] | None = []
        self._analytics = Analytics()
        self._spans = 0
        self._skipped = 0
        self._first_skipped = ""

    # --- Reading ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read what was appended since the last call; start over if the file was replaced.

        Returns at once when another thread is reading.
        """
        if not self._reader.acquire(blocking=False):
            return
        try:
            try:
                status = os.stat(self.path)
            except FileNotFoundError:
                with self._lock:
                    self._reset(None)
                return
            identity = (status.st_dev, status.st_ino)
            if identity != self._identity or status.st_size < self._offset:
                with self._lock:
                    self._reset(identity)
            if status.st_size > self._offset:
                with self.path.open("rb") as file:
                    file.seek(self._offset)
                    self._read(file)
            self._error = ""
        except OSError as error:  # a directory, no permission, ...: said in every answer
            self._error = f"cannot read {self.path}: {error.strerror or error}"
        finally:
            self._reader.release()

    def refresh_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.refresh, name="reasonflow-viewer-index", daemon=True)
        thread.start()
        return thread

    def _read(self, file: BinaryIO) -> None:
        for line in file:
            if not line.endswith(b"\n"):
                break  # still being written: read it once it is complete
            with self._lock:
                self._lines += 1
                if line.strip():
                    self._index_line(line, self._offset)
                self._offset += len(line)
                self._newest_first = None

    def _index_line(self, line: bytes, offset: int) -> None:
        try:
            spans = decode_line(line, "traces", _decode_indexed)
        except UnreadableLine as problem:
            self._skipped += 1
            self._first_skipped = self._first_skipped or f"line {self._lines} {problem}"
            return
        for span in spans:
            trace = self._traces.get(span.trace_id)
            if trace is None:
                trace = self._traces[span.trace_id] = IndexedTrace(span.trace_id)
            trace.add_at(span, offset)
            self._analytics.add(span)
        self._spans += len(spans)

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
        spans: list[SpanRecord] = []
        with self.path.open("rb") as file:
            for offset in offsets:
                file.seek(offset)
                spans += (
                    span
                    for span in decode_line(file.readline(), "traces", decode_spans)
                    if span.trace_id == trace.trace_id
                )
        return spans

    def logs_of(self, trace_id: str) -> list[LogLine]:
        """The trace's log records from the log file beside the trace file, if there is one."""
        path = log_file_for(self.path)
        try:
            logs = read_logs(path, warn=_ignore)
        except OSError:
            return []
        return [log for log in logs if log.trace_id == trace_id]

    def analytics_report(self) -> dict[str, object]:
        with self._lock:
            return self._analytics.report()

    def state(self) -> FileState:
        try:
            size = os.stat(self.path).st_size
        except OSError:
            size = 0
        with self._lock:
            return FileState(
                path=str(self.path.absolute()),
                exists=self._identity is not None,
                spans=self._spans,
                traces=len(self._traces),
                skipped_lines=self._skipped,
                first_skipped=self._first_skipped,
                indexing=self._reader.locked(),
                indexed_bytes=self._offset,
                size_bytes=size,
                error=self._error,
            )


def _ignore(message: str) -> None:
    """Unreadable log lines: the trace is still shown, with the logs that could be read."""
