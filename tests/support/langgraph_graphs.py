"""LangGraph fixtures: LangGraphInstrumentor on real SDK providers, and small real graphs."""

from __future__ import annotations

import asyncio
import contextlib
import operator
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypedDict

import pytest
from conftest import Telemetry, instrumented_telemetry
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy, Send, interrupt
from opentelemetry import trace

from reasonflow_otel.instrumentation.langgraph import LangGraphInstrumentor

ENGINE = {"reasonflow.engine": "langgraph"}
# No waiting between attempts, so retry tests are fast (LangGraph's default is 0.5 s + jitter).
FAST_RETRY = RetryPolicy(initial_interval=0.0, jitter=False, max_attempts=3, retry_on=ValueError)


@pytest.fixture
def make_langgraph_telemetry() -> Iterator[Callable[..., Telemetry]]:
    """Instrument LangGraph with given settings (keywords) and an optional sampler."""
    yield from instrumented_telemetry(LangGraphInstrumentor())


@pytest.fixture
def langgraph_telemetry(make_langgraph_telemetry: Callable[..., Telemetry]) -> Telemetry:
    return make_langgraph_telemetry()


class State(TypedDict, total=False):
    n: int
    route: str
    items: Annotated[list, operator.add]
    answer: str


class Flaky(Exception):
    """What a node raises when a test asks it to fail."""


# --- A router: plan, then a conditional edge to "small" or "large" ------------------------


def opened(tracer: trace.Tracer | None, name: str) -> Any:
    """A span the node opens itself (as an HTTP or LLM client would), if given a tracer."""
    return tracer.start_as_current_span(name) if tracer else contextlib.nullcontext()


def choose(state: State) -> str:
    return "large" if state["n"] > 5 else "small"


def large(state: State) -> State:
    return {"route": "large"}


def router(
    raised: list[BaseException] | None = None,
    tracer: trace.Tracer | None = None,
    **compile_options: Any,
) -> Any:
    """``plan`` opens "inside plan" with ``tracer``; ``small`` raises :class:`Flaky` (kept
    in ``raised``) when the state's route is "fail"."""

    def plan(state: State) -> State:
        with opened(tracer, "inside plan"):
            return {"n": state["n"] + 1}

    def small(state: State) -> State:
        if state.get("route") == "fail":
            error = Flaky("small failed")
            (raised if raised is not None else []).append(error)
            raise error
        return {"route": "small"}

    builder = StateGraph(State)
    builder.add_node("plan", plan)
    builder.add_node("small", small)
    builder.add_node("large", large)
    builder.add_edge(START, "plan")
    builder.add_conditional_edges("plan", choose, {"small": "small", "large": "large"})
    builder.add_edge("small", END)
    builder.add_edge("large", END)
    return builder.compile(name="router", **compile_options)


ROUTER_GRAPH = {
    "nodes": [
        {"id": "0", "name": "__start__", "class": ""},
        {"id": "1", "name": "plan", "class": "RunnableCallable"},
        {"id": "2", "name": "small", "class": "RunnableCallable"},
        {"id": "3", "name": "large", "class": "RunnableCallable"},
        {"id": "4", "name": "__end__", "class": ""},
    ],
    "edges": [
        {"source": "0", "target": "1", "action": "default"},
        {"source": "1", "target": "3", "action": "conditional"},
        {"source": "1", "target": "2", "action": "conditional"},
        {"source": "3", "target": "4", "action": "default"},
        {"source": "2", "target": "4", "action": "default"},
    ],
}


# --- A fan-out: start, then "left" and "right" in one superstep, then "join" --------------


def fan_out(tracer: trace.Tracer | None = None, asynchronous: bool = False) -> Any:
    def branch(name: str) -> Callable[[State], Any]:
        def work(state: State) -> State:
            with opened(tracer, f"inside {name}"):
                return {"items": [name]}

        async def awork(state: State) -> State:
            await asyncio.sleep(0)
            return work(state)

        return awork if asynchronous else work

    builder = StateGraph(State)
    builder.add_node("start", lambda state: {"items": ["start"]})
    builder.add_node("left", branch("left"))
    builder.add_node("right", branch("right"))
    builder.add_node("join", lambda state: {"n": len(state["items"])})
    builder.add_edge(START, "start")
    builder.add_edge("start", "left")
    builder.add_edge("start", "right")
    builder.add_edge(["left", "right"], "join")
    builder.add_edge("join", END)
    return builder.compile(name="fan_out")


# --- Send: "split" sends one "work" task per item ----------------------------------------


def mapper() -> Any:
    def split(state: State) -> list[Send]:
        return [Send("work", {"n": index}) for index in range(state["n"])]

    builder = StateGraph(State)
    builder.add_node("work", lambda state: {"items": [state["n"] * 10]})
    builder.add_conditional_edges(START, split, ["work"])
    builder.add_edge("work", END)
    return builder.compile(name="mapper")


# --- A subgraph as a node ---------------------------------------------------------------


def with_subgraph() -> Any:
    inner = StateGraph(State)
    inner.add_node("inner_step", lambda state: {"n": state["n"] * 2})
    inner.add_edge(START, "inner_step")
    inner.add_edge("inner_step", END)
    outer = StateGraph(State)
    outer.add_node("before", lambda state: {"n": state["n"] + 1})
    outer.add_node("child", inner.compile(name="child_graph"))
    outer.add_edge(START, "before")
    outer.add_edge("before", "child")
    outer.add_edge("child", END)
    return outer.compile(name="parent_graph")


# --- Retries: "flaky" fails its first ``failures`` attempts -------------------------------


def retrying(failures: int, policy: RetryPolicy = FAST_RETRY) -> Any:
    attempts = {"count": 0}

    def flaky(state: State) -> State:
        attempts["count"] += 1
        if attempts["count"] <= failures:
            raise ValueError(f"attempt {attempts['count']}")
        return {"n": attempts["count"]}

    builder = StateGraph(State)
    builder.add_node("flaky", flaky, retry_policy=policy)
    builder.add_edge(START, "flaky")
    builder.add_edge("flaky", END)
    return builder.compile(name="retrying")


# --- Human in the loop: "ask" interrupts, a resume answers --------------------------------


def approval(**compile_options: Any) -> Any:
    def ask(state: State) -> State:
        return {"answer": interrupt({"question": "approve?"})}

    builder = StateGraph(State)
    builder.add_node("prepare", lambda state: {"n": 1})
    builder.add_node("ask", ask)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "ask")
    builder.add_edge("ask", END)
    return builder.compile(name="approval", checkpointer=InMemorySaver(), **compile_options)


def linear(name: str = "linear", asynchronous: bool = False) -> Any:
    """Three trivial nodes in a row: ``a`` -> ``b`` -> ``c``."""

    def step(state: State) -> State:
        return {"n": state["n"] + 1}

    async def astep(state: State) -> State:
        return step(state)

    builder = StateGraph(State)
    for node in ("a", "b", "c"):
        builder.add_node(node, astep if asynchronous else step)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder.compile(name=name)
