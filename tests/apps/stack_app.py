"""tests/apps/metrics_app.py's flows, sent over OTLP to the stack and kept in memory to compare.

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 python tests/apps/stack_app.py \\
        --iterations 40 --slow 2 --reference spans.json

Runs OrderFlow (a node that fails one run in four, one that always retries once, one that falls
back) and ReportFlow ``--iterations`` times, then SlowFlow (one node sleeping ``--slow-seconds``)
``--slow`` times, with ``--pause`` seconds between iterations. Every span also goes to an
in-memory exporter on the same tracer provider; at the end the app writes them to
``--reference`` (JSON, one object per span): the spans the stack should show.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(Path(__file__).parent))
import metrics_app  # instruments on import: reasonflow_otel.instrument()
from pocketflow import Flow, Node

REFERENCE = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(REFERENCE))


class Wait(Node):
    """Sleeps long enough for the Collector's latency policy to keep the trace."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def exec(self, prep_res: Any) -> float:
        time.sleep(self.seconds)
        return self.seconds


class SlowFlow(Flow):
    pass


def as_reference(span: ReadableSpan) -> dict[str, Any]:
    """What the stack should keep of a span, in plain JSON."""
    return {
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": event.name, "attributes": dict(event.attributes or {})}
            for event in span.events
        ],
        "status": {"code": span.status.status_code.name, "message": span.status.description},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--slow", type=int, default=1)
    parser.add_argument("--slow-seconds", type=float, default=0.6)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--reference", type=Path, required=True)
    args = parser.parse_args(argv)

    orders, reports = metrics_app.order_flow(), metrics_app.report_flow()
    failures = 0
    for _ in range(args.iterations):
        try:
            orders.run({})
        except metrics_app.StockError:
            failures += 1
        reports.run({})
        time.sleep(args.pause)
    for _ in range(args.slow):
        SlowFlow(start=Wait(args.slow_seconds)).run({})

    spans = [as_reference(span) for span in REFERENCE.get_finished_spans()]
    args.reference.write_text(json.dumps(spans, default=list))
    print(f"stack app done: {args.iterations} iterations, {failures} failed orders", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
