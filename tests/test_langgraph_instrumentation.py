"""How LangGraph gets instrumented and undone, its metrics and payloads, the CLI and viewer on
its runs, and that LangGraph behaves exactly as without us."""
# ruff: noqa: F401, F811  (pytest fixtures imported from support.langgraph_graphs)

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from langgraph.pregel import _retry, _runner, main
from langgraph.types import Command
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from support.langgraph_graphs import (
    approval,
    langgraph_telemetry,
    make_langgraph_telemetry,
    retrying,
    router,
)
from support.otlp_files import otlp_json
from support.processes import BIN, REPOSITORY, run_program
from support.viewer import get, get_indexed, running_viewer

from reasonflow_otel.instrumentation.langgraph import LangGraphInstrumentor

APP = REPOSITORY / "tests" / "apps" / "langgraph_app.py"
CLI = str(BIN / "reasonflow-otel")


def test_the_langgraph_entry_point_names_the_instrumentor_and_its_versions():
    (entry_point,) = entry_points(group="opentelemetry_instrumentor", name="langgraph")
    assert entry_point.load() is LangGraphInstrumentor
    assert LangGraphInstrumentor().instrumentation_dependencies() == ("langgraph >= 1.0, < 1.3",)
    assert get_dependency_conflicts(LangGraphInstrumentor().instrumentation_dependencies()) is None


def wrapped_langgraph_functions() -> tuple:
    """What the adapter wraps, as LangGraph holds it (identity matters: a wrapt proxy
    compares equal to the function it wraps)."""
    return (
        main.Pregel.__dict__["stream"],
        main.Pregel.__dict__["astream"],
        _runner.run_with_retry,
        _runner.arun_with_retry,
        _retry._reset_interrupt_counter,
    )


def identical_to(originals: tuple) -> list[bool]:
    """For each function the adapter wraps, whether LangGraph holds that very object now."""
    now = wrapped_langgraph_functions()
    return [held is original for held, original in zip(now, originals, strict=True)]


def test_uninstrument_restores_langgraph_exactly(make_langgraph_telemetry):
    originals = wrapped_langgraph_functions()
    bare = router().invoke({"n": 1})
    telemetry = make_langgraph_telemetry()
    assert identical_to(originals) == [False] * len(originals)
    assert router().invoke({"n": 1}) == bare
    spans_while_instrumented = len(telemetry.spans())
    LangGraphInstrumentor().uninstrument()  # the instrumentor is a singleton

    assert identical_to(originals) == [True] * len(originals)
    assert _runner.run_with_retry is _retry.run_with_retry
    assert router().invoke({"n": 1}) == bare
    assert len(telemetry.spans()) == spans_while_instrumented == 3


def test_suppressed_instrumentation_records_nothing(langgraph_telemetry):
    with suppress_instrumentation():
        router().invoke({"n": 1})

    assert langgraph_telemetry.spans() == []


def test_the_run_path_calls_no_uuid4_sleep_or_uniform(langgraph_telemetry, monkeypatch):
    """LangGraph's own tests patch these: instrumentation must not consume their values."""

    def forbidden(*args, **kwargs):
        raise AssertionError("called on the run path")

    graph = approval()
    config = {"configurable": {"thread_id": "no-side-effects"}}
    monkeypatch.setattr(uuid, "uuid4", forbidden)
    monkeypatch.setattr(time, "sleep", forbidden)
    monkeypatch.setattr(random, "uniform", forbidden)
    graph.invoke({"n": 0}, config)
    graph.invoke(Command(resume="yes"), config)
    monkeypatch.undo()

    assert len(langgraph_telemetry.spans()) == 5


def test_the_run_config_and_checkpoints_are_what_they_are_bare(make_langgraph_telemetry):
    def run() -> tuple[dict, dict]:
        config = {"configurable": {"thread_id": "same"}, "metadata": {"user": "u1"}}
        graph = approval()
        graph.invoke({"n": 0}, config)
        graph.invoke(Command(resume="yes"), config)
        history = [(s.metadata, s.next, s.values) for s in graph.get_state_history(config)]
        for metadata, _, _ in history:
            metadata.pop("run_id", None)
        return config, {"history": [repr(entry) for entry in history]}

    bare = run()
    make_langgraph_telemetry()
    assert run() == bare


# --- Metrics, whatever the sampling ------------------------------------------------------


@pytest.mark.parametrize("sampler", [None, ALWAYS_OFF])
def test_graph_and_node_durations_are_recorded_sampled_or_not(make_langgraph_telemetry, sampler):
    telemetry = make_langgraph_telemetry(sampler=sampler)
    router().invoke({"n": 1})
    with pytest.raises(ValueError):
        retrying(failures=5).invoke({"n": 0})

    flows = {
        (p.attributes["gen_ai.workflow.name"], p.attributes.get("error.type"), p.count)
        for p in telemetry.metric_points("reasonflow.flow.duration")
    }
    nodes = {
        (p.attributes["reasonflow.node.name"], p.attributes.get("error.type"), p.count)
        for p in telemetry.metric_points("reasonflow.node.duration")
    }
    assert flows == {("router", None, 1), ("retrying", "ValueError", 1)}
    assert nodes == {("plan", None, 1), ("small", None, 1), ("flaky", "ValueError", 1)}
    for point in telemetry.metric_points("reasonflow.node.duration"):
        assert point.attributes["reasonflow.engine"] == "langgraph"
        assert point.attributes["gen_ai.workflow.name"] in ("router", "retrying")
    retries = telemetry.metric_points("reasonflow.node.retries")
    assert [(p.attributes["reasonflow.node.name"], p.value) for p in retries] == [("flaky", 2)]
    assert (telemetry.spans() == []) is (sampler is ALWAYS_OFF)


# --- Payloads ----------------------------------------------------------------------------

PAYLOAD_ATTRIBUTES = ("reasonflow.state.before", "reasonflow.node.exec.result")


def test_no_payload_goes_on_a_span_by_default(langgraph_telemetry):
    router().invoke({"n": 1, "route": "secret route"})

    for span in langgraph_telemetry.spans():
        assert not set(PAYLOAD_ATTRIBUTES) & set(span.attributes)
        assert "secret route" not in json.dumps(dict(span.attributes))


def test_payload_capture_opts_in_with_redaction_and_limits(make_langgraph_telemetry):
    telemetry = make_langgraph_telemetry(
        capture="state,exec", redact_patterns="secret", capture_max_length=200
    )
    router().invoke({"n": 1, "route": "a secret", "items": ["x" * 1000]})

    graph = telemetry.span("invoke_workflow router")
    plan = telemetry.span("plan")
    before = graph.attributes["reasonflow.state.before"]
    assert '"n": 1' in before or '"n":1' in before
    assert "secret" not in before
    assert len(before) <= 200
    assert "reasonflow.state.before" in plan.attributes
    assert "n" in plan.attributes["reasonflow.node.exec.result"]


# --- Zero code, the CLI and the viewer ----------------------------------------------------


@pytest.fixture(scope="module")
def app_runs(tmp_path_factory) -> tuple[Path, dict, dict]:
    """The app bare, then under ``opentelemetry-instrument`` (its local trace file)."""
    directory = tmp_path_factory.mktemp("langgraph-app")
    bare = json.loads(run_program([sys.executable, str(APP)], directory).stdout.splitlines()[-1])
    instrumented = run_program(
        [str(BIN / "opentelemetry-instrument"), sys.executable, str(APP)],
        directory,
        OTEL_SERVICE_NAME="triage-service",
    )
    return directory, bare, json.loads(instrumented.stdout.splitlines()[-1])


def test_opentelemetry_instrument_traces_langgraph_with_zero_code(app_runs):
    directory, bare, instrumented = app_runs
    assert instrumented == bare
    spans = otlp_json(directory / ".reasonflow-otel" / "traces.jsonl", "spans")
    roots = [span["name"] for span in spans if "parentSpanId" not in span]
    assert roots == ["invoke_workflow triage"] * 4
    names = {span["name"] for span in spans}
    assert {"classify", "billing", "general", "approve", "invoke_workflow reply", "draft"} <= names


def test_instrument_finds_langgraph(tmp_path):
    completed = run_program([sys.executable, str(APP), "--instrument"], tmp_path)
    report = json.loads(completed.stdout.splitlines()[-1])
    assert "LangGraphInstrumentor" in report["engines"]
    spans = otlp_json(tmp_path / ".reasonflow-otel" / "traces.jsonl", "spans")
    assert sum(span["name"] == "invoke_workflow triage" for span in spans) == 4


def test_the_cli_lists_shows_and_counts_langgraph_runs(app_runs):
    directory, _, _ = app_runs
    spans = otlp_json(directory / ".reasonflow-otel" / "traces.jsonl", "spans")
    billing = next(span for span in spans if span["name"] == "billing")

    listed = run_program([CLI, "traces"], directory).stdout.splitlines()
    shown = run_program([CLI, "show", billing["traceId"][:10]], directory).stdout
    stats = json.loads(run_program([CLI, "stats", "--json"], directory).stdout)

    assert sum("triage" in row for row in listed[1:]) == 4
    assert "invoke_workflow triage" in shown
    assert "billing" in shown and "1 retry" in shown
    assert "attempt 1 failed: ConnectionError: billing service busy" in shown
    assert "triage" in json.dumps(stats)


def test_the_viewer_draws_the_graph_with_the_path_taken(app_runs):
    directory, _, _ = app_runs
    path = directory / ".reasonflow-otel" / "traces.jsonl"
    spans = otlp_json(path, "spans")
    billing = next(span for span in spans if span["name"] == "billing")
    with running_viewer(path) as url:
        get_indexed(url + "api/traces")
        status, trace_document = get(f"{url}api/traces/{billing['traceId']}")

    assert status == 200
    (graph,) = [g for g in trace_document["graphs"] if g["workflow"] == "triage"]
    runs = {node["name"]: node["runs"] for node in graph["nodes"]}
    assert runs == {
        "__start__": 0,
        "classify": 1,
        "billing": 1,
        "general": 0,
        "approve": 1,
        "__end__": 0,
    }
    taken = {
        (graph["nodes"][int(e["source"])]["name"], graph["nodes"][int(e["target"])]["name"])
        for e in graph["edges"]
        if e["taken"]
    }
    assert ("classify", "billing") in taken
    assert ("classify", "general") not in taken
