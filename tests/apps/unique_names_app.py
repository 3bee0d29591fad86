"""PocketFlow runs whose flows are named after ids: the classic cardinality mistake.

Used by tests/test_cardinality.py. Traces off (an always-off sampler), metrics to an
in-memory reader; prints one JSON object: RSS at the given runs, and each metric's
series count, overflow series count and total count.

    python tests/apps/unique_names_app.py --runs 40000 --marks 10000,40000
"""

from __future__ import annotations

import argparse
import gc
import json
from typing import Any

import psutil
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from pocketflow import Flow, Node

from reasonflow_otel import semconv
from reasonflow_otel.instrumentation.pocketflow import PocketFlowInstrumentor
from reasonflow_otel.sdk.views import build_views
from reasonflow_otel.settings import load_settings


class Step(Node):
    def exec(self, prep_res: Any) -> None:
        return None


def resident_mib() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def series_report(reader: InMemoryMetricReader) -> dict[str, dict[str, int]]:
    """Per metric: its series, its overflow series, and the runs counted (histograms)."""
    report = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points = metric.data.data_points
                report[metric.name] = {
                    "series": len(points),
                    "overflow": sum(1 for p in points if p.attributes.get(semconv.SERIES_OVERFLOW)),
                    "count": sum(getattr(p, "count", 0) for p in points),
                }
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40_000)
    parser.add_argument("--marks", default="10000,40000", help="runs after which RSS is read")
    arguments = parser.parse_args()
    marks = {int(mark) for mark in arguments.marks.split(",")}
    settings = load_settings()
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], views=build_views(settings))
    PocketFlowInstrumentor().instrument(
        tracer_provider=TracerProvider(sampler=ALWAYS_OFF),
        meter_provider=meter_provider,
        settings=settings,
    )
    resident = {}
    for run in range(1, arguments.runs + 1):
        flow = Flow(start=Step())
        flow.name = f"order-{run}"
        flow.run({})
        if run in marks:
            resident[run] = resident_mib()
    print(json.dumps({"rss_mib": resident, "metrics": series_report(reader)}))


if __name__ == "__main__":
    main()
