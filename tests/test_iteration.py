"""Runs that span a generator's iteration: nesting, ending, errors, close and throw."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from reasonflow_otel.recorder import NodeInfo, Recorder
from reasonflow_otel.recorder.wrapping import traced_async_generator, traced_generator
from reasonflow_otel.settings import load_settings

FLOW = NodeInfo("test", "Stream", "Stream", "flow", is_flow=True)


@pytest.fixture
def setup() -> Iterator[tuple[Recorder, InMemorySpanExporter, trace.Tracer]]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    tracer = tracer_provider.get_tracer("test")
    recorder = Recorder(tracer, meter_provider.get_meter("test"), load_settings(environ={}))
    yield recorder, exporter, tracer


def numbers(tracer: trace.Tracer, count: int) -> Iterator[int]:
    for number in range(count):
        with tracer.start_as_current_span(f"item {number}"):
            pass
        yield number


def test_the_run_spans_the_iteration_and_parents_what_the_generator_opens(setup) -> None:
    recorder, exporter, tracer = setup
    run = recorder.begin(FLOW, None, attach=False)
    assert trace.get_current_span() is trace.INVALID_SPAN  # not attached
    consumed = []
    for number in traced_generator(run, numbers(tracer, 3)):
        assert trace.get_current_span() is trace.INVALID_SPAN  # consumer keeps its context
        consumed.append(number)
    assert consumed == [0, 1, 2]
    spans = {span.name: span for span in exporter.get_finished_spans()}
    flow = spans["invoke_workflow Stream"]
    assert [spans[f"item {n}"].parent.span_id for n in range(3)] == [flow.context.span_id] * 3
    assert flow.status.status_code is StatusCode.UNSET
    assert flow.end_time >= spans["item 2"].end_time


def test_an_error_in_the_generator_ends_the_run_with_it(setup) -> None:
    recorder, exporter, _ = setup
    boom = ValueError("boom")

    def failing() -> Iterator[int]:
        yield 1
        raise boom

    run = recorder.begin(FLOW, None, attach=False)
    with pytest.raises(ValueError) as raised:
        list(traced_generator(run, failing()))
    assert raised.value is boom
    (flow,) = exporter.get_finished_spans()
    assert flow.status.status_code is StatusCode.ERROR
    assert flow.attributes["error.type"] == "ValueError"


def test_close_and_garbage_collection_end_the_run_and_close_the_generator(setup) -> None:
    recorder, exporter, _ = setup
    closed = []

    def endless() -> Iterator[int]:
        try:
            while True:
                yield 1
        finally:
            closed.append(trace.get_current_span().get_span_context().span_id)

    run = recorder.begin(FLOW, None, attach=False)
    wrapped = traced_generator(run, endless())
    assert next(wrapped) == 1
    del wrapped
    gc.collect()
    (flow,) = exporter.get_finished_spans()
    assert closed == [flow.context.span_id]  # closed with the run current
    assert flow.status.status_code is StatusCode.UNSET


def test_send_throw_and_return_value_pass_through(setup) -> None:
    recorder, _, _ = setup

    def echo() -> Any:
        received = []
        try:
            while True:
                received.append((yield len(received)))
        except KeyError:
            yield "caught"
        return received

    run = recorder.begin(FLOW, None, attach=False)
    wrapped = traced_generator(run, echo())
    assert next(wrapped) == 0
    assert wrapped.send("a") == 1
    assert wrapped.throw(KeyError("k")) == "caught"
    with pytest.raises(StopIteration) as stop:
        next(wrapped)
    assert stop.value.value == ["a"]


def test_async_generator_run_covers_the_iteration(setup) -> None:
    recorder, exporter, tracer = setup

    async def ticks() -> AsyncIterator[int]:
        for number in range(2):
            await asyncio.sleep(0)
            with tracer.start_as_current_span(f"tick {number}"):
                pass
            yield number

    async def consume() -> list[int]:
        run = recorder.begin(FLOW, None, attach=False)
        return [n async for n in traced_async_generator(run, ticks())]

    assert asyncio.run(consume()) == [0, 1]
    spans = {span.name: span for span in exporter.get_finished_spans()}
    flow = spans["invoke_workflow Stream"]
    assert spans["tick 0"].parent.span_id == flow.context.span_id
    assert spans["tick 1"].parent.span_id == flow.context.span_id


def test_async_generator_error_is_recorded_and_propagates(setup) -> None:
    recorder, exporter, _ = setup
    boom = RuntimeError("late")

    async def failing() -> AsyncIterator[int]:
        yield 1
        raise boom

    async def consume() -> None:
        run = recorder.begin(FLOW, None, attach=False)
        async for _ in traced_async_generator(run, failing()):
            pass

    with pytest.raises(RuntimeError) as raised:
        asyncio.run(consume())
    assert raised.value is boom
    (flow,) = exporter.get_finished_spans()
    assert flow.status.status_code is StatusCode.ERROR
