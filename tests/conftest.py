"""Shared fixtures: real SDK providers with in-memory exporters, real PocketFlow."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Sampler

from reasonflow_otel import settings
from reasonflow_otel.instrumentation.pocketflow import PocketFlowInstrumentor
from reasonflow_otel.instrumentation.threads import ThreadingInstrumentor
from reasonflow_otel.sdk.views import build_views
from reasonflow_otel.settings import load_settings


@dataclass
class Telemetry:
    """What one instrumented test run exported."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        """The one finished span with this name (fails if there are none or several)."""
        matches = [span for span in self.spans() if span.name == name]
        assert len(matches) == 1, f"expected one span {name!r}, got {len(matches)}"
        return matches[0]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        """Direct children of ``parent``, in start order."""
        kids = [
            span
            for span in self.spans()
            if span.parent is not None and span.parent.span_id == parent.context.span_id
        ]
        return sorted(kids, key=lambda span: span.start_time or 0)

    def metric_points(self, name: str) -> list[Any]:
        """Data points of one metric from a fresh collection (empty if none)."""
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource_metrics in data.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


@pytest.fixture(autouse=True)
def _fresh_configuration_warnings() -> None:
    """Configuration warnings are logged once per process; each test starts with none seen."""
    settings._warned.clear()


def instrumented_telemetry(instrumentor: BaseInstrumentor) -> Iterator[Callable[..., Telemetry]]:
    """``make(sampler, id_generator, **settings)`` instruments with real in-memory providers;
    the instrumentation is undone when the fixture ends."""

    def make(
        sampler: Sampler | None = None, id_generator: IdGenerator | None = None, **options: Any
    ) -> Telemetry:
        settings = load_settings(options, environ={})
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider(sampler=sampler, id_generator=id_generator)
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader], views=build_views(settings))
        instrumentor.instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider, settings=settings
        )
        return Telemetry(exporter, reader, tracer_provider, meter_provider)

    yield make
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@pytest.fixture
def make_telemetry() -> Iterator[Callable[..., Telemetry]]:
    """Instrument PocketFlow with given settings (keywords), optional sampler and id generator."""
    yield from instrumented_telemetry(PocketFlowInstrumentor())


@pytest.fixture
def threading_instrumented() -> Iterator[None]:
    """Threads and thread pools started inside a node carry the context (contrib threading)."""
    instrumentor = ThreadingInstrumentor()
    instrumentor.instrument()
    yield
    instrumentor.uninstrument()


@pytest.fixture
def telemetry(make_telemetry: Callable[..., Telemetry]) -> Telemetry:
    """PocketFlow instrumented with default settings."""
    return make_telemetry()
