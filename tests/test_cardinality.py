"""Flows and nodes named after ids: metric series and our caches stay bounded.

The cap follows the OpenTelemetry specification's cardinality limit: at most
``REASONFLOW_OTEL_METRIC_CARDINALITY_LIMIT`` series per metric, the overflow
series (``otel.metric.overflow=true``) included; every run is still counted.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Telemetry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pocketflow import Flow, Node
from support.processes import REPOSITORY, run_program

from reasonflow_otel import semconv
from reasonflow_otel.recorder import BoundedCache
from reasonflow_otel.recorder.histograms import RecordingGroup

UNIQUE_NAMES_APP = REPOSITORY / "tests" / "apps" / "unique_names_app.py"
OVERFLOW = {semconv.SERIES_OVERFLOW: True}


class Flaky(Node):
    """Fails its first attempt of every run, then takes its fallback: retries and fallbacks."""

    def __init__(self) -> None:
        super().__init__(max_retries=2)

    def exec(self, prep_res: Any) -> None:
        if self.cur_retry == 0:
            raise TimeoutError("first attempt")
        raise ValueError("second attempt")

    def exec_fallback(self, prep_res: Any, exc: Exception) -> str:
        return "fallback"


def run_flows(names: list[str], node: Callable[[], Node] = Flaky) -> None:
    for name in names:
        flow = Flow(start=node())
        flow.name = name
        flow.run({})


def series(telemetry: Telemetry, metric: str) -> list[Any]:
    return telemetry.metric_points(metric)


def test_past_the_limit_new_names_share_one_overflow_series_and_every_run_counts(
    make_telemetry: Callable[..., Telemetry], caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = make_telemetry(metric_cardinality_limit=5)
    with caplog.at_level(logging.WARNING):
        run_flows([f"order-{number}" for number in range(20)])
        run_flows(["order-0", "order-1"])  # known names keep their own series

    for metric in (semconv.METRIC_FLOW_DURATION, semconv.METRIC_NODE_DURATION):
        points = series(telemetry, metric)
        assert len(points) == 5, metric
        [overflow] = [p for p in points if p.attributes.get(semconv.SERIES_OVERFLOW)]
        assert dict(overflow.attributes) == OVERFLOW
        assert sum(p.count for p in points) == 22, metric
        assert overflow.count == 16, metric  # order-0 to order-3 have series of their own
    for metric in (semconv.METRIC_NODE_RETRIES, semconv.METRIC_NODE_FALLBACKS):
        points = series(telemetry, metric)
        assert len(points) <= 5 and sum(p.value for p in points) == 22, metric
        assert OVERFLOW in [dict(p.attributes) for p in points], metric
    active = series(telemetry, semconv.METRIC_NODE_ACTIVE)
    assert len(active) == 5 and {p.value for p in active} == {0}

    warnings = [r.getMessage() for r in caplog.records if "cardinality limit" in r.getMessage()]
    flow_warnings = [w for w in warnings if semconv.METRIC_FLOW_DURATION in w]
    assert len(flow_warnings) == 1
    assert f"is {semconv.GEN_AI_WORKFLOW_NAME} (" in flow_warnings[0]
    assert len(warnings) == len({w.split(" reached")[0] for w in warnings})  # once per metric


def test_names_within_the_limit_are_recorded_as_before(
    make_telemetry: Callable[..., Telemetry], caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = make_telemetry(metric_cardinality_limit=5)
    with caplog.at_level(logging.WARNING):
        run_flows(["a", "b", "c", "d"] * 3)

    points = series(telemetry, semconv.METRIC_FLOW_DURATION)
    assert sorted(p.attributes[semconv.GEN_AI_WORKFLOW_NAME] for p in points) == list("abcd")
    assert {p.count for p in points} == {3}
    assert "cardinality limit" not in caplog.text


def test_the_record_path_is_capped_like_the_merging_path() -> None:
    """The fallback group (``Histogram.record`` per value, for an SDK whose internals
    differ) caps the same way as the group that merges queued values."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    histogram = provider.get_meter("test").create_histogram("h")
    group = RecordingGroup([histogram])
    group.limit_series(3)
    for number in range(10):
        group.record(group.series(number, {"name": str(number)}), (1.0,))

    [metric] = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
    points = metric.data.data_points
    assert sorted(str(dict(p.attributes)) for p in points) == sorted(
        [str({"name": "0"}), str({"name": "1"}), str(OVERFLOW)]
    )
    assert sum(p.count for p in points) == 10
    provider.shutdown()


def test_a_bounded_cache_starts_afresh_instead_of_growing() -> None:
    cache: BoundedCache[int, int] = BoundedCache(maxsize=4)
    for number in range(10):
        cache[number] = number
        assert len(cache) <= 4
    assert cache.setdefault(10, 10) == 10 and len(cache) <= 4
    cache[10] = 11  # a known key never clears
    assert cache[10] == 11


def test_forty_thousand_unique_flow_names_keep_memory_and_series_bounded(tmp_path) -> None:
    """The issue's acceptance: traces off, in-memory metric reader, in a fresh process."""
    completed = run_program(
        [sys.executable, str(UNIQUE_NAMES_APP), "--runs", "40000", "--marks", "10000,40000"],
        tmp_path,
    )
    report = json.loads(completed.stdout)
    rss = report["rss_mib"]
    assert rss["40000"] - rss["10000"] <= 8, rss
    flows = report["metrics"][semconv.METRIC_FLOW_DURATION]
    assert flows["series"] <= 2001 and flows["overflow"] == 1, flows
    assert flows["count"] == 40_000
    for name, metric in report["metrics"].items():
        assert metric["series"] <= 2001, name
    assert completed.stderr.count("cardinality limit") <= len(report["metrics"])
