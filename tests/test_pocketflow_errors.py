"""Failures, retries and fallbacks: what the spans say, and that the user's exception passes."""

from __future__ import annotations

import asyncio
from typing import Any

import pocketflow
import pytest
from opentelemetry.trace import StatusCode
from support.spans import events, outline, phase_durations


class InvoiceError(Exception):
    """The application's own exception type."""


class ParseInvoice(pocketflow.Node):
    """Raises the given exception object in one phase."""

    def __init__(self, failing_phase: str, error: BaseException, max_retries: int = 1) -> None:
        super().__init__(max_retries=max_retries)
        self.failing_phase, self.error = failing_phase, error
        self.exec_calls = 0

    def _maybe_fail(self, phase: str) -> None:
        if phase == self.failing_phase:
            raise self.error

    def prep(self, shared: dict[str, Any]) -> str:
        self._maybe_fail("prep")
        return shared["raw"]

    def exec(self, raw: str) -> str:
        self.exec_calls += 1
        self._maybe_fail("exec")
        return raw.strip()

    def post(self, shared: dict[str, Any], raw: str, text: str) -> None:
        self._maybe_fail("post")
        shared["text"] = text


class Archive(pocketflow.Node):
    pass


class Billing(pocketflow.Flow):
    pass


class Month(pocketflow.Flow):
    pass


def billing_month(node: pocketflow.Node) -> Month:
    """Month runs Billing, which runs the node then Archive."""
    node >> Archive()
    return Month(start=Billing(start=node))


def assert_failed(span: Any, error: BaseException) -> None:
    """ERROR status with the message, error.type and one escaped exception event.

    ``error.type`` names the class as the exception event does.
    """
    error_type = type(error).__qualname__
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == f"{error_type}: {error}"
    assert span.attributes["error.type"] == error_type
    [exception] = events(span, "exception")
    assert exception["exception.type"] == error_type
    assert exception["exception.message"] == str(error)
    assert exception["exception.escaped"] == "True"  # the SDK writes it as a string


# --- A phase raises ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "durations"),
    [("prep", []), ("exec", ["prep", "exec"]), ("post", ["prep", "exec", "post"])],
)
def test_an_error_in_any_phase_fails_the_node_and_every_enclosing_flow(
    make_telemetry, phase, durations
):
    telemetry = make_telemetry(phase_durations=True)
    error = InvoiceError(f"invoice 4411 unreadable in {phase}")

    with pytest.raises(InvoiceError) as raised:
        billing_month(ParseInvoice(phase, error)).run({"raw": " total: 12 "})

    assert raised.value is error
    assert outline(telemetry) == [
        "invoke_workflow Month",
        "  invoke_workflow Billing",
        "    ParseInvoice",
    ]
    for name in ("ParseInvoice", "invoke_workflow Billing", "invoke_workflow Month"):
        assert_failed(telemetry.span(name), error)
    node = telemetry.span("ParseInvoice")
    assert list(phase_durations(node)) == durations
    assert "reasonflow.node.action" not in node.attributes
    assert "reasonflow.node.successor" not in node.attributes


def assert_not_failed(telemetry: Any, *, cancelled: bool) -> None:
    """The node and both flows ended unset, without error.type on spans or metric points."""
    for name in ("ParseInvoice", "invoke_workflow Billing", "invoke_workflow Month"):
        span = telemetry.span(name)
        assert span.status.status_code is StatusCode.UNSET
        assert "error.type" not in span.attributes
        assert events(span, "exception") == []
        assert span.attributes.get("reasonflow.cancelled", False) is cancelled
    flows = telemetry.metric_points("reasonflow.flow.duration")
    nodes = telemetry.metric_points("reasonflow.node.duration")
    assert sorted(point.attributes["reasonflow.node.name"] for point in nodes) == [
        "Billing",
        "ParseInvoice",
    ]
    assert [("error.type" in point.attributes) for point in flows + nodes] == [False] * 4


def test_a_keyboard_interrupt_passes_untouched_and_is_recorded_like_a_cancellation(telemetry):
    interrupt = KeyboardInterrupt()
    node = ParseInvoice("exec", interrupt, max_retries=3)

    with pytest.raises(KeyboardInterrupt) as raised:
        billing_month(node).run({"raw": "x"})

    assert raised.value is interrupt
    assert_not_failed(telemetry, cancelled=True)
    assert events(telemetry.span("ParseInvoice"), "reasonflow.retry") == []


@pytest.mark.parametrize("code", [None, 0])
def test_a_deliberate_exit_is_not_a_failure(telemetry, code):
    farewell = SystemExit(code)

    with pytest.raises(SystemExit) as raised:
        billing_month(ParseInvoice("post", farewell)).run({"raw": "q"})

    assert raised.value is farewell
    assert_not_failed(telemetry, cancelled=False)


@pytest.mark.parametrize("code", [1, 2, "bye"])
def test_an_exit_with_a_failure_code_is_an_error(telemetry, code):
    failure = SystemExit(code)

    with pytest.raises(SystemExit) as raised:
        billing_month(ParseInvoice("exec", failure)).run({"raw": "x"})

    assert raised.value is failure
    for name in ("ParseInvoice", "invoke_workflow Billing", "invoke_workflow Month"):
        assert_failed(telemetry.span(name), failure)
    points = telemetry.metric_points("reasonflow.node.duration")
    assert [point.attributes["error.type"] for point in points] == ["SystemExit"] * 2


# --- Retries and fallbacks -----------------------------------------------------------------


class FetchRates(pocketflow.Node):
    """Fails the first ``failures`` attempts of each run; may fall back to cached rates."""

    def __init__(self, failures: int, max_retries: int, cached: dict | None = None) -> None:
        super().__init__(max_retries=max_retries)
        self.failures, self.cached = failures, cached

    def prep(self, shared: dict[str, Any]) -> list[int]:
        return []  # one attempt log per run (each run works on a copy of the node)

    def exec(self, attempts: list[int]) -> dict:
        attempts.append(self.cur_retry)
        if len(attempts) <= self.failures:
            raise ConnectionError(f"rates service refused attempt {len(attempts)}")
        return {"EUR": 1.0}

    def exec_fallback(self, prep_res: list[int], exc: Exception) -> dict:
        if self.cached is None:
            raise exc
        return self.cached

    def post(self, shared: dict[str, Any], prep_res: list[int], rates: dict) -> None:
        shared["rates"] = rates


def retry_events(failed_attempts: int) -> list[dict[str, Any]]:
    return [
        {
            "reasonflow.attempt": attempt,
            "error.type": "ConnectionError",
            "exception.message": f"rates service refused attempt {attempt}",
        }
        for attempt in range(1, failed_attempts + 1)
    ]


def test_failed_attempts_that_are_retried_are_events_not_errors(telemetry):
    shared: dict[str, Any] = {}
    pocketflow.Flow(start=FetchRates(failures=2, max_retries=3)).run(shared)

    assert shared["rates"] == {"EUR": 1.0}
    node = telemetry.span("FetchRates")
    assert node.status.status_code is StatusCode.UNSET
    assert events(node, "reasonflow.retry") == retry_events(2)
    assert events(node, "reasonflow.fallback") == []
    assert events(node, "exception") == []
    assert node.attributes["reasonflow.node.attempts"] == 3
    assert node.attributes["reasonflow.node.max_retries"] == 3
    assert node.attributes["reasonflow.node.fallback"] is False
    assert telemetry.span("invoke_workflow Flow(FetchRates)").status.status_code is StatusCode.UNSET


def test_a_run_rescued_by_the_fallback_is_not_an_error(telemetry):
    shared: dict[str, Any] = {}
    cached = {"EUR": 0.9}
    pocketflow.Flow(start=FetchRates(failures=5, max_retries=2, cached=cached)).run(shared)

    assert shared["rates"] is cached
    node = telemetry.span("FetchRates")
    assert node.status.status_code is StatusCode.UNSET
    assert "error.type" not in node.attributes
    assert events(node, "reasonflow.retry") == retry_events(1)
    assert events(node, "reasonflow.fallback") == [
        {
            "reasonflow.attempt": 2,
            "error.type": "ConnectionError",
            "exception.message": "rates service refused attempt 2",
        }
    ]
    assert node.attributes["reasonflow.node.attempts"] == 2
    assert node.attributes["reasonflow.node.fallback"] is True


def test_when_every_attempt_fails_the_last_error_fails_the_run(telemetry):
    with pytest.raises(ConnectionError) as raised:
        pocketflow.Flow(start=FetchRates(failures=5, max_retries=3)).run({})

    assert str(raised.value) == "rates service refused attempt 3"
    node = telemetry.span("FetchRates")
    assert_failed(node, raised.value)
    assert events(node, "reasonflow.retry") == retry_events(2)
    assert events(node, "reasonflow.fallback") == []
    assert node.attributes["reasonflow.node.attempts"] == 3
    assert node.attributes["reasonflow.node.fallback"] is False


def test_an_error_raised_by_the_fallback_itself_is_the_one_recorded(telemetry):
    replacement = InvoiceError("no cached rates either")

    class FetchOrGiveUp(FetchRates):
        def exec_fallback(self, prep_res: list[int], exc: Exception) -> dict:
            raise replacement

    with pytest.raises(InvoiceError) as raised:
        pocketflow.Flow(start=FetchOrGiveUp(failures=5, max_retries=1)).run({})

    assert raised.value is replacement
    assert isinstance(raised.value.__context__, ConnectionError)
    assert_failed(telemetry.span("FetchOrGiveUp"), replacement)


def test_retries_in_a_batch_are_recorded_on_the_item_span(telemetry):
    class ConvertAll(pocketflow.BatchNode):
        def prep(self, shared: dict[str, Any]) -> list[str]:
            return ["usd", "gbp"]

        def exec(self, currency: str) -> str:
            if currency == "gbp" and self.cur_retry == 0:
                raise ConnectionError("rates service refused attempt 1")
            return currency.upper()

    ConvertAll(max_retries=2).run({})

    node = telemetry.span("ConvertAll")
    usd, gbp = telemetry.children(node)
    assert events(usd, "reasonflow.retry") == []
    assert events(gbp, "reasonflow.retry") == retry_events(1)
    assert gbp.attributes["reasonflow.node.attempts"] == 2
    assert events(node, "reasonflow.retry") == []
    assert "reasonflow.node.attempts" not in node.attributes


def test_a_failing_batch_item_fails_its_item_span_and_the_node(make_telemetry):
    telemetry = make_telemetry(phase_durations=True)
    error = InvoiceError("invoice 2 is empty")

    class ParseAll(pocketflow.BatchNode):
        def prep(self, shared: dict[str, Any]) -> list[int]:
            return [1, 2, 3]

        def exec(self, number: int) -> int:
            if number == 2:
                raise error
            return number

    with pytest.raises(InvoiceError) as raised:
        pocketflow.Flow(start=ParseAll()).run({})

    assert raised.value is error
    node = telemetry.span("ParseAll")
    first, second = telemetry.children(node)
    assert first.status.status_code is StatusCode.UNSET
    assert_failed(second, error)
    assert_failed(node, error)
    assert node.attributes["reasonflow.batch.size"] == 2
    assert list(phase_durations(node)) == ["prep", "exec"]


def test_a_failing_parameter_set_fails_its_item_span_and_the_batch_flow(telemetry):
    error = InvoiceError("tenant beta has no invoices")

    class CheckTenant(pocketflow.Node):
        def prep(self, shared: dict[str, Any]) -> None:
            if self.params["tenant"] == "beta":
                raise error

    class AllTenants(pocketflow.BatchFlow):
        def prep(self, shared: dict[str, Any]) -> list[dict[str, str]]:
            return [{"tenant": "alpha"}, {"tenant": "beta"}, {"tenant": "gamma"}]

    with pytest.raises(InvoiceError):
        AllTenants(start=CheckTenant()).run({})

    flow = telemetry.span("invoke_workflow AllTenants")
    alpha, beta = telemetry.children(flow)
    assert alpha.status.status_code is StatusCode.UNSET
    assert beta.attributes["reasonflow.params.tenant"] == "beta"
    assert_failed(beta, error)
    assert_failed(flow, error)


# --- The same in async code --------------------------------------------------------------


class AsyncFetchRates(pocketflow.AsyncNode):
    def __init__(self, failures: int, max_retries: int) -> None:
        super().__init__(max_retries=max_retries)
        self.failures = failures

    async def prep_async(self, shared: dict[str, Any]) -> list[int]:
        return []

    async def exec_async(self, attempts: list[int]) -> dict:
        attempts.append(len(attempts))
        if len(attempts) <= self.failures:
            raise ConnectionError(f"rates service refused attempt {len(attempts)}")
        return {"EUR": 1.0}


def test_async_retries_are_events_and_exhausted_retries_fail_every_level(telemetry):
    shared: dict[str, Any] = {}
    asyncio.run(
        pocketflow.AsyncFlow(start=AsyncFetchRates(failures=1, max_retries=2)).run_async(shared)
    )
    rescued = telemetry.span("AsyncFetchRates")
    assert rescued.status.status_code is StatusCode.UNSET
    assert events(rescued, "reasonflow.retry") == retry_events(1)
    telemetry.exporter.clear()

    flow = pocketflow.AsyncFlow(start=AsyncFetchRates(failures=2, max_retries=2))
    with pytest.raises(ConnectionError) as raised:
        asyncio.run(flow.run_async({}))

    failed = telemetry.span("AsyncFetchRates")
    assert_failed(failed, raised.value)
    assert failed.attributes["reasonflow.node.attempts"] == 2
    assert failed.attributes["reasonflow.node.fallback"] is False
    assert_failed(telemetry.span("invoke_workflow AsyncFlow(AsyncFetchRates)"), raised.value)


def test_a_failing_parallel_item_fails_its_own_span_only(telemetry):
    error = InvoiceError("page 2 is blank")

    class OcrPages(pocketflow.AsyncParallelBatchNode):
        async def prep_async(self, shared: dict[str, Any]) -> list[int]:
            return [1, 2, 3]

        async def exec_async(self, page: int) -> str:
            await asyncio.sleep(0)
            if page == 2:
                raise error
            return f"text of page {page}"

    async def run() -> None:
        with pytest.raises(InvoiceError) as raised:
            await pocketflow.AsyncFlow(start=OcrPages()).run_async({})
        assert raised.value is error
        await asyncio.sleep(0)  # let the sibling items that gather left running finish

    asyncio.run(run())

    node = telemetry.span("OcrPages")
    items = telemetry.children(node)
    assert [item.attributes["reasonflow.batch.index"] for item in items] == [0, 1, 2]
    assert [item.status.status_code for item in items] == [
        StatusCode.UNSET,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert_failed(items[1], error)
    assert_failed(node, error)
    assert_failed(telemetry.span("invoke_workflow AsyncFlow(OcrPages)"), error)
