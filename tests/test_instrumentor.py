"""PocketFlowInstrumentor's life cycle: what it wraps, and that uninstrument() undoes it all."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

import pocketflow
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation

from reasonflow_otel.instrumentation.pocketflow import PocketFlowInstrumentor

# The engine methods wrapped at instrument() (see the table in the adapter's docstring).
WRAPPED_AT_INSTRUMENT = {
    ("BaseNode", "_run"),
    ("Flow", "_run"),
    ("Flow", "_orch"),
    ("BatchFlow", "_run"),
    ("AsyncNode", "_run_async"),
    ("AsyncFlow", "_run_async"),
    ("AsyncFlow", "_orch_async"),
    ("AsyncBatchFlow", "_run_async"),
    ("AsyncParallelBatchFlow", "_run_async"),
}
# Wrapped at the first run of a node class, on every class of its MRO that defines them.
WRAPPED_FOR_GREET_AND_PING = {
    ("BaseNode", "_exec"),
    ("BaseNode", "exec"),
    ("Node", "_exec"),
    ("Node", "exec_fallback"),
    ("AsyncNode", "_exec"),
    ("AsyncNode", "exec_async"),
    ("AsyncNode", "exec_fallback_async"),
    ("Greet", "exec"),
    ("Ping", "exec_async"),
}


class Greet(pocketflow.Node):
    def exec(self, prep_res: None) -> str:
        return "hello"


class Ping(pocketflow.AsyncNode):
    async def exec_async(self, prep_res: None) -> str:
        return "pong"


def class_namespaces() -> dict[tuple[str, str], Any]:
    """Every attribute defined on every PocketFlow class and on the test's nodes.

    ``__slotnames__`` is left out: ``copy.copy`` caches it on a class at its first copy.
    """
    classes = [cls for _, cls in inspect.getmembers(pocketflow, inspect.isclass)]
    return {
        (cls.__name__, name): value
        for cls in [*classes, Greet, Ping]
        if cls.__module__ in (pocketflow.__name__, __name__)
        for name, value in vars(cls).items()
        if name != "__slotnames__"
    }


def run_sync_and_async_flows() -> None:
    pocketflow.Flow(start=Greet()).run({})
    asyncio.run(pocketflow.AsyncFlow(start=Ping()).run_async({}))


def changed_since(before: dict[tuple[str, str], Any]) -> set[tuple[str, str]]:
    now = class_namespaces()
    assert now.keys() == before.keys()
    return {key for key in before if now[key] is not before[key]}


def test_instrument_wraps_the_run_methods_then_the_exec_methods_of_each_class_run(
    make_telemetry,
):
    before = class_namespaces()
    make_telemetry()
    assert changed_since(before) == WRAPPED_AT_INSTRUMENT

    run_sync_and_async_flows()

    during = class_namespaces()
    assert changed_since(before) == WRAPPED_AT_INSTRUMENT | WRAPPED_FOR_GREET_AND_PING
    for key in WRAPPED_AT_INSTRUMENT | WRAPPED_FOR_GREET_AND_PING:
        assert during[key].__wrapped__ is before[key]


def test_uninstrument_restores_every_original_function_and_stops_spans(make_telemetry):
    before = class_namespaces()
    telemetry = make_telemetry()
    run_sync_and_async_flows()
    assert len(telemetry.spans()) == 4

    PocketFlowInstrumentor().uninstrument()

    assert changed_since(before) == set()
    run_sync_and_async_flows()
    assert len(telemetry.spans()) == 4


def test_wrapped_methods_keep_their_signature_and_coroutine_nature(make_telemetry):
    make_telemetry()
    run_sync_and_async_flows()

    namespaces = {"Greet": Greet, "Ping": Ping}
    for class_name, name in WRAPPED_AT_INSTRUMENT | WRAPPED_FOR_GREET_AND_PING:
        owner = namespaces.get(class_name) or getattr(pocketflow, class_name)
        method = vars(owner)[name]
        original = method.__wrapped__
        assert inspect.iscoroutinefunction(method) is inspect.iscoroutinefunction(original)
        assert inspect.signature(method) == inspect.signature(original)
        assert method.__name__ == original.__name__
        assert method.__qualname__ == original.__qualname__
    assert inspect.iscoroutinefunction(pocketflow.AsyncNode._run_async)
    assert inspect.iscoroutinefunction(Ping.exec_async)


def test_instrumenting_twice_wraps_once(make_telemetry):
    telemetry = make_telemetry()
    PocketFlowInstrumentor().instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )

    pocketflow.Flow(start=Greet()).run({})

    assert sorted(span.name for span in telemetry.spans()) == [
        "Greet",
        "invoke_workflow Flow(Greet)",
    ]


def test_suppressed_instrumentation_records_nothing_and_changes_nothing(telemetry):
    shared: dict[str, Any] = {}
    with suppress_instrumentation():
        action = pocketflow.Flow(start=Greet()).run(shared)

    assert action is None
    assert telemetry.spans() == []


def test_dependencies_name_the_supported_pocketflow_versions():
    assert list(PocketFlowInstrumentor().instrumentation_dependencies()) == [
        "pocketflow >= 0.0.1, < 0.1"
    ]


# --- Thread context comes along (the contrib threading instrumentation, held once) ------------


def threading_wraps() -> int:
    """How many wrappers ``Thread.start`` has (wrapt exposes each via ``__wrapped__``)."""
    depth, function = 0, threading.Thread.start
    while hasattr(function, "__wrapped__"):
        depth, function = depth + 1, function.__wrapped__
    return depth


def test_the_instrumentor_alone_brings_thread_propagation_and_takes_it_away(make_telemetry):
    assert threading_wraps() == 0
    make_telemetry()
    assert threading_wraps() == 1

    PocketFlowInstrumentor().uninstrument()
    assert threading_wraps() == 0


def test_thread_propagation_already_on_is_neither_doubled_nor_taken_away(
    threading_instrumented, make_telemetry
):
    make_telemetry()
    assert threading_wraps() == 1

    PocketFlowInstrumentor().uninstrument()
    assert threading_wraps() == 1


def test_a_call_with_wrong_arguments_fails_with_the_engines_own_message(make_telemetry):
    def failure(call: Any) -> str:
        with pytest.raises(TypeError) as raised:
            call()
        return str(raised.value)

    calls = [
        lambda: Greet().exec(),
        lambda: Greet().exec(1, 2),
        lambda: Greet()._exec(prep=1),
        lambda: Greet()._run(),
    ]
    bare = [failure(call) for call in calls]
    make_telemetry()
    run_sync_and_async_flows()

    assert [failure(call) for call in calls] == bare
    assert bare[0] == "Greet.exec() missing 1 required positional argument: 'prep_res'"
