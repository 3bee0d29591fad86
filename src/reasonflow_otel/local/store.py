"""The local store: OTLP JSON lines files, written lazily and read as streams.

With no OTLP endpoint, spans are written by our exporter (``trace_file.py``): each line is one
``ExportTraceServiceRequest`` in OTLP/JSON (ids as hex, 64-bit integers as strings), the format
the Collector's ``otlpjsonfile`` receiver reads. The format allows one signal per file, so logs
go to a sibling file (:func:`log_file_for`). A file is created with its first record: a run that
records nothing leaves nothing behind, and the directory the store creates ignores itself in
git. A file past its size limit is rotated to ``<name>.1``, ``<name>.2``, ...; readers read
the rotated files first, oldest first, then the current one (:func:`generations`).

Readers hold one line at a time, so memory stays flat however large the file is. A line that
cannot be read (cut short, corrupt, another tool's data) is skipped: the first one is reported
with its line number, the others are counted, and the rest of the file is still read.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

from opentelemetry.sdk.resources import SERVICE_NAME

from reasonflow_otel import semconv

Signal = Literal["traces", "logs"]
Warn = Callable[[str], None]
T = TypeVar("T")

# The top-level key of each signal's OTLP/JSON request -> the signal.
_TOP_KEYS: Mapping[str, str] = {
    "resourceSpans": "traces",
    "resourceLogs": "logs",
    "resourceMetrics": "metrics",
}
_SIGNAL_KEYS = {signal: key for key, signal in _TOP_KEYS.items()}
_STATUS_ERROR = (2, "STATUS_CODE_ERROR")  # OTLP/JSON uses the number; ProtoJSON allows names
_SEVERITY_NAMES = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")  # 4 numbers each


class UnreadableLine(ValueError):
    """A line that is skipped; the message says why, for the warning."""


# --- Paths ------------------------------------------------------------------------------------


def log_file_for(trace_file: Path) -> Path:
    """The log file beside a trace file: ``traces.jsonl`` -> ``traces.logs.jsonl``."""
    return trace_file.with_name(f"{trace_file.stem}.logs{trace_file.suffix or '.jsonl'}")


def prepare_for_append(path: Path) -> None:
    """Create the file's directory and end a line left cut short by a writer that was killed.

    Without the newline, the next run's first line would be glued to the broken one and be
    lost with it. A directory created here gets a ``.gitignore`` of ``*``: captured
    payloads must not be committed by accident with the project around it.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / ".gitignore").write_text("*\n", encoding="utf-8")
    if _ends_mid_line(path):
        with path.open("ab") as file:
            file.write(b"\n")


def _ends_mid_line(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            if file.seek(0, os.SEEK_END) == 0:
                return False
            file.seek(-1, os.SEEK_END)
            return file.read(1) != b"\n"
    except FileNotFoundError:
        return False


# --- Records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    attributes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One finished span, as read back from the store or taken from the SDK."""

    trace_id: str
    span_id: str
    parent_id: str  # "" when the span has no parent
    name: str
    start_ns: int
    end_ns: int
    failed: bool
    status_message: str
    attributes: Mapping[str, Any]
    events: tuple[SpanEvent, ...] = ()
    service: str = ""  # the resource's service.name

    @property
    def duration(self) -> float:
        """Seconds."""
        return max(self.end_ns - self.start_ns, 0) / 1e9

    @property
    def flow_name(self) -> str | None:
        """The workflow's name if this span is a flow run (not one of a batch flow's items)."""
        if self.attributes.get(semconv.GEN_AI_OPERATION_NAME) != semconv.OPERATION_INVOKE_WORKFLOW:
            return None
        return str(self.attributes.get(semconv.GEN_AI_WORKFLOW_NAME, self.name))

    @property
    def retries(self) -> int:
        """Failed attempts that were retried (one retry event each)."""
        return sum(1 for event in self.events if event.name == semconv.EVENT_RETRY)

    @property
    def is_node(self) -> bool:
        """A node run: not a flow, batch item, phase or foreign span."""
        return semconv.NODE_KIND in self.attributes and self.flow_name is None


@dataclass(frozen=True, slots=True)
class LogLine:
    """One log record, tied to the span that was current when it was emitted."""

    trace_id: str
    span_id: str
    time_ns: int
    severity: str
    body: str


# --- Reading ----------------------------------------------------------------------------------


def warn_on_stderr(message: str) -> None:
    print(f"reasonflow-otel: warning: {message}", file=sys.stderr)


def read_spans(path: Path, warn: Warn = warn_on_stderr) -> Iterator[SpanRecord]:
    """Every span of a trace file, in file order; raises ``OSError`` if it cannot be opened."""
    return read_lines(path, "traces", decode_spans, warn)


def read_logs(path: Path, warn: Warn = warn_on_stderr) -> Iterator[LogLine]:
    """Every log record of a log file, in file order; raises ``OSError`` if it cannot be opened."""
    return read_lines(path, "logs", decode_logs, warn)


def read_lines(
    path: Path, signal: Signal, decode: Callable[[dict[str, Any]], list[T]], warn: Warn
) -> Iterator[T]:
    """Decode each line of an OTLP JSON lines file and its rotated files, oldest first;
    unreadable lines are reported and skipped.

    ``decode`` turns one parsed request into records and raises ``ValueError``, ``KeyError``
    or ``TypeError`` for data it cannot use.
    """
    files = open_generations(path)  # opened now, so a missing file fails at the call
    return _decoded_files(files, signal, decode, warn)


def generations(path: Path) -> list[Path]:
    """``path``'s rotated files (``<name>.1``, ``<name>.2``, ...), oldest first, then ``path``."""
    numbered = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            number = entry.name.removeprefix(f"{path.name}.")
            if number != entry.name and number.isdigit():
                numbered.append((int(number), Path(entry.path)))
    return [rotated for _, rotated in sorted(numbered, reverse=True)] + [path]


def open_generations(path: Path) -> list[tuple[Path, BinaryIO]]:
    """Every generation of ``path``, opened, oldest first; ``OSError`` if none can be opened.

    They are opened newest first and each file is taken once: a rotation meanwhile moves a
    file already opened to the next name, where it is recognised, so nothing is lost.
    """
    opened: list[tuple[Path, BinaryIO]] = []
    seen: set[tuple[int, int]] = set()
    failure: OSError | None = None
    for generation in reversed(generations(path)):
        try:
            file = generation.open("rb")
        except OSError as error:
            failure = failure or error
            continue
        status = os.fstat(file.fileno())
        if (status.st_dev, status.st_ino) in seen:
            file.close()
            continue
        seen.add((status.st_dev, status.st_ino))
        opened.append((generation, file))
    if not opened:
        raise failure or FileNotFoundError(2, "No such file or directory", str(path))
    return opened[::-1]


def _decoded_files(
    files: list[tuple[Path, BinaryIO]],
    signal: Signal,
    decode: Callable[[dict[str, Any]], list[T]],
    warn: Warn,
) -> Iterator[T]:
    try:
        for path, file in files:
            yield from _decoded_lines(file, path, signal, decode, warn)
    finally:
        for _, file in files:
            file.close()


def _decoded_lines(
    file: BinaryIO,
    path: Path,
    signal: Signal,
    decode: Callable[[dict[str, Any]], list[T]],
    warn: Warn,
) -> Iterator[T]:
    skipped = _SkippedLines(path, warn)
    try:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                records = decode_line(line, signal, decode)
            except UnreadableLine as problem:
                skipped.add(number, str(problem))
                continue
            yield from records
    finally:
        skipped.report_rest()


def decode_line(
    line: bytes, signal: Signal, decode: Callable[[dict[str, Any]], list[T]]
) -> list[T]:
    """The records of one line; :class:`UnreadableLine` says why the line cannot be used."""
    try:
        return decode(_parse(line, signal))
    except UnreadableLine:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UnreadableLine(f"has malformed {signal} data ({_describe(error)})") from None


def _parse(line: bytes, signal: Signal) -> dict[str, Any]:
    """One line as a request of ``signal``, or :class:`UnreadableLine` saying what it is."""
    try:
        request = json.loads(line)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        if not line.endswith(b"\n"):
            raise UnreadableLine(
                "is cut short (the file ends mid-line, as when the program writing it is "
                "stopped mid-write)"
            ) from None
        raise UnreadableLine(f"is not valid JSON ({_describe(error)})") from None
    expected = _SIGNAL_KEYS[signal]
    if not isinstance(request, dict):
        raise UnreadableLine(f"is not OTLP {signal} data (a JSON {type(request).__name__})")
    if expected not in request:
        other = next((_TOP_KEYS[key] for key in request if key in _TOP_KEYS), None)
        if other:
            raise UnreadableLine(f"holds OTLP {other}, not {signal}")
        keys = ", ".join(sorted(request)[:5]) or "none"
        raise UnreadableLine(f"is not OTLP {signal} data (no {expected!r}; keys: {keys})")
    return request


def _describe(error: BaseException) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg.removesuffix(' at')} at character {error.pos + 1}"
    if isinstance(error, KeyError):
        return f"missing {error}"
    return str(error)


class _SkippedLines:
    """Reports the first unreadable line in full, then counts the others."""

    def __init__(self, path: Path, warn: Warn) -> None:
        self._path = path
        self._warn = warn
        self._count = 0

    def add(self, number: int, reason: str) -> None:
        self._count += 1
        if self._count == 1:
            self._warn(f"{self._path}: line {number} {reason}; skipped")

    def report_rest(self) -> None:
        if self._count > 1:
            more = self._count - 1
            lines = "line was" if more == 1 else "lines were"
            self._warn(f"{self._path}: {more} more unreadable {lines} skipped")


# --- Decoding OTLP/JSON -------------------------------------------------------------------------


def decode_spans(request: dict[str, Any], keep: Container[str] | None = None) -> list[SpanRecord]:
    """The request's spans; with ``keep``, only those attribute keys are decoded (faster)."""
    spans = []
    for resource_spans in request["resourceSpans"]:
        service = _service(resource_spans)
        for scope_spans in resource_spans.get("scopeSpans") or ():
            spans += (_span(span, service, keep) for span in scope_spans.get("spans") or ())
    return spans


def _service(resource_spans: dict[str, Any]) -> str:
    """The ``service.name`` of a resource, or ``""``."""
    resource = resource_spans.get("resource") or {}
    for item in resource.get("attributes") or ():
        if item.get("key") == SERVICE_NAME:
            return str(decode_value(item.get("value") or {}))
    return ""


def _span(span: dict[str, Any], service: str, keep: Container[str] | None) -> SpanRecord:
    status = span.get("status") or {}
    return SpanRecord(
        trace_id=_hex_id(span["traceId"], 32, "trace id"),
        span_id=_hex_id(span["spanId"], 16, "span id"),
        parent_id=span.get("parentSpanId") or "",
        name=str(span.get("name", "")),
        start_ns=int(span["startTimeUnixNano"]),
        end_ns=int(span["endTimeUnixNano"]),
        failed=status.get("code") in _STATUS_ERROR,
        status_message=str(status.get("message", "")),
        attributes=decode_attributes(span.get("attributes"), keep),
        events=tuple(
            SpanEvent(str(event.get("name", "")), decode_attributes(event.get("attributes"), keep))
            for event in span.get("events") or ()
        ),
        service=service,
    )


def _hex_id(value: Any, length: int, what: str) -> str:
    if not isinstance(value, str) or len(value) != length:
        raise ValueError(f"{what} {value!r} is not {length} hex digits")
    return value.lower()


def decode_logs(request: dict[str, Any]) -> list[LogLine]:
    return [
        _log(record)
        for resource_logs in request["resourceLogs"]
        for scope_logs in resource_logs.get("scopeLogs") or ()
        for record in scope_logs.get("logRecords") or ()
    ]


def _log(record: dict[str, Any]) -> LogLine:
    body = decode_value(record.get("body") or {})
    return LogLine(
        trace_id=str(record.get("traceId") or "").lower(),
        span_id=str(record.get("spanId") or "").lower(),
        time_ns=int(record.get("timeUnixNano") or record.get("observedTimeUnixNano") or 0),
        severity=record.get("severityText") or severity_name(record.get("severityNumber", 0)),
        body=body if isinstance(body, str) else json.dumps(body, default=str),
    )


def severity_name(number: int) -> str:
    """The short name of an OTel severity number (1-24), e.g. 13 -> ``WARN``."""
    index = (int(number) - 1) // 4
    return _SEVERITY_NAMES[index] if 0 <= index < len(_SEVERITY_NAMES) else "LOG"


def decode_attributes(
    attributes: list[dict[str, Any]] | None, keep: Container[str] | None = None
) -> dict[str, Any]:
    """OTLP/JSON ``[{"key": k, "value": {"stringValue": v}}, ...]`` as ``{k: v}``.

    With ``keep``, other keys are left out.
    """
    if keep is None:
        return {item["key"]: decode_value(item.get("value") or {}) for item in attributes or ()}
    return {
        item["key"]: decode_value(item.get("value") or {})
        for item in attributes or ()
        if item["key"] in keep
    }


def decode_value(value: dict[str, Any]) -> Any:
    """An OTLP/JSON ``AnyValue`` as a Python value."""
    for kind, raw in value.items():
        decode = _VALUE_DECODERS.get(kind)
        if decode is not None:
            return decode(raw)
    return None


_VALUE_DECODERS: Mapping[str, Callable[[Any], Any]] = {
    "stringValue": str,
    "boolValue": bool,
    "intValue": int,
    "doubleValue": float,  # also parses "NaN" and "Infinity"
    "bytesValue": str,  # kept as the hex or base64 text it was written as
    "arrayValue": lambda raw: [decode_value(item) for item in raw.get("values") or ()],
    "kvlistValue": lambda raw: decode_attributes(raw.get("values")),
}
