"""Graph and node spans of real LangGraph graphs: names, parents, attributes, errors."""
# ruff: noqa: F401, F811  (pytest fixtures imported from support.langgraph_graphs)

from __future__ import annotations

import json
import threading

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from support.langgraph_graphs import (
    ENGINE,
    ROUTER_GRAPH,
    Flaky,
    fan_out,
    langgraph_telemetry,
    make_langgraph_telemetry,
    mapper,
    router,
    with_subgraph,
)
from support.spans import outline, stable_attributes


def tracer(telemetry) -> trace.Tracer:
    return telemetry.tracer_provider.get_tracer("test")


def node_attributes(name: str, node_id: str, **more: object) -> dict:
    return {
        **ENGINE,
        "reasonflow.node.name": name,
        "reasonflow.node.class": "RunnableCallable",
        "reasonflow.node.kind": "node",
        "reasonflow.node.id": node_id,
        **more,
    }


def test_an_invoke_is_one_graph_span_with_a_child_per_node_and_the_graph(langgraph_telemetry):
    graph = router(tracer=tracer(langgraph_telemetry))
    result = graph.invoke({"n": 1}, {"configurable": {"thread_id": "conversation-7"}})

    assert result == {"n": 2, "route": "small", "items": []}
    assert outline(langgraph_telemetry) == [
        "invoke_workflow router",
        "  plan",
        "    inside plan",
        "  small",
    ]
    graph = langgraph_telemetry.span("invoke_workflow router")
    attributes = stable_attributes(graph)
    assert json.loads(attributes.pop("reasonflow.flow.graph")) == ROUTER_GRAPH
    assert attributes == {
        **ENGINE,
        "reasonflow.node.name": "router",
        "reasonflow.node.class": "CompiledStateGraph",
        "reasonflow.node.kind": "graph",
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": "router",
        "gen_ai.conversation.id": "conversation-7",
    }
    assert graph.kind is trace.SpanKind.INTERNAL
    assert graph.status.status_code is StatusCode.UNSET
    plan, small = langgraph_telemetry.children(graph)
    assert stable_attributes(plan) == node_attributes(
        "plan", "1", **{"reasonflow.node.successor": "small"}
    )
    assert stable_attributes(small) == node_attributes("small", "2")


def test_the_conditional_edge_taken_is_the_successor(langgraph_telemetry):
    router().invoke({"n": 9})

    plan = langgraph_telemetry.span("plan")
    assert plan.attributes["reasonflow.node.successor"] == "large"
    assert (
        "gen_ai.conversation.id"
        not in langgraph_telemetry.span("invoke_workflow router").attributes
    )


def test_stream_and_batch_are_one_graph_span_per_run(langgraph_telemetry):
    graph = router(tracer=tracer(langgraph_telemetry))
    chunks = list(graph.stream({"n": 1}, stream_mode="updates"))
    results = graph.batch([{"n": 1}, {"n": 7}])

    assert chunks == [{"plan": {"n": 2}}, {"small": {"route": "small"}}]
    assert results == [
        {"n": 2, "route": "small", "items": []},
        {"n": 8, "route": "large", "items": []},
    ]
    roots = [span for span in langgraph_telemetry.spans() if span.parent is None]
    assert sorted(span.name for span in roots) == ["invoke_workflow router"] * 3
    assert len({span.context.trace_id for span in roots}) == 3
    assert sorted(line.strip() for line in outline(langgraph_telemetry)) == sorted(
        ["invoke_workflow router"] * 3 + ["plan", "inside plan"] * 3 + ["small", "small", "large"]
    )


def test_parallel_nodes_each_get_a_span_under_the_graph_with_their_own_children(
    langgraph_telemetry,
):
    result = fan_out(tracer(langgraph_telemetry)).invoke({"items": []})

    assert sorted(result["items"]) == ["left", "right", "start"]
    graph = langgraph_telemetry.span("invoke_workflow fan_out")
    children = langgraph_telemetry.children(graph)
    assert sorted(span.name for span in children) == ["join", "left", "right", "start"]
    for name in ("left", "right"):
        node = langgraph_telemetry.span(name)
        assert node.parent.span_id == graph.context.span_id
        (inside,) = langgraph_telemetry.children(node)
        assert inside.name == f"inside {name}"
    start = langgraph_telemetry.span("start")
    assert start.attributes["reasonflow.node.successor"] == ("left", "right")


def test_each_send_is_a_node_span_with_its_index(langgraph_telemetry):
    result = mapper().invoke({"n": 3})

    assert result["items"] == [0, 10, 20]
    graph = langgraph_telemetry.span("invoke_workflow mapper")
    work = langgraph_telemetry.children(graph)
    assert [span.name for span in work] == ["work"] * 3
    assert sorted(span.attributes["reasonflow.batch.index"] for span in work) == [0, 1, 2]


def test_a_subgraph_nests_under_the_node_that_runs_it_without_duplicates(langgraph_telemetry):
    result = with_subgraph().invoke({"n": 1})

    assert result == {"n": 4, "items": []}
    assert outline(langgraph_telemetry) == [
        "invoke_workflow parent_graph",
        "  before",
        "  child",
        "    invoke_workflow child_graph",
        "      inner_step",
    ]
    child = langgraph_telemetry.span("child")
    assert child.attributes["reasonflow.node.class"] == "CompiledStateGraph"
    subgraph = langgraph_telemetry.span("invoke_workflow child_graph")
    assert subgraph.attributes["gen_ai.workflow.name"] == "child_graph"
    assert "reasonflow.flow.graph" in subgraph.attributes


def test_an_exception_fails_the_node_and_the_graph_and_reaches_the_caller_unchanged(
    langgraph_telemetry,
):
    raised: list[BaseException] = []
    with pytest.raises(Flaky) as caught:
        router(raised).invoke({"n": 1, "route": "fail"})

    assert caught.value is raised[0]
    for name in ("small", "invoke_workflow router"):
        span = langgraph_telemetry.span(name)
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "Flaky"
    assert langgraph_telemetry.span("plan").status.status_code is StatusCode.UNSET


def test_a_graph_run_inside_the_callers_span_is_its_child(langgraph_telemetry):
    tracer = langgraph_telemetry.tracer_provider.get_tracer("caller")
    with tracer.start_as_current_span("request") as request:
        router().invoke({"n": 1})

    graph = langgraph_telemetry.span("invoke_workflow router")
    assert graph.parent.span_id == request.get_span_context().span_id


def test_graphs_run_from_threads_each_get_their_own_trace(langgraph_telemetry):
    graph = router(tracer=tracer(langgraph_telemetry))
    threads = [threading.Thread(target=graph.invoke, args=({"n": n},)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    roots = [span for span in langgraph_telemetry.spans() if span.parent is None]
    assert len(roots) == 4
    for root in roots:
        names = {
            span.name
            for span in langgraph_telemetry.spans()
            if span.context.trace_id == root.context.trace_id
        }
        assert names in (
            {"invoke_workflow router", "plan", "inside plan", "small"},
            {"invoke_workflow router", "plan", "inside plan", "large"},
        )


def test_functional_api_tasks_nest_under_their_entrypoint(langgraph_telemetry):
    from langgraph.func import entrypoint, task

    @task
    def double(number: int) -> int:
        return number * 2

    @entrypoint()
    def doubled_sum(count: int) -> int:
        return sum(future.result() for future in [double(i) for i in range(count)])

    assert doubled_sum.invoke(3) == 6
    assert outline(langgraph_telemetry) == [
        f"invoke_workflow {doubled_sum.name}",
        "  doubled_sum",
        "    double",
        "    double",
        "    double",
    ]
    assert langgraph_telemetry.span("doubled_sum").attributes["reasonflow.node.kind"] == "node"
    for span in langgraph_telemetry.spans():
        if span.name == "double":
            assert span.attributes["reasonflow.node.class"] == "task"
