"""The console tree: each finished trace printed on stderr as an indented tree.

Opt-in with ``REASONFLOW_OTEL_CONSOLE=true``. It is a span processor and a log record
processor rather than an exporter: both see spans and logs synchronously, as they end or are
emitted, so the tree is printed the moment the trace's local root span ends, with every log
of the trace already under its node. Spans of traces still running are held in memory, at most
:data:`MAX_PENDING_SPANS` of them (the oldest traces are dropped first).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode, TraceFlags, format_span_id, format_trace_id

from reasonflow_otel.guard import report_internal_error
from reasonflow_otel.local.store import LogLine, SpanEvent, SpanRecord, severity_name
from reasonflow_otel.local.tree import Style, build_tree, render_trace

MAX_PENDING_SPANS = 10_000


@dataclass
class _PendingTrace:
    spans: list[SpanRecord] = field(default_factory=list)
    logs: list[LogLine] = field(default_factory=list)


class ConsoleTreeProcessor(SpanProcessor):
    """Collects each trace's spans and logs; prints the tree when its local root ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, _PendingTrace] = OrderedDict()
        self._held = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        try:
            record = span_record(span)
            if span.parent is not None and not span.parent.is_remote:
                with self._lock:
                    self._trace(record.trace_id).spans.append(record)
                return
            with self._lock:  # the local root: the trace is complete
                pending = self._pending.pop(record.trace_id, None) or _PendingTrace()
                self._held -= len(pending.spans) + len(pending.logs)
            pending.spans.append(record)
            self._print(pending)
        except Exception as error:
            report_internal_error("printing the console trace tree", error)

    def add_log(self, log: LogLine) -> None:
        """A log emitted inside a trace, kept until the trace is printed."""
        with self._lock:
            self._trace(log.trace_id).logs.append(log)

    def _trace(self, trace_id: str) -> _PendingTrace:
        """The trace's buffer, now the most recent (call with the lock held).

        Counts one more entry held, and drops the least recently active traces beyond the limit.
        """
        pending = self._pending.get(trace_id)
        if pending is None:
            pending = self._pending[trace_id] = _PendingTrace()
        self._pending.move_to_end(trace_id)
        self._held += 1
        while self._held > MAX_PENDING_SPANS and len(self._pending) > 1:
            _, dropped = self._pending.popitem(last=False)
            self._held -= len(dropped.spans) + len(dropped.logs)
        return pending

    @staticmethod
    def _print(pending: _PendingTrace) -> None:
        stream = sys.stderr
        lines = render_trace(build_tree(pending.spans, pending.logs), Style.for_stream(stream))
        stream.write("\n".join(lines) + "\n")
        stream.flush()

    def shutdown(self) -> None:
        with self._lock:
            self._pending.clear()
            self._held = 0

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class ConsoleLogProcessor(LogRecordProcessor):
    """Hands the logs emitted inside a sampled span to the console tree.

    Logs of unsampled traces are left out: their spans never reach the tree.
    """

    def __init__(self, tree: ConsoleTreeProcessor) -> None:
        self._tree = tree

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        try:
            record = log_record.log_record
            if record.trace_id and record.span_id and TraceFlags(record.trace_flags or 0).sampled:
                self._tree.add_log(log_line(log_record))
        except Exception as error:
            report_internal_error("adding a log to the console trace tree", error)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_record(span: ReadableSpan) -> SpanRecord:
    """An SDK span as the store's record."""
    context = span.get_span_context()
    if context is None:
        raise ValueError(f"span {span.name!r} has no span context")
    return SpanRecord(
        trace_id=format_trace_id(context.trace_id),
        span_id=format_span_id(context.span_id),
        parent_id=format_span_id(span.parent.span_id) if span.parent else "",
        name=span.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
        failed=span.status.status_code is StatusCode.ERROR,
        status_message=span.status.description or "",
        attributes=dict(span.attributes or {}),
        events=tuple(SpanEvent(event.name, dict(event.attributes or {})) for event in span.events),
        service=str(span.resource.attributes.get(SERVICE_NAME, "")),
    )


def log_line(log_record: ReadWriteLogRecord) -> LogLine:
    """An SDK log record as the store's record."""
    record = log_record.log_record
    severity = record.severity_text or severity_name(
        record.severity_number.value if record.severity_number else 0
    )
    return LogLine(
        trace_id=format_trace_id(record.trace_id or 0),
        span_id=format_span_id(record.span_id or 0),
        time_ns=record.timestamp or record.observed_timestamp or 0,
        severity=severity,
        body=str(record.body),
    )
