"""``reasonflow-otel traces``: one line per recorded trace, newest first.

A trace's spans may be spread over many lines of the file (each line is one export batch),
so a small summary is kept per trace while the file streams by: memory grows with the number
of traces (a few hundred bytes each; names are shared), never with their spans.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

from reasonflow_otel.local.store import SpanRecord
from reasonflow_otel.local.text import format_duration, format_table

Status = Literal["ok", "error"]


class TraceSummary:
    """What the listing shows of one trace."""

    __slots__ = (
        "end_ns",
        "failed",
        "first_name",
        "first_start",
        "flows",
        "root",
        "service",
        "spans",
        "trace_id",
    )

    def __init__(self, trace_id: str) -> None:
        self.trace_id = trace_id
        self.spans = 0
        self.first_start = 0
        self.first_name = ""  # the earliest span's name, if no root is found
        self.end_ns = 0
        self.root: str | None = None
        self.service = ""  # the root span's service.name, else the first one seen
        self.failed = False
        self.flows: tuple[str, ...] = ()  # usually one or two: a tuple is the smallest

    def add(self, span: SpanRecord) -> None:
        if self.spans == 0 or span.start_ns < self.first_start:
            self.first_start, self.first_name = span.start_ns, sys.intern(span.name)
        self.spans += 1
        self.end_ns = max(self.end_ns, span.end_ns)
        self.failed = self.failed or span.failed
        flow_name = span.flow_name
        if not span.parent_id:
            self.root = sys.intern(flow_name or span.name)
            self.service = span.service or self.service
        elif not self.service:
            self.service = span.service
        if flow_name is not None and flow_name not in self.flows:
            self.flows += (sys.intern(flow_name),)

    @property
    def root_name(self) -> str:
        return self.root or self.first_name

    @property
    def status(self) -> Status:
        """``error`` when any span of the trace failed."""
        return "error" if self.failed else "ok"

    @property
    def duration(self) -> float:
        return max(self.end_ns - self.first_start, 0) / 1e9


def summarize(spans: Iterable[SpanRecord]) -> list[TraceSummary]:
    """One summary per trace, newest first."""
    traces: dict[str, TraceSummary] = {}
    for span in spans:
        summary = traces.get(span.trace_id)
        if summary is None:
            summary = traces[span.trace_id] = TraceSummary(span.trace_id)
        summary.add(span)
    return sorted(traces.values(), key=lambda trace: trace.first_start, reverse=True)


def select(
    traces: Iterable[TraceSummary], flow: str | None, status: Status | None
) -> list[TraceSummary]:
    """The traces that ran ``flow`` (at any depth) and ended with ``status``."""
    return [
        trace
        for trace in traces
        if (flow is None or flow in trace.flows) and (status is None or trace.status == status)
    ]


def render_listing(traces: Sequence[TraceSummary]) -> list[str]:
    rows = [["TIME", "TRACE ID", "SERVICE", "ROOT", "STATUS", "DURATION", "SPANS"]]
    rows += [
        [
            local_time(trace.first_start),
            trace.trace_id,
            trace.service or "-",
            trace.root_name,
            trace.status,
            format_duration(trace.duration),
            f"{trace.spans:,}",
        ]
        for trace in traces
    ]
    return format_table(rows, left_columns=len(rows[0]))


def local_time(time_ns: int) -> str:
    """Local time with its UTC offset, so times read the same from any machine."""
    return datetime.fromtimestamp(time_ns / 1e9).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


# The most trace ids an ambiguous prefix lists.
AMBIGUOUS_SHOWN = 20


def ambiguous(prefix: str, trace_ids: Sequence[str]) -> str:
    """What to say when ``prefix`` matches several traces: all of them, or how many more."""
    shown = ", ".join(trace_ids[:AMBIGUOUS_SHOWN])
    more = len(trace_ids) - AMBIGUOUS_SHOWN
    rest = f" and {more} more" if more > 0 else ""
    return f"{prefix} matches {len(trace_ids)} traces: {shown}{rest}; give more digits"
