"""Retries, interrupt and resume, streaming and async runs of real LangGraph graphs."""
# ruff: noqa: F401, F811  (pytest fixtures imported from support.langgraph_graphs)

from __future__ import annotations

import asyncio
import gc

import pytest
from langgraph.types import Command, RetryPolicy
from opentelemetry import context, trace
from opentelemetry.trace import StatusCode
from support.langgraph_graphs import (
    FAST_RETRY,
    approval,
    fan_out,
    langgraph_telemetry,
    linear,
    make_langgraph_telemetry,
    retrying,
    router,
    with_subgraph,
)
from support.spans import events, outline

# --- Retries ----------------------------------------------------------------------------


def test_a_retried_node_is_one_span_with_its_attempts_and_a_retry_event_per_failure(
    langgraph_telemetry,
):
    result = retrying(failures=2).invoke({"n": 0})

    assert result == {"n": 3, "items": []}
    (flaky,) = [span for span in langgraph_telemetry.spans() if span.name == "flaky"]
    assert flaky.status.status_code is StatusCode.UNSET
    assert flaky.attributes["reasonflow.node.attempts"] == 3
    retries = events(flaky, "reasonflow.retry")
    assert [(e["reasonflow.attempt"], e["error.type"]) for e in retries] == [
        (1, "ValueError"),
        (2, "ValueError"),
    ]
    assert [e["exception.message"] for e in retries] == ["attempt 1", "attempt 2"]


def test_a_node_failing_its_last_attempt_is_an_error_with_every_attempt_counted(
    langgraph_telemetry,
):
    with pytest.raises(ValueError, match="attempt 3"):
        retrying(failures=5).invoke({"n": 0})

    flaky = langgraph_telemetry.span("flaky")
    assert flaky.status.status_code is StatusCode.ERROR
    assert flaky.attributes["error.type"] == "ValueError"
    assert flaky.attributes["reasonflow.node.attempts"] == 3
    assert len(events(flaky, "reasonflow.retry")) == 2
    graph = langgraph_telemetry.span("invoke_workflow retrying")
    assert graph.status.status_code is StatusCode.ERROR


def test_an_error_the_policy_does_not_retry_is_one_attempt(langgraph_telemetry):
    policy = RetryPolicy(initial_interval=0.0, jitter=False, retry_on=KeyError)
    with pytest.raises(ValueError):
        retrying(failures=1, policy=policy).invoke({"n": 0})

    flaky = langgraph_telemetry.span("flaky")
    assert "reasonflow.node.attempts" not in flaky.attributes
    assert events(flaky, "reasonflow.retry") == []


# --- Interrupt and resume ---------------------------------------------------------------


def test_an_interrupt_is_no_error_and_the_resume_links_to_the_interrupted_run(
    langgraph_telemetry,
):
    graph = approval()
    config = {"configurable": {"thread_id": "review-1"}}

    first = graph.invoke({"n": 0}, config)
    second = graph.invoke(Command(resume="yes"), config)

    assert first["__interrupt__"][0].value == {"question": "approve?"}
    assert second == {"n": 1, "answer": "yes", "items": []}
    interrupted, resumed = sorted(
        (s for s in langgraph_telemetry.spans() if s.name == "invoke_workflow approval"),
        key=lambda span: span.start_time,
    )
    asks = sorted(
        (s for s in langgraph_telemetry.spans() if s.name == "ask"),
        key=lambda span: span.start_time,
    )
    for span in (interrupted, asks[0]):
        assert span.status.status_code is StatusCode.UNSET
        assert span.attributes["reasonflow.interrupted"] is True
        assert "error.type" not in span.attributes
        assert events(span, "exception") == []
    assert resumed.context.trace_id != interrupted.context.trace_id
    assert resumed.parent is None
    assert [link.context.span_id for link in resumed.links] == [interrupted.context.span_id]
    assert "reasonflow.interrupted" not in resumed.attributes
    assert asks[1].attributes.get("reasonflow.interrupted") is None
    assert asks[1].parent.span_id == resumed.context.span_id


def test_an_interrupt_inside_a_subgraph_marks_every_graph_up_to_the_root(langgraph_telemetry):
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from support.langgraph_graphs import State

    outer = StateGraph(State)
    outer.add_node("child", approval().builder.compile(name="inner_approval"))
    outer.add_edge(START, "child")
    outer.add_edge("child", END)
    graph = outer.compile(name="outer", checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "nested-1"}}

    graph.invoke({"n": 0}, config)
    graph.invoke(Command(resume="ok"), config)

    first = min(
        (s for s in langgraph_telemetry.spans() if s.name == "invoke_workflow outer"),
        key=lambda span: span.start_time,
    )
    nested = [
        s for s in langgraph_telemetry.spans() if s.context.trace_id == first.context.trace_id
    ]
    for name in ("invoke_workflow outer", "child", "invoke_workflow inner_approval", "ask"):
        (span,) = [s for s in nested if s.name == name]
        assert span.status.status_code is StatusCode.UNSET, name
        assert span.attributes["reasonflow.interrupted"] is True, name
    second = max(
        (s for s in langgraph_telemetry.spans() if s.name == "invoke_workflow outer"),
        key=lambda span: span.start_time,
    )
    assert [link.context.span_id for link in second.links] == [first.context.span_id]


# --- Streaming --------------------------------------------------------------------------


def test_the_callers_loop_body_runs_in_the_callers_context(langgraph_telemetry):
    seen = []
    caller = context.get_current()
    for _ in router().stream({"n": 1}):
        seen.append((context.get_current() == caller, trace.get_current_span()))
        assert trace.get_current_span() is trace.INVALID_SPAN

    assert [same for same, _ in seen] == [True, True]
    assert langgraph_telemetry.span("invoke_workflow router").end_time is not None


def test_a_stream_closed_early_or_abandoned_ends_its_graph_span(langgraph_telemetry):
    stream = linear().stream({"n": 0})
    next(stream)
    stream.close()
    abandoned = linear(name="abandoned").stream({"n": 0})
    next(abandoned)
    del abandoned
    gc.collect()

    for name in ("invoke_workflow linear", "invoke_workflow abandoned"):
        span = langgraph_telemetry.span(name)
        assert span.status.status_code is StatusCode.UNSET
    assert outline(langgraph_telemetry)[:2] == ["invoke_workflow linear", "  a"]


def test_a_stream_never_started_leaves_nothing_open(langgraph_telemetry):
    stream = linear().stream({"n": 0})
    del stream
    gc.collect()

    assert langgraph_telemetry.spans() == []
    assert trace.get_current_span() is trace.INVALID_SPAN


# --- Async --------------------------------------------------------------------------------


def test_ainvoke_is_one_graph_span_with_async_parallel_nodes_under_it(langgraph_telemetry):
    tracer = langgraph_telemetry.tracer_provider.get_tracer("test")
    result = asyncio.run(fan_out(tracer, asynchronous=True).ainvoke({"items": []}))

    assert sorted(result["items"]) == ["left", "right", "start"]
    graph = langgraph_telemetry.span("invoke_workflow fan_out")
    assert sorted(s.name for s in langgraph_telemetry.children(graph)) == [
        "join",
        "left",
        "right",
        "start",
    ]
    for name in ("left", "right"):
        (inside,) = langgraph_telemetry.children(langgraph_telemetry.span(name))
        assert inside.name == f"inside {name}"


def test_astream_keeps_the_callers_context_in_its_loop_body(langgraph_telemetry):
    async def consume() -> list[bool]:
        caller = context.get_current()
        return [
            context.get_current() == caller
            async for _ in linear(asynchronous=True).astream({"n": 0}, stream_mode="updates")
        ]

    assert asyncio.run(consume()) == [True, True, True]
    assert outline(langgraph_telemetry) == ["invoke_workflow linear", "  a", "  b", "  c"]


def test_closing_an_async_stream_cancels_the_running_node(langgraph_telemetry):
    from langgraph.graph import END, START, StateGraph
    from support.langgraph_graphs import State

    cancelled = asyncio.Event()

    async def slow(state: State) -> State:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {"n": 1}

    async def quick(state: State) -> State:
        return {"n": 0}

    builder = StateGraph(State)
    builder.add_node("quick", quick)
    builder.add_node("slow", slow)
    builder.add_node("other", quick)
    builder.add_edge(START, "quick")
    builder.add_edge("quick", "slow")
    builder.add_edge("quick", "other")
    builder.add_edge(["slow", "other"], END)
    graph = builder.compile(name="cancelling")

    async def run() -> None:
        stream = graph.astream({"n": 0}, stream_mode="updates")
        async for chunk in stream:
            if "other" in chunk:
                break
        await stream.aclose()
        await asyncio.wait_for(cancelled.wait(), 5)

    asyncio.run(run())

    slow_span = langgraph_telemetry.span("slow")
    assert slow_span.attributes["reasonflow.cancelled"] is True
    assert slow_span.status.status_code is StatusCode.UNSET
    assert langgraph_telemetry.span("invoke_workflow cancelling").end_time is not None


def test_an_async_subgraph_and_retry_nest_as_the_sync_ones_do(langgraph_telemetry):
    asyncio.run(with_subgraph().ainvoke({"n": 1}))
    asyncio.run(retrying(failures=1).ainvoke({"n": 0}))

    assert outline(langgraph_telemetry) == [
        "invoke_workflow parent_graph",
        "  before",
        "  child",
        "    invoke_workflow child_graph",
        "      inner_step",
        "invoke_workflow retrying",
        "  flaky",
    ]
    flaky = langgraph_telemetry.span("flaky")
    assert flaky.attributes["reasonflow.node.attempts"] == 2
    assert len(events(flaky, "reasonflow.retry")) == 1


def test_a_command_to_the_parent_graph_is_no_error(langgraph_telemetry):
    from langgraph.graph import END, START, StateGraph
    from support.langgraph_graphs import State

    def hand_over(state: State) -> Command:
        return Command(graph=Command.PARENT, goto="after", update={"route": "handed"})

    inner = StateGraph(State)
    inner.add_node("hand_over", hand_over)
    inner.add_edge(START, "hand_over")
    outer = StateGraph(State)
    outer.add_node("child", inner.compile(name="inner"))
    outer.add_node("after", lambda state: {"n": 1})
    outer.add_edge(START, "child")
    outer.add_edge("after", END)

    result = outer.compile(name="outer").invoke({"n": 0})

    assert result["route"] == "handed"
    for name in ("hand_over", "invoke_workflow inner"):
        span = langgraph_telemetry.span(name)
        assert span.status.status_code is StatusCode.UNSET, name
        assert span.attributes["reasonflow.command_to_parent"] is True, name
        assert "error.type" not in span.attributes
    child = langgraph_telemetry.span("child")  # LangGraph applies the command there
    assert child.status.status_code is StatusCode.UNSET
    assert child.attributes["reasonflow.node.successor"] == "after"
    assert langgraph_telemetry.span("invoke_workflow outer").status.status_code is StatusCode.UNSET
