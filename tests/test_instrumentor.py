"""PocketFlowInstrumentor's life cycle: what it wraps, and that uninstrument() undoes it all."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pocketflow
from opentelemetry.instrumentation.utils import suppress_instrumentation

from reasonflow_otel.instrumentation.pocketflow import PocketFlowInstrumentor

# The engine methods the adapter wraps (see the table in its module docstring).
WRAPPED_METHODS = {
    ("BaseNode", "_run"),
    ("BaseNode", "_exec"),
    ("Node", "_exec"),
    ("BatchNode", "_exec"),
    ("Flow", "_run"),
    ("Flow", "_orch"),
    ("BatchFlow", "_run"),
    ("AsyncNode", "_run_async"),
    ("AsyncNode", "_exec"),
    ("AsyncBatchNode", "_exec"),
    ("AsyncParallelBatchNode", "_exec"),
    ("AsyncFlow", "_run_async"),
    ("AsyncFlow", "_orch_async"),
    ("AsyncBatchFlow", "_run_async"),
    ("AsyncParallelBatchFlow", "_run_async"),
}


def class_namespaces() -> dict[tuple[str, str], Any]:
    """Every attribute defined on every PocketFlow class, by (class, name)."""
    return {
        (cls_name, name): value
        for cls_name, cls in inspect.getmembers(pocketflow, inspect.isclass)
        if cls.__module__ == pocketflow.__name__
        for name, value in vars(cls).items()
    }


class Greet(pocketflow.Node):
    def exec(self, prep_res: None) -> str:
        return "hello"


def test_instrument_wraps_exactly_the_documented_methods(make_telemetry):
    before = class_namespaces()
    make_telemetry()
    during = class_namespaces()

    changed = {key for key in before if during[key] is not before[key]}
    assert changed == WRAPPED_METHODS
    for key in changed:
        assert during[key].__wrapped__ is before[key]


def test_uninstrument_restores_every_original_function_and_stops_spans(make_telemetry):
    before = class_namespaces()
    telemetry = make_telemetry()
    pocketflow.Flow(start=Greet()).run({})
    assert len(telemetry.spans()) == 2

    PocketFlowInstrumentor().uninstrument()

    after = class_namespaces()
    assert after.keys() == before.keys()
    assert [key for key in before if after[key] is not before[key]] == []
    pocketflow.Flow(start=Greet()).run({})
    asyncio.run(pocketflow.AsyncFlow(start=pocketflow.AsyncNode()).run_async({}))
    assert len(telemetry.spans()) == 2


def test_wrapped_methods_keep_their_signature_and_coroutine_nature(make_telemetry):
    make_telemetry()

    for class_name, name in WRAPPED_METHODS:
        method = vars(getattr(pocketflow, class_name))[name]
        original = method.__wrapped__
        assert inspect.iscoroutinefunction(method) is inspect.iscoroutinefunction(original)
        assert inspect.signature(method) == inspect.signature(original)
        assert method.__name__ == original.__name__
    assert inspect.iscoroutinefunction(pocketflow.AsyncNode._run_async)


def test_instrumenting_twice_wraps_once(make_telemetry):
    telemetry = make_telemetry()
    PocketFlowInstrumentor().instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )

    pocketflow.Flow(start=Greet()).run({})

    assert sorted(span.name for span in telemetry.spans()) == ["Greet", "invoke_workflow Flow"]


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
