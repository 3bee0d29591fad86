"""A bounded, paced load of instrumented PocketFlow runs, sent over OTLP/gRPC to an agent.

    python scaled_load.py --traces N --rate PER_SECOND --manifest sent.json [--payload BYTES]

Each run is one trace of 4 to 10 spans (the flow and 3 to 9 nodes); every fifth run fails in
one of its nodes, so its trace is an error trace that tail sampling must keep. The app catches
the failure and goes on, as a worker would. ``OTEL_EXPORTER_OTLP_ENDPOINT`` names the agent; the
span exporter is the SDK's own, counted so that what it could not deliver is known.

The manifest lists what was sent, written after the SDK flushed: every trace id with its span
count, whether it failed and when it began (epoch seconds); the spans the SDK's exporter
delivered and gave up on (after its retries); the seconds from the first run to the flush.
``--payload`` adds an attribute of that many bytes to every node span (for a memory burst).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pocketflow
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import reasonflow_otel

ERROR_EVERY = 5


class CountingExporter(SpanExporter):
    """The SDK's OTLP exporter, counting the spans it delivered and the ones it gave up on."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        self.delivered = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._exporter.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.delivered += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class Manifest(SpanProcessor):
    """Span count and outcome per trace id, as the spans end (only ids and counts are kept)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.traces: dict[str, dict[str, Any]] = {}

    def on_end(self, span: ReadableSpan) -> None:
        trace_id = format(span.context.trace_id, "032x")
        with self._lock:
            entry = self.traces.setdefault(trace_id, {"spans": 0, "error": False, "start": 0.0})
            entry["spans"] += 1
            if span.parent is None:
                entry["start"] = (span.start_time or 0) / 1e9
            if span.status.status_code is trace.StatusCode.ERROR:
                entry["error"] = True


class Step(pocketflow.Node):
    """One step of a run; the step named ``fail_at`` raises, like a failed tool call."""

    def __init__(self, fail: bool, payload: str) -> None:
        super().__init__()
        self.fail = fail
        self.payload = payload

    def exec(self, prep_res: Any) -> int:
        if self.payload:
            trace.get_current_span().set_attribute("load.payload", self.payload)
        if self.fail:
            raise RuntimeError("tool call failed")
        return 1


class LoadFlow(pocketflow.Flow):
    """A run of 3 to 9 steps."""


def build_flow(steps: int, fail_at: int | None, payload: str) -> pocketflow.Flow:
    nodes = [Step(index == fail_at, payload) for index in range(steps)]
    for node, following in itertools.pairwise(nodes):
        node >> following
    return LoadFlow(start=nodes[0])


def run_load(traces: int, rate: float, payload: str, seed: int) -> None:
    """Runs ``traces`` flows at ``rate`` per second (0: as fast as possible)."""
    choose = random.Random(seed)
    started = time.monotonic()
    for index in range(traces):
        steps = choose.randint(3, 9)
        fail_at = choose.randrange(2, steps) if index % ERROR_EVERY == 0 else None
        with contextlib.suppress(RuntimeError):  # the worker logs it and takes the next job
            build_flow(steps, fail_at, payload).run({})
        if rate:
            delay = started + (index + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--traces", type=int, required=True)
    parser.add_argument("--rate", type=float, default=40.0, help="traces per second, 0: no pause")
    parser.add_argument("--payload", type=int, default=0, help="bytes added to every node span")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args()

    exporter = CountingExporter(OTLPSpanExporter())
    manifest = Manifest()
    provider = TracerProvider(resource=Resource.create({"service.name": "scaled-load"}))
    provider.add_span_processor(manifest)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=200_000))
    reasonflow_otel.instrument(service_name="scaled-load", tracer_provider=provider)

    started = time.monotonic()
    run_load(args.traces, args.rate, "x" * args.payload, args.seed)
    provider.shutdown()  # flushes the batch processor: every span delivered or given up on
    seconds = time.monotonic() - started
    reasonflow_otel.uninstrument()
    report = {
        "traces": manifest.traces,
        "delivered": exporter.delivered,
        "failed": exporter.failed,
        "seconds": seconds,
    }
    args.manifest.write_text(json.dumps(report))


if __name__ == "__main__":
    main()
