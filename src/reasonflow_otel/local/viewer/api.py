"""The viewer's JSON API: ``/api/traces``, ``/api/traces/{trace_id}`` and ``/api/stats``.

Every endpoint only reads. A bad parameter is a 400 and an unknown trace a 404, both with
``{"error": "..."}``. Durations are in seconds, times in UTC ISO 8601.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from string import hexdigits
from typing import Any, cast

from opentelemetry.semconv.attributes.exception_attributes import EXCEPTION_STACKTRACE

from reasonflow_otel import semconv
from reasonflow_otel.local import listing
from reasonflow_otel.local.store import LogLine, SpanRecord, UnreadableLine
from reasonflow_otel.local.tree import TreeNode, build_tree, error_text
from reasonflow_otel.local.viewer.analytics import iso_time
from reasonflow_otel.local.viewer.graphs import flow_graphs, is_batch_item, routing_miss
from reasonflow_otel.local.viewer.index import IndexedTrace, TraceSource

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
STATUSES = ("ok", "error")
FILTERS = ("workflow", "status", "since", "until", "q", "limit")
PAYLOAD_KEYS = (
    semconv.NODE_PREP_RESULT,
    semconv.NODE_EXEC_RESULT,
    semconv.NODE_POST_RESULT,
    semconv.SHARED_BEFORE,
    semconv.SHARED_AFTER,
)


class ApiError(Exception):
    """An answer other than 200: the status and the message for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TraceFilter:
    workflow: str | None = None
    status: listing.Status | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    prefix: str = ""
    limit: int = DEFAULT_LIMIT

    def select(self, traces: list[IndexedTrace]) -> list[IndexedTrace]:
        """The traces that pass every filter, in the given order."""
        return [
            trace
            for trace in listing.select(traces, self.workflow, self.status)
            if (self.since_ns is None or trace.first_start >= self.since_ns)
            and (self.until_ns is None or trace.first_start < self.until_ns)
            and trace.trace_id.startswith(self.prefix)
        ]


# --- Endpoints ----------------------------------------------------------------------------------


def list_traces(index: TraceSource, query: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """``GET /api/traces``: traces newest first, filtered."""
    chosen = parse_filter(query)
    index.refresh()
    everything = index.newest_first()
    matched = chosen.select(everything)
    return {
        "traces": [trace_summary(trace) for trace in matched[: chosen.limit]],
        "matched": len(matched),
        "workflows": sorted({name for trace in everything for name in trace.flows}),
        "file": index.state().report(),
    }


def get_trace(index: TraceSource, trace_id: str) -> dict[str, Any]:
    """``GET /api/traces/{trace_id}``: one trace, by full id or unique prefix."""
    prefix = parse_trace_id(trace_id)
    index.refresh()
    matches = index.matching(prefix)
    if not matches:
        reading = " yet (the file is still being read)" if index.state().indexing else ""
        raise ApiError(404, f"no trace id starts with {prefix}{reading}")
    if len(matches) > 1:
        found = ", ".join(sorted(trace.trace_id for trace in matches)[:3])
        raise ApiError(400, f"{prefix} matches {len(matches)} traces ({found}, ...)")
    trace = matches[0]
    try:
        spans = index.spans_of(trace)
    except (OSError, UnreadableLine) as error:
        raise ApiError(404, f"trace {trace.trace_id} can no longer be read ({error})") from None
    return trace_detail(trace, spans, index.logs_of(trace.trace_id))


def get_stats(index: TraceSource) -> dict[str, Any]:
    """``GET /api/stats``: ``reasonflow-otel stats --json`` plus per-workflow analytics."""
    index.refresh()
    return {**index.analytics_report(), "file": index.state().report()}


# --- Parameters ---------------------------------------------------------------------------------


def parse_filter(query: Mapping[str, Sequence[str]]) -> TraceFilter:
    unknown = sorted(set(query) - set(FILTERS))
    if unknown:
        raise ApiError(400, f"unknown parameter {unknown[0]!r} (known: {', '.join(FILTERS)})")
    value = {name: _single(query, name) for name in FILTERS}
    status = value["status"]
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"status must be ok or error, not {status!r}")
    return TraceFilter(
        workflow=value["workflow"] or None,
        status=cast("listing.Status | None", status),
        since_ns=_time(value["since"], "since"),
        until_ns=_time(value["until"], "until"),
        prefix=parse_trace_id(value["q"]) if value["q"] else "",
        limit=_limit(value["limit"]),
    )


def _single(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, f"{name} is given {len(values)} times")
    return values[0].strip()


def parse_trace_id(text: str) -> str:
    prefix = text.strip().lower()
    if not prefix or len(prefix) > 32 or any(char not in hexdigits for char in prefix):
        raise ApiError(400, f"{text!r} is not a trace id (1 to 32 hex digits)")
    return prefix


def _time(text: str | None, name: str) -> int | None:
    """ISO 8601 (``Z`` or an offset; UTC when neither is given) as Unix nanoseconds."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 time, not {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1_000_000) * 1000


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"limit must be a whole number from 1 to {MAX_LIMIT}, not {text!r}")
    return limit


# --- Documents ----------------------------------------------------------------------------------


def trace_summary(trace: IndexedTrace) -> dict[str, Any]:
    return {
        "trace_id": trace.trace_id,
        "root": trace.root_name,
        "service": trace.service,
        "workflows": list(trace.flows),
        "status": trace.status,
        "start": iso_time(trace.first_start),
        "duration_s": trace.duration,
        "spans": trace.spans,
    }


def trace_detail(
    trace: IndexedTrace, spans: list[SpanRecord], logs: list[LogLine]
) -> dict[str, Any]:
    """The trace with its spans in tree order (a waterfall's rows), logs and flow graphs."""
    roots = build_tree(spans, logs)
    rows = [row for root in roots for row in _rows(root, 0)]
    flows = [node for node, _ in rows if semconv.FLOW_GRAPH in node.span.attributes]
    return {
        **trace_summary(trace),
        "span_list": [_span_document(node, depth, trace.first_start) for node, depth in rows],
        "logs": [_log_document(log) for log in sorted(logs, key=lambda log: log.time_ns)],
        "graphs": flow_graphs(flows),
    }


def _rows(node: TreeNode, depth: int) -> list[tuple[TreeNode, int]]:
    rows = [(node, depth)]
    for child in node.children:
        rows += _rows(child, depth + 1)
    return rows


def _span_document(node: TreeNode, depth: int, trace_start: int) -> dict[str, Any]:
    span = node.span
    attributes = {k: v for k, v in span.attributes.items() if k not in PAYLOAD_KEYS}
    return {
        "span_id": span.span_id,
        "parent_id": span.parent_id,
        "name": span.name,
        "depth": depth,
        "kind": _kind(span),
        "status": "error" if span.failed else "ok",
        "error": error_text(span) if span.failed else None,
        "start_offset_s": max(span.start_ns - trace_start, 0) / 1e9,
        "duration_s": span.duration,
        "attributes": attributes,
        "payloads": {k: span.attributes[k] for k in PAYLOAD_KEYS if k in span.attributes},
        "events": [{"name": e.name, "attributes": dict(e.attributes)} for e in span.events],
        "exception": _exception(span),
        "retries": span.retries,
        "fallback": bool(span.attributes.get(semconv.NODE_FALLBACK)),
        "routing_miss": routing_miss(span),
    }


def _kind(span: SpanRecord) -> str:
    if span.flow_name is not None:
        return "flow"
    if span.is_node:
        return "node"
    if is_batch_item(span):
        return "item"
    return "span"


def _exception(span: SpanRecord) -> dict[str, str] | None:
    for event in span.events:
        if event.name == semconv.EVENT_EXCEPTION:
            return {
                "type": str(event.attributes.get(semconv.EXCEPTION_TYPE, "")),
                "message": str(event.attributes.get(semconv.EXCEPTION_MESSAGE, "")),
                "stacktrace": str(event.attributes.get(EXCEPTION_STACKTRACE, "")),
            }
    return None


def _log_document(log: LogLine) -> dict[str, Any]:
    return {
        "span_id": log.span_id,
        "time": iso_time(log.time_ns),
        "severity": log.severity,
        "body": log.body,
    }
