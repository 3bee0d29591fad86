"""``pytest -p instrument_burr``: Burr's own test suite with BurrInstrumentor on real providers.

Not part of our suite (see docs/burr.md): with ``tests/support`` on ``PYTHONPATH``, run
Burr's tests with this plugin; every app they build is traced, state capture on, and the
number of spans recorded is printed at the end.
"""

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from reasonflow_otel.instrumentation.burr import BurrInstrumentor
from reasonflow_otel.settings import load_settings

EXPORTER = InMemorySpanExporter()


def pytest_configure(config):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    BurrInstrumentor().instrument(
        tracer_provider=provider,
        meter_provider=meter_provider,
        settings=load_settings({"capture": "state"}, environ={}),
    )


def pytest_unconfigure(config):
    print(f"\nreasonflow-otel: {len(EXPORTER.get_finished_spans())} spans recorded")
