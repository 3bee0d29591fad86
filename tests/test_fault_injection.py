"""Faults in telemetry never reach the workflow; the workflow's own exceptions pass untouched.

Every scenario runs twice, on the bare engine and instrumented (with a fault
injected into a real SDK component where the test says so), and what the
application can observe must be identical: the result, the exception (the very
same object), and the calls the engine made.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pocketflow
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import StatusCode

from reasonflow_otel import semconv
from reasonflow_otel.guard import internal_error_counts
from reasonflow_otel.recorder import current_run
from reasonflow_otel.sdk.delivery import DeliveryReportingSpanProcessor

Calls = list[str]


@dataclass
class Outcome:
    """What the application can observe of one run."""

    result: Any
    error: BaseException | None
    calls: Calls


def observe(scenario: Callable[[Calls], Any]) -> Outcome:
    calls: Calls = []
    try:
        return Outcome(scenario(calls), None, calls)
    except BaseException as error:  # KeyboardInterrupt and SystemExit included, on purpose
        return Outcome(None, error, calls)


def assert_context_is_clean() -> None:
    """No span or run of ours is left attached to the caller's context."""
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert current_run() is None


@pytest.fixture
def errors() -> Iterator[Callable[[], dict[tuple[str, str], int]]]:
    """Internal errors reported since the test started, by (place, type)."""
    before = internal_error_counts()

    def since() -> dict[tuple[str, str], int]:
        now = internal_error_counts()
        return {
            key: count - before.get(key, 0)
            for key, count in now.items()
            if count > before.get(key, 0)
        }

    yield since


# --- A realistic sync workflow: retries, a batch, routing ---------------------------------


def research(calls: Calls) -> Any:
    """Flow, Fetch (2 failed attempts, then success), Parse (3 items), Route: 4 runs, 7 spans."""

    class Fetch(pocketflow.Node):
        def exec(self, prep_res: Any) -> str:
            calls.append(f"fetch#{self.cur_retry}")
            if self.cur_retry < 2:
                raise ConnectionError("flaky upstream")
            return "page"

        def post(self, shared: dict, prep_res: Any, exec_res: str) -> None:
            shared["page"] = exec_res

    class Parse(pocketflow.BatchNode):
        def prep(self, shared: dict) -> list[int]:
            return [1, 2, 3]

        def exec(self, item: int) -> int:
            calls.append(f"parse {item}")
            return item * 2

        def post(self, shared: dict, prep_res: Any, exec_res: list[int]) -> None:
            shared["parsed"] = exec_res

    class Route(pocketflow.Node):
        def post(self, shared: dict, prep_res: Any, exec_res: Any) -> str:
            return "done"

    fetch = Fetch(max_retries=3)
    fetch >> Parse() >> Route()
    shared: dict[str, Any] = {}
    action = pocketflow.Flow(start=fetch).run(shared)
    return action, shared


RESEARCH_RUNS = 4
RESEARCH_SPANS = 7


class FaultInStart(RuntimeError):
    pass


class FaultInEnd(RuntimeError):
    pass


class FaultInSampler(RuntimeError):
    pass


class FaultInExport(RuntimeError):
    pass


class StartFails(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise FaultInStart("processor broke on start")


class EndFails(SpanProcessor):
    def on_end(self, span: Any) -> None:
        raise FaultInEnd("processor broke on end")


class SamplerFails(Sampler):
    def should_sample(self, *args: Any, **kwargs: Any) -> Any:
        raise FaultInSampler("sampler broke")

    def get_description(self) -> str:
        return "SamplerFails"


class ExportFails(SpanExporter):
    def export(self, spans: Any) -> Any:
        raise FaultInExport("exporter broke")


def test_a_processor_that_raises_on_start_costs_the_spans_not_the_run(
    make_telemetry, errors, caplog
):
    bare = observe(research)
    telemetry = make_telemetry()
    telemetry.tracer_provider.add_span_processor(StartFails())
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel"):
        instrumented = observe(research)

    assert instrumented == bare
    assert_context_is_clean()
    assert telemetry.spans() == []
    assert errors() == {("starting a run", "FaultInStart"): RESEARCH_RUNS}
    assert [r.getMessage() for r in caplog.records].count(
        "reasonflow-otel: internal error in starting a run (the workflow is not affected; "
        "further errors of this kind are counted, not logged)"
    ) == 1


def test_a_processor_that_raises_on_end_leaves_the_other_processors_served(make_telemetry, errors):
    bare = observe(research)
    telemetry = make_telemetry()
    telemetry.tracer_provider.add_span_processor(EndFails())
    instrumented = observe(research)

    assert instrumented == bare
    assert_context_is_clean()
    assert len(telemetry.spans()) == RESEARCH_SPANS  # the in-memory processor comes first
    assert errors() == {("closing a span", "FaultInEnd"): RESEARCH_SPANS}


def test_a_sampler_that_raises_costs_the_spans_not_the_run(make_telemetry, errors):
    bare = observe(research)
    telemetry = make_telemetry(sampler=SamplerFails())
    instrumented = observe(research)

    assert instrumented == bare
    assert_context_is_clean()
    assert telemetry.spans() == []
    assert errors() == {("starting a run", "FaultInSampler"): RESEARCH_RUNS}


def test_an_exporter_that_raises_is_reported_once_and_its_lost_spans_counted(
    make_telemetry, errors, caplog
):
    bare = observe(research)
    telemetry = make_telemetry()
    processor = DeliveryReportingSpanProcessor("faulty", ExportFails())
    telemetry.tracer_provider.add_span_processor(processor)
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel"):
        instrumented = observe(research)
        telemetry.tracer_provider.shutdown()

    assert instrumented == bare
    assert len(telemetry.spans()) == RESEARCH_SPANS
    assert processor.exporter.lost_spans == RESEARCH_SPANS
    assert errors() == {("the faulty span exporter", "FaultInExport"): 1}
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("reasonflow_otel")]
    assert messages == [
        "reasonflow-otel: internal error in the faulty span exporter (the workflow is not "
        "affected; further errors of this kind are counted, not logged)",
        "reasonflow-otel: 7 of 7 spans could not be delivered by the faulty exporter "
        "(7 in failed exports; export errors were logged when they happened)",
    ]


# --- Values our code has to print or walk --------------------------------------------------


class Unprintable(Exception):
    """An exception whose message cannot be produced."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def test_an_exception_whose_str_raises_is_recorded_and_raised_unchanged(make_telemetry, errors):
    raised: list[BaseException] = []

    def scenario(calls: Calls) -> Any:
        class Sign(pocketflow.Node):
            def exec(self, prep_res: Any) -> None:
                calls.append(f"sign#{self.cur_retry}")
                raised.append(Unprintable("hsm offline"))
                raise raised[-1]

        return pocketflow.Flow(start=Sign(max_retries=2)).run({})

    bare = observe(scenario)
    telemetry = make_telemetry()
    instrumented = observe(scenario)

    assert instrumented.error is raised[-1]
    assert (type(instrumented.error), instrumented.calls) == (type(bare.error), bare.calls)
    assert errors() == {}
    span = telemetry.span("Sign")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "Unprintable: <unprintable Unprintable>"
    assert [(event.name, dict(event.attributes)) for event in span.events] == [
        (
            semconv.EVENT_RETRY,
            {
                semconv.ATTEMPT: 1,
                semconv.ERROR_TYPE: "Unprintable",
                semconv.EXCEPTION_MESSAGE: "<unprintable Unprintable>",
            },
        ),
        (
            semconv.EVENT_EXCEPTION,
            {
                semconv.EXCEPTION_TYPE: "Unprintable",
                semconv.EXCEPTION_MESSAGE: "<unprintable Unprintable>",
            },
        ),
    ]


class Opaque:
    """A result nothing can print."""

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken")

    __str__ = __repr__


def test_results_that_cannot_be_printed_are_captured_safely(make_telemetry, errors):
    opaque = Opaque()
    loop: list[Any] = ["loop"]
    loop.append(loop)

    def scenario(calls: Calls) -> Any:
        class Produce(pocketflow.Node):
            def exec(self, prep_res: Any) -> Any:
                calls.append("produce")
                return {"opaque": opaque, "loop": loop, "blob": b"\xff" * 5_000_000}

            def post(self, shared: dict, prep_res: Any, exec_res: Any) -> Any:
                shared["result"] = exec_res
                return None

        shared: dict[str, Any] = {}
        pocketflow.Flow(start=Produce()).run(shared)
        return shared["result"]

    bare = observe(scenario)
    telemetry = make_telemetry(capture="exec,shared", capture_max_length=80)
    instrumented = observe(scenario)

    assert instrumented.result["opaque"] is opaque
    assert instrumented.result["loop"] is loop
    assert instrumented.result["blob"] == bare.result["blob"]
    assert instrumented.calls == bare.calls
    assert errors() == {}
    attributes = telemetry.span("Produce").attributes
    assert attributes[semconv.NODE_EXEC_RESULT] == (
        '{"opaque":"<unrepresentable Opaque>","loop":["loop","<cycle>"],"blob":"b\'\\\\xff\\…'
    )
    assert len(attributes[semconv.SHARED_AFTER]) == 80


def test_an_unhashable_action_fails_exactly_as_the_bare_engine_fails(make_telemetry, errors):
    def scenario(calls: Calls) -> Any:
        class Decide(pocketflow.Node):
            def post(self, shared: dict, prep_res: Any, exec_res: Any) -> Any:
                calls.append("decide")
                return {"action": "next"}  # a dict: the engine cannot look it up

        decide = Decide()
        decide >> Decide()
        return pocketflow.Flow(start=decide).run({})

    bare = observe(scenario)
    make_telemetry(capture="post")
    instrumented = observe(scenario)

    assert type(instrumented.error) is type(bare.error) is TypeError
    assert instrumented.error.args == bare.error.args
    assert instrumented.calls == bare.calls
    assert errors() == {}
    assert_context_is_clean()


@pytest.mark.filterwarnings("ignore:Flow ends")
def test_a_graph_our_walk_cannot_read_costs_the_graph_attribute_only(make_telemetry, errors):
    def scenario(calls: Calls) -> Any:
        class Greet(pocketflow.Node):
            def exec(self, prep_res: Any) -> str:
                calls.append("greet")
                return "hi"

        greet = Greet()
        greet - "never-taken" >> "not a node"  # a user bug on a branch that is never taken
        return pocketflow.Flow(start=greet).run({})

    bare = observe(scenario)
    telemetry = make_telemetry()
    instrumented = observe(scenario)

    assert instrumented == bare
    assert_context_is_clean()
    assert errors() == {("reading a flow's graph", "AttributeError"): 1}
    flow = telemetry.span("invoke_workflow Flow(Greet)")
    assert semconv.FLOW_GRAPH not in flow.attributes
    assert [span.name for span in telemetry.children(flow)] == ["Greet"]


# --- The application's exceptions, of every kind, from every phase -------------------------


EXCEPTIONS: dict[str, Callable[[], BaseException]] = {
    "ValueError": lambda: ValueError("bad input"),
    "KeyboardInterrupt": KeyboardInterrupt,
    "SystemExit": lambda: SystemExit(3),
    "GeneratorExit": GeneratorExit,
    "CancelledError": asyncio.CancelledError,
}


def failing_node(kind: str, phase: str, thrown: list[BaseException], calls: Calls) -> Any:
    def fail(label: str) -> None:
        calls.append(label)
        if label == phase:
            thrown.append(EXCEPTIONS[kind]())
            raise thrown[-1]

    class Step(pocketflow.Node):
        def prep(self, shared: dict) -> None:
            fail("prep")

        def exec(self, prep_res: Any) -> None:
            fail("exec")

        def post(self, shared: dict, prep_res: Any, exec_res: Any) -> None:
            fail("post")

    class AsyncStep(pocketflow.AsyncNode):
        async def prep_async(self, shared: dict) -> None:
            fail("prep")

        async def exec_async(self, prep_res: Any) -> None:
            fail("exec")

        async def post_async(self, shared: dict, prep_res: Any, exec_res: Any) -> None:
            fail("post")

    return Step, AsyncStep


PHASES = ["prep", "exec", "post"]


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("kind", list(EXCEPTIONS))
def test_every_kind_of_exception_passes_through_untouched(
    make_telemetry, errors, kind, phase, flavour
):
    thrown: list[BaseException] = []

    def scenario(calls: Calls) -> Any:
        step, async_step = failing_node(kind, phase, thrown, calls)
        if flavour == "sync":
            return pocketflow.Flow(start=step(max_retries=3)).run({})
        return asyncio.run(pocketflow.AsyncFlow(start=async_step(max_retries=3)).run_async({}))

    bare = observe(scenario)
    make_telemetry()
    instrumented = observe(scenario)

    expected_calls = PHASES[: PHASES.index(phase) + 1]
    if kind == "ValueError" and phase == "exec":
        expected_calls = ["prep", "exec", "exec", "exec"]  # retried, then re-raised
    assert bare.calls == instrumented.calls == expected_calls
    assert instrumented.error is thrown[-1]
    assert type(bare.error) is type(instrumented.error)
    assert bare.error.args == instrumented.error.args
    assert_context_is_clean()
    assert errors() == {}


# --- Cancellation --------------------------------------------------------------------------


def test_a_cancelled_async_node_is_marked_and_leaves_no_context_behind(telemetry):
    started = asyncio.Event()
    seen_after: list[Any] = []

    class Wait(pocketflow.AsyncNode):
        async def exec_async(self, prep_res: Any) -> None:
            started.set()
            await asyncio.Event().wait()  # until cancelled

    async def caller() -> None:
        try:
            await pocketflow.AsyncFlow(start=Wait()).run_async({})
        except asyncio.CancelledError:
            seen_after.extend([trace.get_current_span(), current_run()])
            raise

    async def main() -> None:
        task = asyncio.create_task(caller())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())

    assert seen_after == [trace.INVALID_SPAN, None]
    for name in ("Wait", "invoke_workflow AsyncFlow(Wait)"):
        span = telemetry.span(name)
        assert span.attributes[semconv.CANCELLED] is True
        assert span.status.status_code is StatusCode.UNSET
        assert semconv.ERROR_TYPE not in span.attributes
        assert span.end_time is not None
