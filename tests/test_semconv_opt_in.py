"""OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental: the GenAI names as well."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pocketflow
import pytest
from conftest import Telemetry
from support.any_engine import methods_instrumented
from support.spans import outline

import reasonflow_otel
from reasonflow_otel import semconv

OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"


@pytest.fixture
def traced() -> Iterator[Callable[..., Telemetry]]:
    with methods_instrumented() as make:
        yield make


def decorated_flow() -> Callable[[], None]:
    """Decorated now: a run's description (and its names) is made when decorating."""

    @reasonflow_otel.node(name="Classify")
    def classify() -> None:
        pass

    @reasonflow_otel.workflow(name="Triage")
    def triage() -> None:
        classify()

    return triage


def metric_attributes(telemetry: Telemetry, name: str) -> list[dict[str, Any]]:
    return [dict(point.attributes) for point in telemetry.metric_points(name)]


@pytest.mark.parametrize(
    "value", ["gen_ai_latest_experimental", "http, gen_ai_latest_experimental"]
)
def test_opting_in_adds_the_genai_names_and_keeps_ours(monkeypatch, traced, value):
    monkeypatch.setenv(OPT_IN, value)
    triage = decorated_flow()
    telemetry = traced()

    triage()

    assert outline(telemetry) == ["invoke_workflow Triage", "  invoke_node Classify"]
    node = telemetry.span("invoke_node Classify")
    assert node.attributes[semconv.GEN_AI_OPERATION_NAME] == "invoke_node"
    assert node.attributes[semconv.GEN_AI_NODE_NAME] == "Classify"
    assert node.attributes[semconv.NODE_NAME] == "Classify"
    assert metric_attributes(telemetry, semconv.METRIC_GEN_AI_INVOKE_WORKFLOW_DURATION) == [
        {semconv.GEN_AI_OPERATION_NAME: "invoke_workflow", semconv.GEN_AI_WORKFLOW_NAME: "Triage"}
    ]
    assert metric_attributes(telemetry, semconv.METRIC_FLOW_DURATION) == [
        {semconv.ENGINE: "python", semconv.GEN_AI_WORKFLOW_NAME: "Triage"}
    ]
    [ours] = telemetry.metric_points(semconv.METRIC_FLOW_DURATION)
    [theirs] = telemetry.metric_points(semconv.METRIC_GEN_AI_INVOKE_WORKFLOW_DURATION)
    assert (theirs.count, theirs.sum) == (ours.count, ours.sum)


def test_by_default_only_todays_names_are_emitted(monkeypatch, traced):
    monkeypatch.delenv(OPT_IN, raising=False)
    triage = decorated_flow()
    telemetry = traced()

    triage()

    assert outline(telemetry) == ["invoke_workflow Triage", "  Classify"]
    assert semconv.GEN_AI_NODE_NAME not in telemetry.span("Classify").attributes
    assert telemetry.metric_points(semconv.METRIC_GEN_AI_INVOKE_WORKFLOW_DURATION) == []


def test_the_genai_stream_can_be_dropped_on_its_own(monkeypatch, traced):
    monkeypatch.setenv(OPT_IN, "gen_ai_latest_experimental")
    triage = decorated_flow()
    telemetry = traced(drop_metrics="gen_ai.*")

    triage()

    assert telemetry.metric_points(semconv.METRIC_GEN_AI_INVOKE_WORKFLOW_DURATION) == []
    assert len(telemetry.metric_points(semconv.METRIC_FLOW_DURATION)) == 1


class Classify(pocketflow.Node):
    pass


class Triage(pocketflow.Flow):
    pass


def test_engine_adapters_follow_the_opt_in_too(monkeypatch, make_telemetry):
    monkeypatch.setenv(OPT_IN, "gen_ai_latest_experimental")
    telemetry = make_telemetry()

    Triage(start=Classify()).run({})

    assert outline(telemetry) == ["invoke_workflow Triage", "  invoke_node Classify"]
    assert metric_attributes(telemetry, semconv.METRIC_GEN_AI_INVOKE_WORKFLOW_DURATION) == [
        {semconv.GEN_AI_OPERATION_NAME: "invoke_workflow", semconv.GEN_AI_WORKFLOW_NAME: "Triage"}
    ]
