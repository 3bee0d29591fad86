"""Every span the SDK setup's batch processors do not deliver is counted, by cause, in
``reasonflow.spans.dropped`` and in the one line logged at exit: nothing is dropped silently.

The app runs in a fresh process with the default local trace file, a one-span queue and a
console metric exporter (the metrics are printed as JSON at exit). The SDK's own drop count
is racy (it sees the queue full, then appends, while its worker takes spans); ours is not.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.processes import run_program

from reasonflow_otel import semconv
from reasonflow_otel.local.store import read_spans
from reasonflow_otel.sdk.delivery import DeliveryReportingSpanProcessor

FLOWS = 50
SPANS = 200
APP = f"""
import pocketflow
import reasonflow_otel

reasonflow_otel.instrument()
for _ in range({FLOWS}):
    flow = pocketflow.Flow(start=pocketflow.Node())
    flow.name = "Burst"
    flow.run({{}})
"""


def dropped_points(stdout: str) -> dict[tuple[str, str], int]:
    """The last ``reasonflow.spans.dropped`` values printed by the console exporter."""
    points: dict[tuple[str, str], int] = {}
    decoder = json.JSONDecoder()
    text = stdout.strip()
    while text:
        document, end = decoder.raw_decode(text)
        text = text[end:].strip()
        for point in _points(document, semconv.METRIC_SPANS_DROPPED):
            attributes = point["attributes"]
            key = (attributes[semconv.OTEL_COMPONENT_NAME], attributes[semconv.ERROR_TYPE])
            points[key] = point["value"]
    return points


def _points(document: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [
        point
        for resource_metrics in document["resource_metrics"]
        for scope_metrics in resource_metrics["scope_metrics"]
        for metric in scope_metrics["metrics"]
        if metric["name"] == name
        for point in metric["data"]["data_points"]
    ]


def test_spans_written_plus_spans_counted_as_dropped_make_every_span(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    completed = run_program(
        [sys.executable, str(app)],
        tmp_path,
        OTEL_METRICS_EXPORTER="console",
        OTEL_BSP_MAX_QUEUE_SIZE="1",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1",
        REASONFLOW_OTEL_PROCESS_METRICS="false",
    )

    produced = 2 * FLOWS  # a flow span and a node span each
    written = len(list(read_spans(tmp_path / ".reasonflow-otel" / "traces.jsonl")))
    dropped = dropped_points(completed.stdout)
    assert set(dropped) == {("otlp_json_file", "queue_full"), ("otlp_json_file", "export_failed")}
    assert written + sum(dropped.values()) == produced
    # The exit line on stderr says the same (though the root logger has OpenTelemetry's handler).
    reports = re.findall(
        r"reasonflow-otel: (\d+) of (\d+) spans could not be delivered", completed.stderr
    )
    assert reports == ([(str(produced - written), str(produced))] if written < produced else [])


class TakeQueuedSpans(logging.Handler):
    """At the SDK's "Queue full" warning, its worker takes the queued spans: the SDK has
    decided to count a drop, and appends next to a queue that has room again."""

    def __init__(self, processor: DeliveryReportingSpanProcessor) -> None:
        super().__init__()
        self.processor = processor

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Queue full"):
            self.processor.force_flush()


def test_a_span_the_worker_takes_while_the_queue_looks_full_is_not_counted_as_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    processor = DeliveryReportingSpanProcessor(
        "memory", exporter, max_queue_size=1, max_export_batch_size=1
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    sdk_logger = logging.getLogger("opentelemetry.sdk._shared_internal")
    monkeypatch.setattr(sdk_logger, "filters", [])  # its warning every time, not every 20 s
    sdk_logger.addHandler(handler := TakeQueuedSpans(processor))
    try:
        for index in range(SPANS):
            provider.get_tracer(__name__).start_span(f"span {index}").end()
        provider.shutdown()
    finally:
        sdk_logger.removeHandler(handler)
    written = len(exporter.get_finished_spans())
    assert (written, processor.dropped()) == (SPANS, {"queue_full": 0, "export_failed": 0})
