"""The lines of our trace file read by a real OTLP reader: ``reasonflow-otel export`` sends the
file to a real Jaeger v2 (collector-config/bin/jaeger), and Jaeger's query API gives back the
same spans: ids, parents, names, times, status and attributes.
"""

from __future__ import annotations

import sys
import time

from support.jaeger import running_jaeger
from support.processes import BIN, run_program
from support.viewer import EXAMPLES

from reasonflow_otel.local.store import SpanRecord, read_spans
from reasonflow_otel.local.viewer.jaeger import JaegerIndex

WAIT_SECONDS = 30


def comparable(spans: list[SpanRecord]) -> set[tuple]:
    return {
        (s.trace_id, s.span_id, s.parent_id, s.name, s.start_ns, s.end_ns, s.failed,
         s.service, tuple(sorted(s.attributes.items())))
        for s in spans
    }  # fmt: skip


def spans_in_jaeger(index: JaegerIndex, expected: int) -> list[SpanRecord]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        index.refresh()
        spans = [span for trace in index.newest_first() for span in index.spans_of(trace)]
        if len(spans) >= expected or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


def test_spans_exported_from_the_trace_file_read_back_from_jaeger_unchanged(tmp_path):
    trace_file = tmp_path / "traces.jsonl"
    run_program(
        [
            str(BIN / "opentelemetry-instrument"),
            sys.executable,
            str(EXAMPLES / "support_triage.py"),
        ],
        tmp_path,
        REASONFLOW_OTEL_TRACE_FILE=str(trace_file),
        OTEL_SERVICE_NAME="from-the-file",
    )
    written = list(read_spans(trace_file))

    with running_jaeger(tmp_path) as jaeger:
        export = [str(BIN / "reasonflow-otel"), "export", "--file", str(trace_file)]
        run_program(
            [*export, "--endpoint", jaeger.otlp_http, "--protocol", "http/protobuf"], tmp_path
        )
        read_back = spans_in_jaeger(JaegerIndex(jaeger.query_url), len(written))

    assert len(written) == 25
    assert comparable(read_back) == comparable(written)
