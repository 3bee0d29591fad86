"""The local trace file: OTLP/JSON lines we write ourselves, rotated by size, shared by processes.

Why our own writer: the contrib ``opentelemetry-exporter-otlp-json-file`` is released for some
instrumentation versions only and pins them, so depending on it would lock the user's
OpenTelemetry versions. The encoding is still the SDK's: each batch goes through the OTLP
encoders of ``opentelemetry-exporter-otlp-proto-common`` (what the OTLP exporters send) and is
printed as one OTLP/JSON line (protobuf's JSON mapping, trace and span ids as hex, enums as
numbers), the format the Collector's ``otlpjsonfile`` receiver and our CLI read.

Rotation: before a line would take the file past ``max_bytes``, ``traces.jsonl`` becomes
``traces.jsonl.1``, ``.1`` becomes ``.2`` and so on; the file past ``backups`` is dropped.
Several processes may write one file: each append holds an exclusive ``flock`` on the file's
directory, and re-checks under it which file the path names now (another process may have
rotated it), so a line is never torn, lost or written to a rotated file, and a file is rotated
once. A line is one ``write()`` on an ``O_APPEND`` descriptor; a write cut short (a full disk)
is cut back, so no half line is left behind.

A file that cannot be written (a full disk, no permission, ``/dev/full``) never reaches the
app: the batch is dropped and counted by the export gate, and one warning is logged for the
whole process, straight on stderr; writing resumes when the file can be written again.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from reasonflow_otel.local.store import prepare_for_append, warn_on_stderr

# OTLP/JSON writes these ``bytes`` fields as hex; protobuf's JSON mapping would use base64.
_HEX_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
_warned = threading.Event()  # one warning per process, whichever file failed


def json_line(request: Message) -> bytes:
    """One OTLP/JSON line of an export request."""
    document = MessageToDict(request, use_integers_for_enums=True)
    for record in _records(document):
        _ids_as_hex(record)
        for link in record.get("links") or ():
            _ids_as_hex(link)
    return (json.dumps(document, separators=(",", ":")) + "\n").encode()


_LEVELS = (("resourceSpans", "scopeSpans", "spans"), ("resourceLogs", "scopeLogs", "logRecords"))


def _records(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The spans or log records of a request: the objects holding trace and span ids."""
    for top, scoped, items in _LEVELS:
        for resource in document.get(top) or ():
            for scope in resource.get(scoped) or ():
                yield from scope.get(items) or ()


def _ids_as_hex(record: dict[str, Any]) -> None:
    for key in _HEX_ID_FIELDS:
        if key in record:
            record[key] = base64.b64decode(record[key]).hex()


class RotatingFile:
    """Appends whole lines to one file, rotating it by size; safe across threads and processes."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._forget_descriptors()

    def _forget_descriptors(self) -> None:
        self._pid = os.getpid()
        self._fd: int | None = None
        self._directory_fd: int | None = None

    def append(self, line: bytes) -> None:
        """Write ``line`` (ending in a newline) whole, or raise ``OSError`` leaving no part."""
        if self._pid != os.getpid():  # a forked child: its own descriptors, so flock excludes
            self._lock = threading.Lock()
            self._forget_descriptors()
        with self._lock, self._exclusive():
            fd = self._current_descriptor()
            if self._full(os.fstat(fd), len(line)):
                self._rotate()
                fd = self._current_descriptor()
            _write_whole(fd, line)

    def _full(self, status: os.stat_result, adding: int) -> bool:
        """A regular file with lines in it that ``adding`` more bytes would take past the limit."""
        if not stat.S_ISREG(status.st_mode) or status.st_size == 0:
            return False
        return status.st_size + adding > self.max_bytes

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the directory's lock: one writer of this file (and its rotation) at a time."""
        if self._directory_fd is None:
            if not self.path.parent.exists():
                prepare_for_append(self.path)  # makes the directory, ignored by git
            self._directory_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self._directory_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._directory_fd, fcntl.LOCK_UN)

    def _current_descriptor(self) -> int:
        """Our descriptor of the file the path names now (reopened after anyone's rotation)."""
        if self._fd is not None and not _names(self.path, os.fstat(self._fd)):
            os.close(self._fd)
            self._fd = None
        if self._fd is None:
            prepare_for_append(self.path)  # ends a line a killed writer left cut short
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def _rotate(self) -> None:
        """``traces.jsonl`` -> ``.1`` -> ``.2`` ...; the one past ``backups`` is dropped."""
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for number in range(self.backups - 1, 0, -1):
            older = rotated_path(self.path, number)
            if older.exists():
                older.replace(rotated_path(self.path, number + 1))
        self.path.replace(rotated_path(self.path, 1))

    def close(self) -> None:
        with self._lock:
            for fd in (self._fd, self._directory_fd):
                if fd is not None and self._pid == os.getpid():
                    os.close(fd)
            self._forget_descriptors()


def rotated_path(path: Path, number: int) -> Path:
    """``traces.jsonl`` -> ``traces.jsonl.1``."""
    return path.with_name(f"{path.name}.{number}")


def _names(path: Path, status: os.stat_result) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    return (current.st_dev, current.st_ino) == (status.st_dev, status.st_ino)


def _write_whole(fd: int, line: bytes) -> None:
    """One line, whole: a write cut short is cut back off the file, then the error raised."""
    start = os.lseek(fd, 0, os.SEEK_END)
    written = 0
    try:
        while written < len(line):
            written += os.write(fd, line[written:])
    except OSError:
        if written:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
        raise


class _LineWriter:
    """What both exporters share: encode a batch, append it, and fail quietly and counted."""

    def __init__(self, file: RotatingFile, encode: Callable[[Sequence[Any]], Message]) -> None:
        self.file = file
        self._encode = encode

    def write(self, batch: Sequence[Any]) -> bool:
        if not batch:
            return True
        line = json_line(self._encode(batch))
        try:
            self.file.append(line)
        except OSError as error:
            _warn_once(self.file.path, error)
            return False
        return True


def _warn_once(path: Path, error: OSError) -> None:
    """Straight to stderr: a logging handler could feed the warning back into the failing file."""
    if _warned.is_set():
        return
    _warned.set()
    warn_on_stderr(
        f"cannot write {path} ({error.strerror or error}); telemetry for it is dropped and "
        "counted until it can be written (said once)"
    )


class TraceFileExporter(SpanExporter):
    """Spans to the local trace file, one OTLP/JSON line per batch."""

    @property
    def said_what_it_drops(self) -> bool:
        """Whether the one warning was given: the export gate then adds no second line."""
        return _warned.is_set()

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self._writer = _LineWriter(RotatingFile(path, max_bytes, backups), encode_spans)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._writer.write(spans):
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # every line is written when exported

    def shutdown(self) -> None:
        self._writer.file.close()


class LogFileExporter(LogRecordExporter):
    """Log records to the log file beside the trace file, one OTLP/JSON line per batch."""

    said_what_it_drops = TraceFileExporter.said_what_it_drops

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self._writer = _LineWriter(RotatingFile(path, max_bytes, backups), encode_logs)

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        if self._writer.write(batch):
            return LogRecordExportResult.SUCCESS
        return LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self._writer.file.close()
