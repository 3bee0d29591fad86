"""The shortcuts that keep per-node cost low change no telemetry.

- Below an unsampled span no node span is made when the sampler would drop it
  anyway; a sampler that would keep it still gets its spans.
- The in-flight gauge counts with two lock-free counters per place and is read
  when metrics are collected, also after the meter was instrumented again.
- A flow's graph attribute is rendered once per distinct graph: a flow changed
  between runs gets its new graph.
"""

from __future__ import annotations

import json
from typing import Any

import pocketflow
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

from reasonflow_otel import semconv
from reasonflow_otel.instrumentation.pocketflow import PocketFlowInstrumentor
from reasonflow_otel.sdk.views import build_views
from reasonflow_otel.settings import load_settings


class SeesItsSpan(pocketflow.Node):
    """Records the span context current while it runs, in the shared store."""

    def exec(self, prep_res: Any) -> trace.SpanContext:
        return trace.get_current_span().get_span_context()

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: trace.SpanContext) -> None:
        shared["node"] = exec_res


class Unsampled(pocketflow.Flow):
    def prep(self, shared: dict[str, Any]) -> None:
        shared["flow"] = trace.get_current_span().get_span_context()


def test_below_an_unsampled_flow_no_node_span_is_made_and_metrics_still_count(make_telemetry):
    telemetry = make_telemetry(sampler=ParentBased(ALWAYS_OFF))
    shared: dict[str, Any] = {}

    Unsampled(start=SeesItsSpan()).run(shared)

    assert shared["flow"].is_valid
    assert shared["node"] == shared["flow"]  # the flow's span stayed current
    assert trace.get_current_span() is trace.INVALID_SPAN  # and the context was restored
    assert telemetry.spans() == []
    [point] = telemetry.metric_points(semconv.METRIC_NODE_DURATION)
    assert point.count == 1
    assert point.attributes[semconv.NODE_NAME] == "SeesItsSpan"


def test_a_sampler_that_keeps_children_of_unsampled_spans_still_gets_them(make_telemetry):
    keeps_children = ParentBased(ALWAYS_OFF, local_parent_not_sampled=ALWAYS_ON)
    telemetry = make_telemetry(sampler=keeps_children)
    shared: dict[str, Any] = {}

    Unsampled(start=SeesItsSpan()).run(shared)

    node = telemetry.span("SeesItsSpan")
    assert node.context == shared["node"]
    assert node.parent.span_id == shared["flow"].span_id
    assert [span.name for span in telemetry.spans()] == ["SeesItsSpan"]


def test_the_in_flight_gauge_counts_again_after_the_meter_is_instrumented_again():
    reader = InMemoryMetricReader()
    settings = load_settings(environ={})
    providers = {
        "tracer_provider": TracerProvider(),
        "meter_provider": MeterProvider(metric_readers=[reader], views=build_views(settings)),
    }
    seen_inside: list[int] = []

    class ReadsGauge(pocketflow.Node):
        def exec(self, prep_res: Any) -> None:
            seen_inside.append(in_flight(reader))

    instrumentor = PocketFlowInstrumentor()
    for _ in range(2):
        instrumentor.instrument(settings=settings, **providers)
        pocketflow.Flow(start=ReadsGauge()).run({})
        instrumentor.uninstrument()

    assert seen_inside == [1, 1]
    assert in_flight(reader) == 0


def in_flight(reader: InMemoryMetricReader) -> int:
    """The in-flight gauge's value for the ReadsGauge node."""
    data = reader.get_metrics_data()
    [value] = [
        point.value
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == semconv.METRIC_NODE_ACTIVE
        for point in metric.data.data_points
        if point.attributes[semconv.NODE_NAME] == "ReadsGauge"
    ]
    return value


def test_a_flow_changed_between_runs_gets_its_new_graph(telemetry):
    first, second = SeesItsSpan(), SeesItsSpan()
    first.name, second.name = "First", "Second"
    flow = pocketflow.Flow(start=first)

    flow.run({})
    first >> second
    flow.run({})

    graphs = [
        json.loads(span.attributes[semconv.FLOW_GRAPH])
        for span in telemetry.spans()
        if span.name == "invoke_workflow Flow(First)"
    ]
    assert [[node["name"] for node in graph["nodes"]] for graph in graphs] == [
        ["First"],
        ["First", "Second"],
    ]
