"""How Burr gets instrumented, and that Burr behaves exactly as without us."""
# ruff: noqa: F401, F811  (pytest fixtures imported from support.burr_apps)

from __future__ import annotations

import asyncio
import json
import sys
from importlib.metadata import entry_points

import pytest
from burr.core import ApplicationBuilder, Condition, State, action, default
from burr.core.action import streaming_action
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import StatusCode
from support.burr_apps import burr_telemetry, count, make_burr_telemetry
from support.processes import REPOSITORY, run_program
from support.spans import outline

from reasonflow_otel.instrumentation.burr import BurrInstrumentor

APP = REPOSITORY / "tests" / "apps" / "burr_own_provider_app.py"


def test_the_burr_entry_point_names_the_instrumentor_and_its_burr_versions():
    (entry_point,) = entry_points(group="opentelemetry_instrumentor", name="burr")
    assert entry_point.load() is BurrInstrumentor
    assert BurrInstrumentor().instrumentation_dependencies() == ("apache-burr >= 0.40, < 0.50",)
    assert get_dependency_conflicts(BurrInstrumentor().instrumentation_dependencies()) is None


def test_instrument_finds_burr_and_keeps_the_apps_own_tracer_provider(tmp_path):
    completed = run_program([sys.executable, str(APP)], tmp_path)
    report = json.loads(completed.stdout.splitlines()[-1])
    assert report == {
        "spans": ["greet", "invoke_workflow greet"],
        "own_provider": True,
        "engines": [
            "ThreadingInstrumentor",
            "LoggingInstrumentor",
            "PocketFlowInstrumentor",
            "BurrInstrumentor",
            "LangGraphInstrumentor",
            "MethodsInstrumentor",
        ],
    }


def counting_app(calls: list[str]):
    """count loops while n < 3; the condition records each evaluation."""

    def below_three(state: State) -> bool:
        calls.append("below_three")
        return state["n"] < 3

    return (
        ApplicationBuilder()
        .with_actions(count=count)
        .with_transitions(("count", "count", Condition(["n"], below_three, name="n < 3")))
        .with_state(n=0)
        .with_entrypoint("count")
        .build()
    )


def evaluations(run_app) -> int:
    calls: list[str] = []
    run_app(calls)
    return len(calls)


def test_unsampled_runs_evaluate_conditions_as_often_as_bare(make_burr_telemetry):
    bare = evaluations(lambda calls: counting_app(calls).run())
    make_burr_telemetry(sampler=ALWAYS_OFF)
    assert evaluations(lambda calls: counting_app(calls).run()) == bare


def path_and_state(calls: list[str]) -> tuple[list[str], dict]:
    """The actions a counting app runs and its final state; ``calls`` counts conditions."""
    app = counting_app(calls)
    path = [action_.name for action_, _, _ in app.iterate()]
    return path, app.state.get_all()


def test_a_recorded_run_evaluates_conditions_as_often_as_bare_with_the_same_path_and_state(
    make_burr_telemetry,
):
    bare_calls: list[str] = []
    bare = path_and_state(bare_calls)
    bare_run = evaluations(lambda calls: counting_app(calls).run())
    telemetry = make_burr_telemetry()
    calls: list[str] = []
    assert path_and_state(calls) == bare
    assert len(calls) == len(bare_calls)
    assert evaluations(lambda calls: counting_app(calls).run()) == bare_run
    # The successor each step recorded is the one Burr resolved, not one we evaluated.
    run = [span for span in telemetry.spans() if span.name == "count"][-3:]
    assert [span.attributes["reasonflow.node.successor"] for span in run] == [
        "count",
        "count",
        "__end__",
    ]


def test_an_async_run_evaluates_conditions_as_often_as_bare(make_burr_telemetry):
    def arun(calls: list[str]) -> None:
        asyncio.run(counting_app(calls).arun())

    bare = evaluations(arun)
    make_burr_telemetry()
    assert evaluations(arun) == bare


def test_suppressed_instrumentation_records_nothing(burr_telemetry):
    with suppress_instrumentation():
        counting_app([]).run()
    assert burr_telemetry.spans() == []


class StreamBroke(Exception):
    pass


@streaming_action(reads=[], writes=["words"])
def breaking(state: State):
    yield {"word": "one"}, None
    raise StreamBroke("after one word")


def test_a_stream_that_raises_fails_its_span_and_run_with_the_same_exception(burr_telemetry):
    app = ApplicationBuilder().with_actions(breaking=breaking).with_state()
    _, container = app.with_entrypoint("breaking").build().stream_result(halt_after=["breaking"])
    seen = []
    with pytest.raises(StreamBroke) as raised:
        for item in container:
            seen.append(item)
    assert (seen, str(raised.value)) == ([{"word": "one"}], "after one word")
    assert outline(burr_telemetry) == ["invoke_workflow breaking", "  breaking"]
    for span in burr_telemetry.spans():
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "StreamBroke"
