"""An app that sets its own OpenTelemetry providers, then calls reasonflow_otel.instrument().

Run by tests/test_instrument_api.py in a fresh process (global providers can be set
once per process). It prints one JSON report of what it observed:

- ``instrumented``: after calling ``instrument()`` twice, then running a flow;
- ``uninstrumented``: after ``uninstrument()``, running the same flow again.
"""

from __future__ import annotations

import inspect
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pocketflow
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import reasonflow_otel

exporter = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(tracer_provider)
reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[reader])
metrics.set_meter_provider(meter_provider)
tracer = trace.get_tracer("own-providers-app")


class LookUpCustomer(pocketflow.Node):
    """Does its lookup in a worker thread, which opens an app span."""

    def exec(self, prep_res: None) -> str:
        def look_up() -> str:
            with tracer.start_as_current_span("customer db query"):
                return "customer 42"

        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(look_up).result()


class Greet(pocketflow.Node):
    pass


class Onboarding(pocketflow.Flow):
    pass


def run_flow() -> list[list[Any]]:
    """Run the flow; each finished span as [name, parent name], in start order."""
    exporter.clear()
    lookup = LookUpCustomer()
    lookup >> Greet()
    Onboarding(start=lookup).run({})
    spans = sorted(exporter.get_finished_spans(), key=lambda span: span.start_time or 0)
    names = {span.context.span_id: span.name for span in spans}
    return [[span.name, names.get(span.parent.span_id) if span.parent else None] for span in spans]


def metric_names() -> list[str]:
    data = reader.get_metrics_data()
    return sorted(
        {
            metric.name
            for resource_metrics in data.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }
    )


def pocketflow_namespaces() -> dict[str, Any]:
    return {
        f"{cls_name}.{name}": value
        for cls_name, cls in inspect.getmembers(pocketflow, inspect.isclass)
        for name, value in vars(cls).items()
    }


def providers_kept() -> bool:
    return trace.get_tracer_provider() is tracer_provider and (
        metrics.get_meter_provider() is meter_provider
    )


def main() -> None:
    originals = pocketflow_namespaces()
    reasonflow_otel.instrument()
    engines_after_first_call = reasonflow_otel.instrumented_engines()
    reasonflow_otel.instrument()
    report: dict[str, Any] = {
        "instrumented": {
            "engines_after_first_call": engines_after_first_call,
            "engines": reasonflow_otel.instrumented_engines(),
            "providers_kept": providers_kept(),
            "spans": run_flow(),
            "metrics": metric_names(),
        }
    }
    reasonflow_otel.uninstrument()
    current = pocketflow_namespaces()
    report["uninstrumented"] = {
        "engines": reasonflow_otel.instrumented_engines(),
        "providers_kept": providers_kept(),
        "spans": run_flow(),
        "replaced_methods": sorted(key for key in originals if current[key] is not originals[key]),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
