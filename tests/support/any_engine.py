"""The by-name and decorator layer instrumented on real SDK providers with in-memory output."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from conftest import Telemetry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator

from reasonflow_otel.instrumentation.methods import MethodsInstrumentor
from reasonflow_otel.sdk.views import build_views
from reasonflow_otel.settings import load_settings


def telemetry_for(
    instrument: Callable[..., None],
    options: dict[str, Any],
    wrap: Callable[[SpanProcessor], SpanProcessor] = lambda processor: processor,
    id_generator: IdGenerator | None = None,
) -> Telemetry:
    """Providers with in-memory output (spans through ``wrap``), handed to ``instrument``."""
    settings = load_settings(options, environ={})
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(id_generator=id_generator)
    tracer_provider.add_span_processor(wrap(SimpleSpanProcessor(exporter)))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], views=build_views(settings))
    instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, settings=settings)
    return Telemetry(exporter, reader, tracer_provider, meter_provider)


@contextmanager
def methods_instrumented() -> Iterator[Callable[..., Telemetry]]:
    """``make(trace_methods=..., **settings)`` instruments; everything is undone on exit."""
    instrumentor = MethodsInstrumentor()

    def make(
        wrap: Callable[[SpanProcessor], SpanProcessor] = lambda processor: processor,
        id_generator: IdGenerator | None = None,
        **options: Any,
    ) -> Telemetry:
        return telemetry_for(instrumentor.instrument, options, wrap, id_generator)

    try:
        yield make
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
