"""@workflow, @node and step: workflow telemetry for code on no engine."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from typing import Any

import pocketflow
import pytest
from conftest import Telemetry
from opentelemetry.trace import StatusCode
from support.any_engine import methods_instrumented
from support.processes import REPOSITORY, run_program
from support.spans import MEASURED_ATTRIBUTES, events, outline, stable_attributes
from test_auto_instrumentation import attributes, read_spans

import reasonflow_otel
from reasonflow_otel import semconv
from reasonflow_otel.instrumentation.methods import MethodsInstrumentor

METRICS = (
    semconv.METRIC_FLOW_DURATION,
    semconv.METRIC_NODE_DURATION,
    semconv.METRIC_NODE_RETRIES,
    semconv.METRIC_NODE_CPU_TIME,
    semconv.METRIC_NODE_MEMORY_GROWTH,
    semconv.METRIC_NODE_ACTIVE,
)


@pytest.fixture
def traced() -> Iterator[Callable[..., Telemetry]]:
    with methods_instrumented() as make:
        yield make


class PaymentDeclined(Exception):
    pass


@reasonflow_otel.workflow
def checkout(cart: list[int]) -> int:
    total = price(cart)
    with reasonflow_otel.step("render", category="ui") as step:
        step.set_attribute("app.lines", len(cart))
    return total


@reasonflow_otel.node(category="ai_provider")
def price(cart: list[int]) -> int:
    return sum(cart)


class Shop:
    @reasonflow_otel.node
    def method(self) -> Shop:
        return self

    @reasonflow_otel.node(name="inventory")
    @staticmethod
    def static(count: int) -> int:
        return count

    @reasonflow_otel.node
    @classmethod
    def create(cls) -> type[Shop]:
        return cls

    @reasonflow_otel.workflow(name="restock")
    async def restock(self, items: list[int]) -> list[int]:
        return [await fetch(item) for item in items]


@reasonflow_otel.node
async def fetch(item: int) -> int:
    await asyncio.sleep(0)
    return item


@reasonflow_otel.node
def pages(count: int) -> Iterator[int]:
    for page in range(count):
        yield price([page])


@reasonflow_otel.node
async def stream(count: int) -> AsyncIterator[int]:
    for item in range(count):
        yield await fetch(item)


@reasonflow_otel.node
def charge(error: BaseException) -> None:
    raise error


def test_workflow_node_and_step_nest_with_categories_on_spans_and_metrics(traced):
    telemetry = traced()

    assert checkout([2, 3]) == 5

    assert outline(telemetry) == ["invoke_workflow checkout", "  price", "  render"]
    assert stable_attributes(telemetry.span("price")) == {
        semconv.ENGINE: "python",
        semconv.NODE_NAME: "price",
        semconv.NODE_CLASS: "price",
        semconv.NODE_KIND: "function",
        semconv.CATEGORY: "ai_provider",
    }
    render = stable_attributes(telemetry.span("render"))
    assert render[semconv.CATEGORY] == "ui"
    assert render[semconv.NODE_KIND] == "step"
    assert render["app.lines"] == 2
    points = {
        point.attributes[semconv.NODE_NAME]: dict(point.attributes)
        for point in telemetry.metric_points(semconv.METRIC_NODE_DURATION)
    }
    assert points == {
        "price": {
            semconv.ENGINE: "python",
            semconv.NODE_NAME: "price",
            semconv.GEN_AI_WORKFLOW_NAME: "checkout",
            semconv.CATEGORY: "ai_provider",
        },
        "render": {
            semconv.ENGINE: "python",
            semconv.NODE_NAME: "render",
            semconv.GEN_AI_WORKFLOW_NAME: "checkout",
            semconv.CATEGORY: "ui",
        },
    }


def test_every_kind_of_callable_keeps_its_behaviour(traced):
    telemetry = traced()
    shop = Shop()

    assert shop.method() is shop
    assert Shop.static(4) == 4 and shop.static(5) == 5
    assert Shop.create() is Shop
    assert asyncio.run(shop.restock([1, 2])) == [1, 2]
    assert list(pages(2)) == [0, 1]

    async def consume() -> list[int]:
        return [item async for item in stream(2)]

    assert asyncio.run(consume()) == [0, 1]

    assert outline(telemetry) == [
        "Shop.method",
        "inventory",
        "inventory",
        "Shop.create",
        "invoke_workflow restock",
        "  fetch",
        "  fetch",
        "pages",
        "  price",
        "  price",
        "stream",
        "  fetch",
        "  fetch",
    ]
    kinds = {span.name: span.attributes[semconv.NODE_KIND] for span in telemetry.spans()}
    assert kinds["invoke_workflow restock"] == "async"
    assert kinds["pages"] == "generator"
    assert kinds["stream"] == "async_generator"


@reasonflow_otel.node
def echo() -> Generator[int, int | None, str]:
    received = yield 0
    while received is not None:
        received = yield received * 10
    return "done"


@reasonflow_otel.node
async def echo_async() -> AsyncGenerator[int, int]:
    received = yield 0
    while True:
        try:
            received = yield received * 10
        except KeyError:
            received = -1


def test_generators_keep_send_throw_and_close_and_one_never_started_makes_no_run(traced):
    telemetry = traced()
    never_started = pages(3)
    del never_started
    gc.collect()

    generator = echo()
    assert (next(generator), generator.send(2)) == (0, 20)
    with pytest.raises(StopIteration) as stop:
        generator.send(None)
    assert stop.value.value == "done"

    async def drive() -> list[int]:
        stream = echo_async()
        received = [await stream.asend(None), await stream.asend(3)]
        received.append(await stream.athrow(KeyError("k")))
        await stream.aclose()
        return received

    assert asyncio.run(drive()) == [0, 30, -10]

    assert [span.name for span in telemetry.spans()] == ["echo", "echo_async"]
    active = telemetry.metric_points(semconv.METRIC_NODE_ACTIVE)
    assert {point.attributes[semconv.NODE_NAME]: point.value for point in active} == {
        "echo": 0,
        "echo_async": 0,
    }


def test_an_exception_passes_through_as_the_same_object_with_error_status(traced):
    telemetry = traced()
    error = PaymentDeclined("card declined")

    with pytest.raises(PaymentDeclined) as raised:
        charge(error)

    assert raised.value is error
    span = telemetry.span("charge")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[semconv.ERROR_TYPE] == "PaymentDeclined"
    [event] = span.events
    assert event.name == "exception"


def test_step_reports_retries_a_handled_error_and_a_captured_result(traced):
    telemetry = traced(capture="exec")
    flaky = TimeoutError("slow provider")

    async def block() -> None:
        async with reasonflow_otel.step("ask", category="ai_provider") as step:
            step.retry(flaky)
            step.set_result({"answer": 42})
        with reasonflow_otel.step("fallback") as step:
            step.set_error(PaymentDeclined("handled"))

    asyncio.run(block())

    ask = telemetry.span("ask")
    assert ask.status.status_code is StatusCode.UNSET
    assert ask.attributes[semconv.NODE_ATTEMPTS] == 2
    assert ask.attributes[semconv.NODE_EXEC_RESULT] == '{"answer":42}'
    assert events(ask, semconv.EVENT_RETRY) == [
        {
            semconv.ATTEMPT: 1,
            semconv.ERROR_TYPE: "TimeoutError",
            semconv.EXCEPTION_MESSAGE: "slow provider",
        }
    ]
    assert telemetry.span("fallback").attributes[semconv.ERROR_TYPE] == "PaymentDeclined"
    [retry] = telemetry.metric_points(semconv.METRIC_NODE_RETRIES)
    assert (retry.value, retry.attributes[semconv.ERROR_TYPE]) == (1, "TimeoutError")


def test_without_instrumentation_decorated_code_runs_plainly() -> None:
    MethodsInstrumentor().uninstrument()

    assert checkout([1]) == 1
    with reasonflow_otel.step("alone") as step:
        step.set_attribute("ignored", True)
        step.retry(ValueError("ignored"))
    assert reasonflow_otel.step.current().set_attribute("ignored", 1) is None


# --- The same shape through PocketFlow and through the decorators -----------------------


class Fetch(pocketflow.Node):
    def exec(self, prep_res: Any) -> str:
        return fetch_quote()


class Price(pocketflow.Node):
    def exec(self, prep_res: Any) -> None:
        raise PaymentDeclined("card declined")


class Checkout(pocketflow.Flow):
    pass


_calls = {"fetch": 0}


def fetch_quote() -> str:
    """Fails every other call: the first attempt of each run fails, the retry succeeds."""
    _calls["fetch"] += 1
    if _calls["fetch"] % 2:
        raise TimeoutError("quote service timed out")
    return "quote"


@reasonflow_otel.workflow(name="Checkout")
def decorated_checkout() -> None:
    decorated_fetch()
    decorated_price()


@reasonflow_otel.node(name="Fetch")
def decorated_fetch() -> str:
    try:
        return fetch_quote()
    except TimeoutError as error:
        reasonflow_otel.step.current().retry(error)
    return fetch_quote()


@reasonflow_otel.node(name="Price")
def decorated_price() -> None:
    raise PaymentDeclined("card declined")


ENGINE_SPECIFIC = {
    semconv.ENGINE,
    semconv.NODE_CLASS,
    semconv.NODE_KIND,
    semconv.NODE_MAX_RETRIES,
    semconv.NODE_ID,
    semconv.NODE_ACTION,
    semconv.NODE_SUCCESSOR,
    semconv.FLOW_GRAPH,
    semconv.NODE_FALLBACK,
    *MEASURED_ATTRIBUTES,
}


def shape(telemetry: Telemetry) -> list[tuple[Any, ...]]:
    """What an engine-neutral run looks like: names, tree, statuses, attributes, events."""
    return [
        (
            line,
            span.status.status_code,
            span.status.description,
            {k: v for k, v in span.attributes.items() if _shared(k, v)},
            [
                (e.name, {k: v for k, v in e.attributes.items() if k != "exception.stacktrace"})
                for e in span.events
            ],
        )
        for line, span in zip(outline(telemetry), _in_outline_order(telemetry), strict=True)
    ]


def _shared(key: str, value: Any) -> bool:
    """Not engine-specific; one attempt is reported by PocketFlow's retry loop only."""
    return key not in ENGINE_SPECIFIC and (key, value) != (semconv.NODE_ATTEMPTS, 1)


def _in_outline_order(telemetry: Telemetry) -> list[Any]:
    return sorted(telemetry.spans(), key=lambda span: span.start_time)


def metric_shape(telemetry: Telemetry) -> dict[str, list[tuple[Any, ...]]]:
    """Each metric's points: attributes without the engine, and how many were recorded."""
    shapes = {}
    for name in METRICS:
        points = []
        for point in telemetry.metric_points(name):
            attributes = {k: v for k, v in point.attributes.items() if k != semconv.ENGINE}
            count = point.count if hasattr(point, "count") else point.value
            points.append((sorted(attributes.items()), count))
        shapes[name] = sorted(points)
    return shapes


def test_decorators_make_the_same_spans_and_metric_points_as_the_pocketflow_adapter(
    make_telemetry, traced
):
    _calls["fetch"] = 0
    engine = make_telemetry()
    fetch_node = Fetch(max_retries=2)
    fetch_node >> Price()
    with pytest.raises(PaymentDeclined):
        Checkout(start=fetch_node).run({})
    decorated = traced()
    with pytest.raises(PaymentDeclined):
        decorated_checkout()

    assert (
        outline(decorated) == outline(engine) == ["invoke_workflow Checkout", "  Fetch", "  Price"]
    )
    assert shape(decorated) == shape(engine)
    assert metric_shape(decorated) == metric_shape(engine)
    assert metric_shape(decorated)[semconv.METRIC_NODE_RETRIES] == [
        (
            sorted(
                {
                    semconv.ERROR_TYPE: "TimeoutError",
                    semconv.GEN_AI_WORKFLOW_NAME: "Checkout",
                    semconv.NODE_NAME: "Fetch",
                }.items()
            ),
            1,
        )
    ]


FEATURE_TRACKING = REPOSITORY / "examples" / "feature_tracking.py"
FEATURE_TRACKING_OUTPUT = """\
Q: how do I get a refund?
A: Refunds are paid back to the card within 5 days.
Q: where is my invoice?
A: Invoices are under Billing > Documents.
Q: reset my password
A: (refused: questions about passwords go to the security desk)
"""


def test_the_feature_tracking_example_reports_features_by_category(tmp_path):
    trace_file = tmp_path / "traces.jsonl"

    completed = run_program(
        [sys.executable, str(FEATURE_TRACKING)],
        tmp_path,
        REASONFLOW_OTEL_TRACE_FILE=str(trace_file),
    )

    assert completed.stdout == FEATURE_TRACKING_OUTPUT
    spans = read_spans(trace_file)
    categories = {span["name"]: attributes(span).get(semconv.CATEGORY) for span in spans}
    assert categories == {
        "invoke_workflow answer_question": None,
        "search_documents": "retrieval",
        "answer_with_retry": "ai_provider",
        "call_model": "ai_provider",
        "render_answer": "ui",
    }
    retried = [
        attributes(span)
        for span in spans
        if span["name"] == "answer_with_retry" and semconv.NODE_ATTEMPTS in attributes(span)
    ]
    assert [(a[semconv.NODE_ATTEMPTS], a.get(semconv.ERROR_TYPE)) for a in retried] == [("2", None)]
