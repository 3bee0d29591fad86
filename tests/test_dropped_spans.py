"""Every span the SDK setup's batch processors do not deliver is counted, by cause, in
``reasonflow.spans.dropped`` and in the one line logged at exit: nothing is dropped silently.

The app runs in a fresh process with the default local trace file, a one-span queue and a
console metric exporter (the metrics are printed as JSON at exit).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from support.processes import run_program

from reasonflow_otel import semconv
from reasonflow_otel.local.store import read_spans

FLOWS = 50
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
