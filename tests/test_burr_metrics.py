"""Burr runs record the metrics PocketFlow runs do, with reasonflow.engine=burr, sampled or not."""
# ruff: noqa: F401, F811  (pytest fixtures imported from support.burr_apps)

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from support.burr_apps import ENGINE, Flaky, burr_telemetry, counter, make_burr_telemetry

from reasonflow_otel import semconv


def counts(telemetry, metric: str) -> dict[tuple, int]:
    """Histogram point counts by (node name or None, error type or None)."""
    return {
        (
            point.attributes.get(semconv.NODE_NAME),
            point.attributes.get(semconv.ERROR_TYPE),
        ): point.count
        for point in telemetry.metric_points(metric)
    }


def test_each_action_and_run_is_measured_with_the_burr_engine(burr_telemetry):
    counter().run(halt_after=["done"])
    assert counts(burr_telemetry, semconv.METRIC_NODE_DURATION) == {
        ("count", None): 2,
        ("check", None): 1,
        ("done", None): 1,
    }
    assert counts(burr_telemetry, semconv.METRIC_FLOW_DURATION) == {(None, None): 1}
    (flow,) = burr_telemetry.metric_points(semconv.METRIC_FLOW_DURATION)
    assert dict(flow.attributes) == {**ENGINE, semconv.GEN_AI_WORKFLOW_NAME: "count"}
    node_attributes = [
        dict(p.attributes) for p in burr_telemetry.metric_points(semconv.METRIC_NODE_DURATION)
    ]
    assert {**ENGINE, semconv.NODE_NAME: "check", semconv.GEN_AI_WORKFLOW_NAME: "count"} in (
        node_attributes
    )
    assert counts(burr_telemetry, semconv.METRIC_NODE_CPU_TIME)[("count", None)] == 2


def test_failures_are_measured_by_error_type(burr_telemetry):
    with pytest.raises(Flaky):
        counter(fail=True).run(halt_after=["done"])
    assert counts(burr_telemetry, semconv.METRIC_NODE_DURATION) == {
        ("count", None): 2,
        ("check", "Flaky"): 1,
    }
    assert counts(burr_telemetry, semconv.METRIC_FLOW_DURATION) == {(None, "Flaky"): 1}


def test_sync_actions_of_an_async_run_are_counted_once(burr_telemetry):
    asyncio.run(counter().arun(halt_after=["done"]))
    assert counts(burr_telemetry, semconv.METRIC_NODE_DURATION) == {
        ("count", None): 2,
        ("check", None): 1,
        ("done", None): 1,
    }


def test_unsampled_runs_are_measured_too_and_nothing_stays_in_flight(make_burr_telemetry):
    telemetry = make_burr_telemetry(sampler=ALWAYS_OFF)
    counter().run(halt_after=["done"])
    with pytest.raises(Flaky):
        counter(fail=True).run(halt_after=["done"])
    assert telemetry.spans() == []
    assert counts(telemetry, semconv.METRIC_NODE_DURATION) == {
        ("count", None): 4,
        ("check", None): 1,
        ("done", None): 1,
        ("check", "Flaky"): 1,
    }
    assert counts(telemetry, semconv.METRIC_FLOW_DURATION) == {(None, None): 1, (None, "Flaky"): 1}
    active = telemetry.metric_points(semconv.METRIC_NODE_ACTIVE)
    assert {p.attributes[semconv.NODE_NAME]: p.value for p in active} == {
        "count": 0,
        "check": 0,
        "done": 0,
    }
