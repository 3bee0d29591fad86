"""Tracking policies: errors-only, slow-only and ratio, decided when the local root ends."""

from __future__ import annotations

import contextlib
import gc
import logging
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Telemetry
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from support.any_engine import methods_instrumented

import reasonflow_otel
from reasonflow_otel import semconv
from reasonflow_otel.sdk.setup import _tracer_provider
from reasonflow_otel.sdk.tail_sampling import TailSamplingSpanProcessor, apply_tracking_policy
from reasonflow_otel.settings import load_settings

SECOND = 1_000_000_000


class Rejected(Exception):
    pass


@reasonflow_otel.workflow
def review(order: int, *, fail: str = "") -> int:
    check(order, fail == "node")
    if fail == "workflow":
        raise Rejected(f"order {order}")
    return order


@reasonflow_otel.node
def check(order: int, fail: bool) -> None:
    if fail:
        raise Rejected(f"check {order}")


@reasonflow_otel.workflow
def review_all(orders: list[int], *, fail_node: int = -1) -> None:
    for order in orders:
        with contextlib.suppress(Rejected):  # handled: still an error span in the trace
            check(order, order == fail_node)


class FixedTraceIds(RandomIdGenerator):
    """Hands out the given trace ids in order (span ids stay random)."""

    def __init__(self, trace_ids: list[int]) -> None:
        self._trace_ids = iter(trace_ids)

    def generate_trace_id(self) -> int:
        return next(self._trace_ids)


@pytest.fixture
def tracked() -> Iterator[Callable[..., tuple[Telemetry, TailSamplingSpanProcessor]]]:
    """``tracked(keep_traces=..., **settings)``: the policy in front of the in-memory exporter."""
    with methods_instrumented() as make:

        def instrument(id_generator: Any = None, **options: Any) -> Any:
            settings = load_settings(options, environ={})
            made: list[TailSamplingSpanProcessor] = []

            def wrap(processor: SpanProcessor) -> SpanProcessor:
                [policy] = apply_tracking_policy([processor], settings)
                assert isinstance(policy, TailSamplingSpanProcessor)
                made.append(policy)
                return policy

            return make(wrap, id_generator, **options), made[0]

        yield instrument


def traces(telemetry: Telemetry) -> dict[str, list[str]]:
    """Exported spans by the workflow of their trace, names sorted."""
    by_trace: dict[int, list[Any]] = {}
    for span in telemetry.spans():
        by_trace.setdefault(span.context.trace_id, []).append(span)
    return {
        next(s.name for s in spans if s.parent is None): sorted(s.name for s in spans)
        for spans in by_trace.values()
    }


def flow_counts(telemetry: Telemetry) -> dict[tuple[str, str | None], int]:
    return {
        (
            point.attributes[semconv.GEN_AI_WORKFLOW_NAME],
            point.attributes.get(semconv.ERROR_TYPE),
        ): point.count
        for point in telemetry.metric_points(semconv.METRIC_FLOW_DURATION)
    }


def node_counts(telemetry: Telemetry) -> dict[str | None, int]:
    """Node runs measured, by error type (None: succeeded)."""
    counts: dict[str | None, int] = {}
    for point in telemetry.metric_points(semconv.METRIC_NODE_DURATION):
        error_type = point.attributes.get(semconv.ERROR_TYPE)
        counts[error_type] = counts.get(error_type, 0) + point.count
    return counts


def test_errors_only_exports_whole_traces_with_an_error_and_metrics_count_every_run(tracked):
    telemetry, policy = tracked(keep_traces="errors")

    review(1)
    with pytest.raises(Rejected):
        review(2, fail="workflow")
    review_all([3, 4, 5], fail_node=4)
    review_all([6, 7])

    assert traces(telemetry) == {
        "invoke_workflow review": ["check", "invoke_workflow review"],
        "invoke_workflow review_all": ["check", "check", "check", "invoke_workflow review_all"],
    }
    assert (policy.kept_traces, policy.dropped_traces, policy.held_spans) == (2, 2, 0)
    assert flow_counts(telemetry) == {
        ("review", None): 1,
        ("review", "Rejected"): 1,
        ("review_all", None): 2,
    }
    assert node_counts(telemetry) == {None: 6, "Rejected": 1}


def test_slow_only_keeps_traces_whose_local_root_lasted_the_threshold(tracked):
    telemetry, policy = tracked(keep_traces="slow", slow_trace_seconds="2.5")
    tracer = telemetry.tracer_provider.get_tracer("test")

    for name, seconds in (("fast", 1), ("threshold", 2.5), ("slow", 4), ("almost", 2.4)):
        root = tracer.start_span(name, start_time=10 * SECOND)
        child = tracer.start_span(f"{name} child", trace.set_span_in_context(root))
        child.end(end_time=11 * SECOND)
        root.end(end_time=10 * SECOND + int(seconds * SECOND))

    assert traces(telemetry) == {
        "threshold": ["threshold", "threshold child"],
        "slow": ["slow", "slow child"],
    }
    assert (policy.kept_traces, policy.dropped_traces) == (2, 2)


def test_the_ratio_rule_keeps_traces_by_trace_id_as_the_sdk_ratio_sampler_does(tracked):
    low_half, high_half = 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000
    trace_ids = [
        0xAAAA << 64 | 0,  # kept: lowest 64 bits at 0
        0xBBBB << 64 | high_half,  # the first id past a 0.5 bound
        0xCCCC << 64 | low_half,  # kept: the last id under it
        0xDDDD << 64 | 0xFFFF_FFFF_FFFF_FFFF,
    ]
    telemetry, _ = tracked(FixedTraceIds(trace_ids), keep_traces="errors,ratio", keep_ratio="0.5")

    for order in range(4):
        review(order)

    kept = {span.context.trace_id for span in telemetry.spans()}
    assert kept == {trace_ids[0], trace_ids[2]}
    assert flow_counts(telemetry) == {("review", None): 4}


def test_the_buffer_is_bounded_drops_the_oldest_held_spans_and_counts_them(tracked, caplog):
    telemetry, policy = tracked(keep_traces="errors", keep_buffer_spans="200")
    seen: dict[str, int] = {}

    @reasonflow_otel.workflow
    def busy() -> None:
        for order in range(500):
            check(order, False)
        seen["held"], seen["dropped"] = policy.held_spans, policy.dropped_spans
        with pytest.raises(Rejected):
            check(500, True)

    busy()

    # Spans 1-200 and 201-400 were dropped as the buffer filled; 401-500 were held.
    assert seen == {"held": 100, "dropped": 400}
    assert sorted(span.name for span in telemetry.spans()) == [
        *["check"] * 101,
        "invoke_workflow busy",
    ]
    assert node_counts(telemetry) == {None: 500, "Rejected": 1}
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel"):
        telemetry.tracer_provider.shutdown()
    assert [record.getMessage() for record in caplog.records] == [
        "reasonflow-otel: tail sampling dropped 400 spans that could not be held "
        "(REASONFLOW_OTEL_KEEP_BUFFER_SPANS=200) or whose trace never ended"
    ]


def test_held_memory_stays_within_the_bound(tracked):
    """The bound in spans is a bound in bytes: ~3 KB per held node span (docs/any-engine.md)."""
    bound = 300
    telemetry, policy = tracked(keep_traces="errors", keep_buffer_spans=str(bound))
    growth: dict[str, int] = {}

    @reasonflow_otel.workflow
    def busy(count: int) -> None:
        check(0, False)
        gc.collect()
        tracemalloc.start()
        for order in range(count):
            check(order, False)
        gc.collect()
        growth[str(count)] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()

    busy(bound - 1)  # the buffer just full
    full = growth[str(bound - 1)]
    busy(10 * bound)  # ten times more spans than the bound

    assert policy.held_spans < bound
    assert full < bound * 10_000  # generous: measured ~3 KB per span
    assert growth[str(10 * bound)] < 2 * full
    telemetry.tracer_provider.shutdown()  # logs the drop count now, not at exit


def test_the_sdk_setup_puts_the_policy_in_front_of_the_exporters(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    names: list[str] = []

    def processors(**options: str) -> list[str]:
        provider = _tracer_provider(load_settings(options, environ={}), Resource.create(), names)
        kinds = [type(p).__name__ for p in provider._active_span_processor._span_processors]
        provider.shutdown()
        return kinds

    assert processors() == ["DeliveryReportingSpanProcessor"]
    assert processors(keep_traces="errors") == ["TailSamplingSpanProcessor"]


def test_a_span_ending_after_its_local_root_follows_the_decision(tracked):
    telemetry, policy = tracked(keep_traces="errors")
    tracer = telemetry.tracer_provider.get_tracer("test")

    for name, status in (("failed", trace.StatusCode.ERROR), ("fine", trace.StatusCode.UNSET)):
        root = tracer.start_span(name)
        late = tracer.start_span(f"{name} late child", trace.set_span_in_context(root))
        root.set_status(status)
        root.end()
        late.end()  # e.g. a thread the root did not wait for

    assert traces(telemetry) == {"failed": ["failed", "failed late child"]}
    assert policy.held_spans == 0


@pytest.mark.parametrize("value", ["all,errors", "none", ""])
def test_a_malformed_policy_keeps_every_trace_with_a_warning(value, caplog):
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel"):
        settings = load_settings(environ={"REASONFLOW_OTEL_KEEP_TRACES": value})

    assert settings.keep_traces == ("all",)
    assert apply_tracking_policy([], settings) == []
    [warning] = [record.getMessage() for record in caplog.records]
    assert warning.startswith(f"reasonflow-otel: ignoring REASONFLOW_OTEL_KEEP_TRACES={value!r}")
