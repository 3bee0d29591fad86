"""REASONFLOW_OTEL_TRACE_METHODS: any callable traced by name, with no code change."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import sys
from collections.abc import Callable, Iterator

import pytest
from apps import task_shapes
from apps.task_shapes import Derived, Engine
from conftest import Telemetry
from opentelemetry.trace import StatusCode
from support.any_engine import methods_instrumented
from support.processes import BIN, REPOSITORY, run_program
from support.spans import indented, outline, stable_attributes
from test_auto_instrumentation import STATUS_ERROR, attributes, read_spans, span_line

from reasonflow_otel import semconv
from reasonflow_otel.instrumentation.methods import MethodsInstrumentor

APP = "apps.task_shapes"
LATE = "apps.late_tasks"


@pytest.fixture
def traced() -> Iterator[Callable[..., Telemetry]]:
    with methods_instrumented() as make:
        yield make


def entries(*names: str) -> str:
    """Entries for apps.task_shapes. Tests call its functions through the module: a
    name imported before instrumenting still refers to the original, as with any
    patching instrumentation."""
    return ",".join(f"{APP}:{name}" for name in names)


def test_a_workflow_method_with_node_methods_and_functions_nests(traced):
    telemetry = traced(trace_methods=entries("Engine.run=workflow", "Engine.execute", "leaf"))

    assert Engine().run([lambda: task_shapes.leaf(1), lambda: task_shapes.leaf(2)]) == [1, 2]

    assert outline(telemetry) == [
        "invoke_workflow Engine.run",
        "  Engine.execute",
        "    leaf",
        "  Engine.execute",
        "    leaf",
    ]
    run = telemetry.span("invoke_workflow Engine.run")
    assert stable_attributes(run) == {
        semconv.ENGINE: "python",
        semconv.NODE_NAME: "Engine.run",
        semconv.NODE_CLASS: "Engine.run",
        semconv.NODE_KIND: "function",
        semconv.GEN_AI_OPERATION_NAME: "invoke_workflow",
        semconv.GEN_AI_WORKFLOW_NAME: "Engine.run",
    }
    [flow_point] = telemetry.metric_points(semconv.METRIC_FLOW_DURATION)
    assert dict(flow_point.attributes) == {
        semconv.ENGINE: "python",
        semconv.GEN_AI_WORKFLOW_NAME: "Engine.run",
    }
    node_points = {
        point.attributes[semconv.NODE_NAME]: (dict(point.attributes), point.count)
        for point in telemetry.metric_points(semconv.METRIC_NODE_DURATION)
    }
    assert node_points == {
        name: (
            {
                semconv.ENGINE: "python",
                semconv.NODE_NAME: name,
                semconv.GEN_AI_WORKFLOW_NAME: "Engine.run",
            },
            2,
        )
        for name in ("Engine.execute", "leaf")
    }


def test_static_and_class_methods_keep_their_binding(traced):
    telemetry = traced(trace_methods=entries("Engine.add", "Engine.create"))

    assert Engine.add(2, 3) == 5
    assert Engine().add(1, 1) == 2
    assert type(Engine.create()) is Engine
    assert type(Derived.create()) is Derived

    assert sorted(span.name for span in telemetry.spans()) == [
        "Engine.add",
        "Engine.add",
        "Engine.create",
        "Engine.create",
    ]


def test_async_functions_keep_looking_like_coroutine_functions(traced):
    telemetry = traced(trace_methods=entries("Engine.run_async=workflow", "double"))

    assert inspect.iscoroutinefunction(Engine.run_async)
    assert asyncio.run(Engine().run_async([1, 2])) == [2, 4]

    assert outline(telemetry) == ["invoke_workflow Engine.run_async", "  double", "  double"]


def test_a_generator_span_covers_the_whole_iteration(traced):
    telemetry = traced(trace_methods=entries("Engine.numbers", "leaf"))

    numbers = Engine().numbers(3)
    assert telemetry.spans() == []  # nothing ran yet
    assert list(numbers) == [0, 1, 2]

    assert outline(telemetry) == ["Engine.numbers", "  leaf", "  leaf", "  leaf"]
    generator = telemetry.span("Engine.numbers")
    leaves = telemetry.children(generator)
    assert generator.start_time <= leaves[0].start_time
    assert generator.end_time >= leaves[-1].end_time
    assert generator.attributes[semconv.NODE_KIND] == "generator"


def test_an_async_generator_span_covers_the_whole_iteration(traced):
    telemetry = traced(trace_methods=entries("Engine.stream", "double"))

    async def consume() -> list[int]:
        return [number async for number in Engine().stream(3)]

    assert asyncio.run(consume()) == [0, 2, 4]

    assert outline(telemetry) == ["Engine.stream", "  double", "  double", "  double"]
    stream = telemetry.span("Engine.stream")
    assert stream.end_time >= telemetry.children(stream)[-1].end_time
    assert stream.attributes[semconv.NODE_KIND] == "async_generator"


def test_an_exception_passes_through_as_the_same_object_with_error_status(traced):
    telemetry = traced(trace_methods=entries("Engine.run=workflow", "fail"))
    error = LookupError("no such order")

    with pytest.raises(LookupError) as raised:
        Engine().run([lambda: task_shapes.fail(error)])

    assert raised.value is error
    for name in ("invoke_workflow Engine.run", "fail"):
        span = telemetry.span(name)
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "LookupError: no such order"
        assert span.attributes[semconv.ERROR_TYPE] == "LookupError"
    [point] = telemetry.metric_points(semconv.METRIC_NODE_DURATION)
    assert point.attributes[semconv.ERROR_TYPE] == "LookupError"


def test_a_thread_started_in_a_node_keeps_its_parent(traced):
    telemetry = traced(trace_methods=entries("Engine.run_in_thread=workflow", "leaf"))

    assert Engine().run_in_thread(7) == [7]

    assert outline(telemetry) == ["invoke_workflow Engine.run_in_thread", "  leaf"]


def test_an_inherited_method_named_on_a_subclass_is_traced_there_only(traced):
    telemetry = traced(trace_methods=entries("Derived.execute"))

    assert Derived().execute(lambda: 1) == 1
    assert Engine().execute(lambda: 2) == 2

    assert [span.name for span in telemetry.spans()] == ["Derived.execute"]


def test_a_module_imported_after_instrumenting_is_wrapped_on_import(traced):
    sys.modules.pop(LATE, None)
    telemetry = traced(trace_methods=f"{LATE}:work")
    assert LATE not in sys.modules

    late = importlib.import_module(LATE)
    assert late.work(1) == 2

    assert [span.name for span in telemetry.spans()] == ["work"]


def test_uninstrument_restores_every_original_and_removes_the_import_hook(traced):
    sys.modules.pop(LATE, None)
    originals = dict(vars(Engine))
    functions = {name: getattr(task_shapes, name) for name in ("leaf", "double", "fail")}
    meta_path = list(sys.meta_path)
    names = entries(
        "Engine.run=workflow",
        "Engine.execute",
        "Engine.add",
        "Engine.create",
        "Engine.run_async",
        "Engine.numbers",
        "Engine.stream",
        "Derived.execute",
        "leaf",
        "double",
        "fail",
    )
    traced(trace_methods=f"{names},{LATE}:work")
    assert vars(Engine)["run"] is not originals["run"]

    MethodsInstrumentor().uninstrument()  # one instance per class (BaseInstrumentor)

    assert dict(vars(Engine)) == originals
    assert all(vars(Engine)[name] is original for name, original in originals.items())
    assert "execute" not in vars(Derived)
    assert all(getattr(task_shapes, name) is f for name, f in functions.items())
    assert sys.meta_path == meta_path
    late = importlib.import_module(LATE)
    assert inspect.isfunction(late.work)  # imported after uninstrument: not wrapped


def test_entries_that_do_not_resolve_are_warned_once_and_skipped(traced, caplog):
    bad = [
        "no_such_module_for_reasonflow:run",
        f"{APP}:Missing.run",
        f"{APP}:Engine.missing",
        "not an entry",
        f"{APP}:leaf=task",
        f"{APP}:APP_NAME",
    ]
    task_shapes.APP_NAME = "shapes"  # a name that resolves to something not callable
    try:
        with caplog.at_level(logging.WARNING, logger="reasonflow_otel"):
            traced(trace_methods=",".join([*bad, f"{APP}:leaf"]))
            MethodsInstrumentor().uninstrument()
            telemetry = traced(trace_methods=",".join([*bad, f"{APP}:leaf"]))
    finally:
        del task_shapes.APP_NAME

    assert task_shapes.leaf(3) == 3
    assert [span.name for span in telemetry.spans()] == ["leaf"]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == len(bad)
    for entry in bad:
        [warning] = [w for w in warnings if f"TRACE_METHODS entry {entry!r}" in w]
        assert warning.startswith("reasonflow-otel: cannot trace")


def test_with_the_variable_unset_nothing_is_wrapped_or_hooked(traced):
    before = dict(vars(Engine))
    meta_path = list(sys.meta_path)

    telemetry = traced()
    Engine().run([lambda: task_shapes.leaf(1)])

    assert sys.meta_path == meta_path
    assert all(vars(Engine)[name] is original for name, original in before.items())
    assert telemetry.spans() == []


def test_instrument_loads_the_by_name_instrumentor_without_any_engine() -> None:
    from reasonflow_otel import _installed_instrumentors

    assert any(isinstance(i, MethodsInstrumentor) for i in _installed_instrumentors())


EXAMPLE = REPOSITORY / "examples" / "task_engine.py"
EXAMPLE_METHODS = ",".join(
    [
        "task_engine:WorkflowEngine.run=workflow",
        *(
            f"task_engine:{task}"
            for task in ("load_orders", "price_orders", "charge_cards", "send_receipts")
        ),
        "task_engine:write_report",
    ]
)


def test_opentelemetry_instrument_traces_the_example_engine_by_name_only(tmp_path):
    plain = run_program([sys.executable, str(EXAMPLE)], tmp_path)
    trace_file = tmp_path / "traces.jsonl"

    completed = run_program(
        [str(BIN / "opentelemetry-instrument"), sys.executable, str(EXAMPLE)],
        tmp_path,
        REASONFLOW_OTEL_TRACE_METHODS=EXAMPLE_METHODS,
        REASONFLOW_OTEL_TRACE_FILE=str(trace_file),
    )

    assert "reasonflow_otel" not in EXAMPLE.read_text()  # zero code: only the variable
    assert completed.stdout == plain.stdout
    assert "cannot trace" not in completed.stderr
    spans = read_spans(trace_file)
    assert indented([span_line(span) for span in spans]) == [
        "invoke_workflow WorkflowEngine.run",
        "  load_orders",
        "  price_orders",
        "  price_orders",
        "  charge_cards",
        "  charge_cards",
        "  write_report",
    ]
    errors = [
        (span["name"], attributes(span).get("error.type"))
        for span in sorted(spans, key=lambda span: int(span["startTimeUnixNano"]))
        if span.get("status", {}).get("code") == STATUS_ERROR
    ]
    assert errors == [
        ("price_orders", "TimeoutError"),
        ("charge_cards", "PermissionError"),
        ("charge_cards", "PermissionError"),
    ]
    assert {attributes(span)["reasonflow.engine"] for span in spans} == {"python"}
