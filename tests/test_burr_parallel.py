"""Sub-applications nest under the action that spawned them: thread pool, asyncio, nesting."""
# ruff: noqa: F401, F811  (pytest fixtures imported from support.burr_apps)

from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator
from typing import Any

from burr.core import Application, ApplicationBuilder, State, action, default
from burr.core.parallelism import MapStates
from opentelemetry.instrumentation.environment_variables import (
    OTEL_PYTHON_DISABLED_INSTRUMENTATIONS,
)
from support.burr_apps import burr_telemetry, make_burr_telemetry
from support.spans import outline

from reasonflow_otel.instrumentation.threads import ThreadingInstrumentor

THREADS: set[str] = set()


@action(reads=["x"], writes=["y"])
def square(state: State) -> State:
    THREADS.add(threading.current_thread().name)
    return state.update(y=state["x"] ** 2)


@action(reads=["x"], writes=["y"])
async def asquare(state: State) -> State:
    await asyncio.sleep(0)
    return state.update(y=state["x"] ** 2)


class Squares(MapStates):
    def __init__(self, mapped: Any = square) -> None:
        super().__init__()
        self._mapped = mapped

    def action(self, state: State, inputs: dict[str, Any]) -> Any:
        return self._mapped

    def states(
        self, state: State, context: Any, inputs: dict[str, Any]
    ) -> Generator[State, None, None]:
        for x in state["xs"]:
            yield state.update(x=x)

    def reduce(self, state: State, states: Any) -> Any:
        return state.update(squares=sorted(substate["y"] for substate in states))

    @property
    def reads(self) -> list[str]:
        return ["xs"]

    @property
    def writes(self) -> list[str]:
        return ["squares"]


class AsyncSquares(Squares):
    def __init__(self) -> None:
        super().__init__(asquare)

    def is_async(self) -> bool:
        return True

    async def reduce(self, state: State, states: Any) -> State:
        return state.update(squares=sorted([substate["y"] async for substate in states]))


@action(reads=["squares"], writes=["total"])
def total(state: State) -> State:
    return state.update(total=sum(state["squares"]))


def fan_out(squares: Any) -> Application:
    return (
        ApplicationBuilder()
        .with_actions(squares=squares, total=total)
        .with_transitions(("squares", "total", default))
        .with_state(xs=[1, 2, 3])
        .with_entrypoint("squares")
        .build()
    )


def fan_out_outline(mapped: str) -> list[str]:
    sub_application = [f"    invoke_workflow {mapped}", f"      {mapped}"]
    return ["invoke_workflow squares", "  squares", *sub_application * 3, "  total"]


def assert_one_trace_under_the_map_action(telemetry) -> None:
    spans = telemetry.spans()
    assert len({span.context.trace_id for span in spans}) == 1
    squares = telemetry.span("squares")
    children = telemetry.children(squares)
    assert [span.name for span in children] == ["invoke_workflow square"] * 3
    assert len({span.attributes["reasonflow.app.id"] for span in children}) == 3


def test_map_states_on_the_thread_pool_nest_under_the_map_action(burr_telemetry):
    THREADS.clear()
    _, _, state = fan_out(Squares()).run(halt_after=["total"])
    assert state["total"] == 14
    assert threading.current_thread().name not in THREADS  # they ran on the pool
    assert outline(burr_telemetry) == fan_out_outline("square")
    assert_one_trace_under_the_map_action(burr_telemetry)


def test_map_states_nest_also_when_threads_do_not_carry_the_context(
    make_burr_telemetry, monkeypatch
):
    monkeypatch.setenv(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, "threading")
    telemetry = make_burr_telemetry()
    assert not ThreadingInstrumentor().is_instrumented_by_opentelemetry
    assert fan_out(Squares()).run(halt_after=["total"])[2]["total"] == 14
    assert outline(telemetry) == fan_out_outline("square")
    assert_one_trace_under_the_map_action(telemetry)


def test_async_map_states_with_gather_nest_under_the_map_action(burr_telemetry):
    async def main():
        return await fan_out(AsyncSquares()).arun(halt_after=["total"])

    assert asyncio.run(main())[2]["total"] == 14
    assert outline(burr_telemetry) == fan_out_outline("asquare")


def test_an_app_run_inside_an_action_nests_under_it_at_any_depth(burr_telemetry):
    @action(reads=["depth"], writes=["trail"])
    def descend(state: State) -> State:
        depth = state["depth"]
        trail = [depth]
        if depth < 2:
            inner = nested(depth + 1).run(halt_after=["descend"])[2]
            trail += inner["trail"]
        return state.update(trail=trail)

    def nested(depth: int) -> Application:
        builder = ApplicationBuilder().with_actions(descend=descend).with_state(depth=depth)
        return builder.with_entrypoint("descend").build()

    assert nested(0).run(halt_after=["descend"])[2]["trail"] == [0, 1, 2]
    assert outline(burr_telemetry) == [
        "invoke_workflow descend",
        "  descend",
        "    invoke_workflow descend",
        "      descend",
        "        invoke_workflow descend",
        "          descend",
    ]
