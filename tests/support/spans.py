"""Readable views of exported spans, so tests can assert a whole trace exactly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conftest import Telemetry
from opentelemetry.sdk.trace import ReadableSpan

from reasonflow_otel import semconv

# Measured values: they differ on every run, so tests check them apart from the rest.
MEASURED_ATTRIBUTES = frozenset(
    {
        semconv.NODE_PREP_DURATION,
        semconv.NODE_EXEC_DURATION,
        semconv.NODE_POST_DURATION,
        semconv.NODE_CPU_TIME,
        semconv.NODE_MEMORY_GROWTH,
    }
)


def stable_attributes(span: ReadableSpan) -> dict[str, Any]:
    """A span's attributes without the measured ones."""
    return {
        key: value
        for key, value in (span.attributes or {}).items()
        if key not in MEASURED_ATTRIBUTES
    }


def phase_durations(span: ReadableSpan) -> dict[str, float]:
    """The prep/exec/post duration attributes a span carries, by phase."""
    attributes = span.attributes or {}
    keys = {
        "prep": semconv.NODE_PREP_DURATION,
        "exec": semconv.NODE_EXEC_DURATION,
        "post": semconv.NODE_POST_DURATION,
    }
    return {phase: attributes[key] for phase, key in keys.items() if key in attributes}


@dataclass(frozen=True)
class SpanLine:
    """What a trace outline needs of a span, from the SDK or from an exported file."""

    name: str
    span_id: int
    parent_id: int | None
    start_time: int
    batch_index: int = 0  # orders siblings started within the same nanosecond


def indented(spans: list[SpanLine]) -> list[str]:
    """Span names indented by depth, children under their parent in start order."""
    ids = {span.span_id for span in spans}
    children: dict[int | None, list[SpanLine]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in ids else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def visit(parent: int | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: (s.start_time, s.batch_index)):
            lines.append("  " * depth + span.name)
            visit(span.span_id, depth + 1)

    visit(None, 0)
    return lines


def outline(telemetry: Telemetry) -> list[str]:
    """Every finished span as a name indented by depth, children in start order."""
    return indented(
        [
            SpanLine(
                span.name,
                span.context.span_id,
                span.parent.span_id if span.parent else None,
                span.start_time or 0,
                int((span.attributes or {}).get(semconv.BATCH_INDEX, 0)),
            )
            for span in telemetry.spans()
        ]
    )


def events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    """Attributes of each event of this name on the span, in order."""
    return [dict(event.attributes or {}) for event in span.events if event.name == name]
