"""What the engine benchmarks measure the same way: the SDK's own cost and instrumented runs.

The floor is what any tracer of a node must pay at least: one correctly parented span
(start, make current, end) through a BatchSpanProcessor into an exporter that drops
everything, and one ``histogram.record`` with a node metric's attribute set, each in a
tight loop. :class:`Instrumented` times a workload with an engine instrumented on real
providers, only while the timing runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import context, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Sampler

from reasonflow_otel.sdk.views import build_views
from reasonflow_otel.settings import Settings


@dataclass(frozen=True)
class Budget:
    """How long to measure: engine runs per timing, and timings whose median is kept."""

    runs: int
    rounds: int


class DropExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def tracer_provider(sampler: Sampler) -> TracerProvider:
    """A provider that does all the SDK's work on a span, then drops it."""
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    return provider


def sdk_span(count: int, provider: TracerProvider) -> float:
    """Seconds per span, ``count`` spans under one parent, each made current once."""
    tracer = provider.get_tracer("floor")
    parent = tracer.start_span("run")
    parent_context = trace.set_span_in_context(parent)
    started = time.perf_counter()
    for _ in range(count):
        span = tracer.start_span("step", context=parent_context)
        token = context.attach(trace.set_span_in_context(span, parent_context))
        context.detach(token)
        span.end()
    elapsed = time.perf_counter() - started
    parent.end()
    return elapsed / count


def sdk_hist(count: int, attributes: Mapping[str, Any]) -> float:
    """Seconds per histogram point with ``attributes``, ``count`` points."""
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("floor")
    histogram = meter.create_histogram("floor.duration", unit="s")
    started = time.perf_counter()
    for _ in range(count):
        histogram.record(0.001, attributes)
    return (time.perf_counter() - started) / count


class Instrumented:
    """Providers made once per mode, the engine instrumented only while a timing runs."""

    def __init__(
        self, instrumentor: Callable[[], BaseInstrumentor], sampler: Sampler, settings: Settings
    ) -> None:
        self._instrumentor = instrumentor
        self._settings = settings
        self._tracer_provider = tracer_provider(sampler)
        self._meter_provider = MeterProvider(
            metric_readers=[InMemoryMetricReader()], views=build_views(settings)
        )

    def time(self, workload: Callable[[], float]) -> float:
        """``workload()`` (what it returns: seconds per node run) while instrumented."""
        instrumentor = self._instrumentor()
        instrumentor.instrument(
            tracer_provider=self._tracer_provider,
            meter_provider=self._meter_provider,
            settings=self._settings,
        )
        try:
            return workload()
        finally:
            instrumentor.uninstrument()
