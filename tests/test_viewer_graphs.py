"""The run page's flow graphs: each distinct graph once per trace, with visit counts on nodes
and edges, and an edge taken only when the spans show its transition.

Real engines: PocketFlow in this process (a sub-flow in a loop, a batch flow), and the Burr
example under ``opentelemetry-instrument`` (a fan-out of sub-applications, a conditional
branch, a run halted before its next step).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pocketflow
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from support.otlp_files import otlp_json
from support.processes import BIN, run_program
from support.viewer import get, get_indexed, record_example, running_viewer

from reasonflow_otel.local.trace_file import TraceFileExporter


class Step(pocketflow.Node):
    """Returns the actions it is given, one per run, then ``default``."""

    def __init__(self, *actions: str) -> None:
        super().__init__()
        self.actions = list(actions)

    def post(self, shared, prep_res, exec_res):
        return self.actions.pop(0) if self.actions else None


class Lookup(pocketflow.Flow):
    """Search, then read: a sub-flow."""


class ResearchFlow(pocketflow.Flow):
    """Plan, look up until the check is satisfied (three lookups), then answer."""


class ItemsFlow(pocketflow.BatchFlow):
    """Runs its graph once per item."""

    def prep(self, shared):
        return [{"item": index} for index in range(3)]


def research_flow() -> ResearchFlow:
    plan, check = Step(), Step("again", "again", "done")
    plan >> Lookup(start=_chain(Step(), Step())) >> check
    check - "again" >> plan.successors["default"]
    check - "done" >> Step()
    check - "give_up" >> Step()
    return ResearchFlow(start=plan)


def _chain(first: pocketflow.Node, second: pocketflow.Node) -> pocketflow.Node:
    first >> second
    return first


def items_flow() -> ItemsFlow:
    first, second = Step(), Step()
    first >> second
    return ItemsFlow(start=first)


def graphs_of(path: Path) -> list[dict[str, Any]]:
    [trace_id] = {span["traceId"] for span in otlp_json(path, "spans")}
    with running_viewer(path) as url:
        get_indexed(url + "api/traces")
        return get(f"{url}api/traces/{trace_id}")[1]["graphs"]


def edges_by_action(graph: dict[str, Any]) -> dict[tuple[str, str], int]:
    names = {node["id"]: node["name"] for node in graph["nodes"]}
    return {(names[edge["source"]], edge["action"]): edge["runs"] for edge in graph["edges"]}


@pytest.fixture
def trace_file(make_telemetry, tmp_path) -> Path:
    path = tmp_path / "traces.jsonl"
    telemetry = make_telemetry()
    telemetry.tracer_provider.add_span_processor(
        SimpleSpanProcessor(TraceFileExporter(path, max_bytes=10**9, backups=0))
    )
    return path


def test_a_sub_flow_run_three_times_is_one_graph_with_visit_counts(trace_file):
    research_flow().run({})

    outer, lookup = graphs_of(trace_file)

    assert (outer["workflow"], outer["runs"]) == ("ResearchFlow", 1)
    assert (lookup["workflow"], lookup["runs"]) == ("Lookup", 3)
    assert len(lookup["span_ids"]) == 3
    assert [(node["name"], node["runs"]) for node in lookup["nodes"]] == [
        ("Step", 3),
        ("Step", 3),
    ]
    assert [edge["runs"] for edge in lookup["edges"]] == [3]
    assert [(node["name"], node["runs"]) for node in outer["nodes"]] == [
        ("Step", 1),
        ("Lookup", 3),
        ("Step", 3),
        ("Step", 1),
        ("Step", 0),
    ]
    assert [(edge["action"], edge["runs"], edge["taken"]) for edge in outer["edges"]] == [
        ("default", 1, True),  # plan -> Lookup
        ("default", 3, True),  # Lookup -> check
        ("again", 2, True),  # check -> Lookup
        ("done", 1, True),
        ("give_up", 0, False),
    ]


def test_each_item_of_a_batch_flow_is_its_own_run_of_the_graph(trace_file):
    items_flow().run({})

    [graph] = graphs_of(trace_file)

    assert graph["runs"] == 1
    assert [node["runs"] for node in graph["nodes"]] == [3, 3]
    assert [(edge["action"], edge["runs"]) for edge in graph["edges"]] == [("default", 3)]


@pytest.fixture(scope="module")
def burr_traces(tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    """The Burr example's traces, by the names of the steps they ran, with their graphs."""
    path = record_example(tmp_path_factory.mktemp("burr"), "burr_research_assistant.py")
    spans = otlp_json(path, "spans")
    with running_viewer(path) as url:
        get_indexed(url + "api/traces")
        return {
            _steps(spans, trace_id): get(f"{url}api/traces/{trace_id}")[1]["graphs"]
            for trace_id in {span["traceId"] for span in spans}
        }


def _steps(spans: list[dict[str, Any]], trace_id: str) -> str:
    steps = [s for s in spans if s["traceId"] == trace_id and s["name"] in _BURR_STEPS]
    return " ".join(s["name"] for s in sorted(steps, key=lambda s: int(s["startTimeUnixNano"])))


_BURR_STEPS = {"plan", "research", "cite", "answer_directly", "draft"}


def test_burr_sub_applications_of_a_fan_out_are_one_graph(burr_traces):
    plan, lookup = burr_traces["plan research cite"]

    assert (plan["workflow"], plan["runs"]) == ("plan", 1)
    assert (lookup["workflow"], lookup["runs"]) == ("lookup", 3)
    assert [(node["name"], node["runs"]) for node in lookup["nodes"]] == [("lookup", 3)]
    assert edges_by_action(plan) == {
        ("plan", "len(queries) == 0"): 0,
        ("plan", "default"): 1,
        ("research", "default"): 1,
        ("cite", "default"): 0,  # cite failed: the run ended there
        ("answer_directly", "default"): 0,
    }


def test_a_burr_edge_is_taken_only_when_its_target_ran(burr_traces):
    """The engine's next step is not a transition until a span shows it ran."""
    [direct] = burr_traces["plan answer_directly"]  # halted before draft
    [resumed] = burr_traces["cite"]  # resumed at cite, halted before draft

    assert edges_by_action(direct) == {
        ("plan", "len(queries) == 0"): 1,
        ("plan", "default"): 0,  # research did not run, though its edge is the default
        ("research", "default"): 0,
        ("cite", "default"): 0,
        ("answer_directly", "default"): 0,  # draft is the next step, in another trace
    }
    assert all(edge["runs"] == 0 for edge in resumed["edges"])


def record_graph_run(path: Path, edges: list[tuple[str, str]], runs: list[tuple[str, int, int]]):
    """A flow run as an engine that runs branches in parallel (LangGraph's supersteps) records
    it, through the real SDK: the graph attribute, and node spans at the given times (ms)."""
    from opentelemetry.sdk.trace import TracerProvider

    from reasonflow_otel import semconv

    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(TraceFileExporter(path, max_bytes=10**9, backups=0))
    )
    tracer = provider.get_tracer("test")
    names = sorted({name for edge in edges for name in edge} | {name for name, _, _ in runs})
    graph = {
        "nodes": [{"id": name, "name": name, "class": "Node"} for name in names],
        "edges": [{"source": s, "target": t, "action": "default"} for s, t in edges],
    }
    flow = tracer.start_span(
        "invoke_workflow Fan",
        start_time=BASE_NS,
        attributes={
            semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_INVOKE_WORKFLOW,
            semconv.GEN_AI_WORKFLOW_NAME: "Fan",
            semconv.FLOW_GRAPH: json.dumps(graph),
        },
    )
    context = trace.set_span_in_context(flow)
    for name, start, end in runs:
        attributes = {semconv.NODE_KIND: "node", semconv.NODE_ID: name, semconv.NODE_NAME: name}
        node = tracer.start_span(name, context, attributes=attributes, start_time=_ns(start))
        node.end(end_time=_ns(end))
    flow.end(end_time=_ns(max(end for _, _, end in runs)))
    provider.shutdown()


BASE_NS = 1_796_000_000 * 10**9


def _ns(milliseconds: int) -> int:
    return BASE_NS + milliseconds * 10**6


def test_parallel_branches_each_take_their_edge_and_each_feed_the_join(tmp_path):
    path = tmp_path / "traces.jsonl"
    edges = [("A", "B"), ("A", "C"), ("B", "D"), ("C", "D"), ("A", "E"), ("B", "C")]
    record_graph_run(path, edges, [("A", 0, 1), ("B", 2, 5), ("C", 2, 4), ("D", 6, 7)])

    [graph] = graphs_of(path)

    assert {(e["source"], e["target"]): e["runs"] for e in graph["edges"]} == {
        ("A", "B"): 1,
        ("A", "C"): 1,
        ("B", "D"): 1,
        ("C", "D"): 1,
        ("A", "E"): 0,  # E never ran
        ("B", "C"): 0,  # C started before B ended: a sibling, not a successor
    }


def test_a_step_feeds_only_the_step_after_it_not_a_later_one(tmp_path):
    """A -> X -> B ran; the graph's own A -> B edge was not taken."""
    path = tmp_path / "traces.jsonl"
    edges = [("A", "X"), ("X", "B"), ("A", "B")]
    record_graph_run(path, edges, [("A", 0, 1), ("X", 2, 3), ("B", 4, 5)])

    [graph] = graphs_of(path)

    assert {(e["source"], e["target"]): e["runs"] for e in graph["edges"]} == {
        ("A", "X"): 1,
        ("X", "B"): 1,
        ("A", "B"): 0,
    }


@pytest.fixture(scope="module")
def langgraph_traces(tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    """The LangGraph test app's traces (an interrupted run and its resumption among them),
    by the names of their node spans, with their graphs."""
    directory = tmp_path_factory.mktemp("langgraph")
    app = Path(__file__).parent / "apps" / "langgraph_app.py"
    run_program([str(BIN / "opentelemetry-instrument"), sys.executable, str(app)], directory)
    path = directory / ".reasonflow-otel" / "traces.jsonl"
    spans = otlp_json(path, "spans")
    with running_viewer(path) as url:
        get_indexed(url + "api/traces")
        return {
            " ".join(
                s["name"]
                for s in sorted(spans, key=lambda s: int(s["startTimeUnixNano"]))
                if s["traceId"] == trace_id and "parentSpanId" in s
            ): get(f"{url}api/traces/{trace_id}")[1]["graphs"]
            for trace_id in {span["traceId"] for span in spans}
        }


def test_langgraph_start_and_end_are_drawn_as_where_a_run_starts_and_ends(langgraph_traces):
    triage, reply = langgraph_traces["classify general invoke_workflow reply draft approve"]

    assert {node["name"]: node["status"] for node in reply["nodes"]} == {
        "__start__": "terminal",
        "draft": "ok",
        "__end__": "terminal",
    }
    assert edges_by_name(reply) == {("__start__", "draft"): 1, ("draft", "__end__"): 1}
    taken = edges_by_name(triage)
    assert taken[("__start__", "classify")] == 1
    assert taken[("approve", "__end__")] == 0  # the run was interrupted at approve
    [resumed] = langgraph_traces["approve"]  # resumed at approve, then ended
    assert edges_by_name(resumed)[("approve", "__end__")] == 1
    assert edges_by_name(resumed)[("__start__", "classify")] == 0


def edges_by_name(graph: dict[str, Any]) -> dict[tuple[str, str], int]:
    names = {node["id"]: node["name"] for node in graph["nodes"]}
    return {(names[e["source"]], names[e["target"]]): e["runs"] for e in graph["edges"]}
