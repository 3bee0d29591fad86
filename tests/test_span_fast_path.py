"""Span attributes written by the recorder's fast path export exactly what the SDK's calls export.

Each case makes a parent and a child both ways on a real TracerProvider (the
child's attributes at its start and more later) and compares the exported
spans: names, attributes in order, dropped counts. Where the fast path must
step aside (a sampler or processor that reads start attributes, a limit that
drops or cuts, a value the SDK would clean) the SDK's own calls are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pocketflow
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

from reasonflow_otel.instrumentation.pocketflow import PocketFlowInstrumentor
from reasonflow_otel.recorder.fast_paths.spans import SdkSpans, sdk_supports_writing, span_writer
from reasonflow_otel.settings import Settings

START = {"reasonflow.engine": "pocketflow", "reasonflow.node.max_retries": 3, "f": 0.5}
END = {"reasonflow.node.fallback": False, "reasonflow.node.successor": "Next"}

CASES: dict[str, tuple[Mapping[str, Any], Mapping[str, Any], SpanLimits | None]] = {
    "plain values": (START, END, None),
    "a list value (cleaned by the SDK)": (START, {"actions": ["a", "b"]}, None),
    "a value the SDK turns into text": (START, {"odd": object}, None),
    "a key set again at the end": (START, {"f": 1.5}, None),
    "over the attribute-count limit": (START, END, SpanLimits(max_span_attributes=4)),
    "over the value-length limit": (
        START,
        {"text": "x" * 40},
        SpanLimits(max_span_attribute_length=16),
    ),
    "no start attributes": ({}, END, None),
    "a tuple of strings": ({**START, "reads": ("a", "b")}, END, None),
    "a tuple under the value-length limit": (
        {"reads": ("a" * 40,)},
        END,
        SpanLimits(max_span_attribute_length=16),
    ),
    "a mixed tuple": (START, {"mixed": ("a", 1)}, None),
}


def _exported(span: Any) -> tuple:
    return (span.name, list(span.attributes.items()), span.dropped_attributes)


def _spans_both_ways(
    start: Mapping[str, Any], end: Mapping[str, Any], limits: SpanLimits | None
) -> tuple[list, list]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    writer = span_writer(tracer)
    assert isinstance(writer, SdkSpans)
    for fast in (True, False):
        parent = tracer.start_span("parent")
        parent_context = trace.set_span_in_context(parent)
        if fast:
            own, more = dict(list(start.items())[:1]), dict(list(start.items())[1:])
            child = writer.start("child", parent_context, writer.prepare(own), None, more=more)
            writer.set_attributes(child, end)
        else:
            child = tracer.start_span("child", parent_context, attributes=start)
            child.set_attributes(end)
        child.end()
        parent.end()
    spans = [_exported(span) for span in exporter.get_finished_spans()]
    provider.shutdown()
    return spans[:2], spans[2:]


def test_the_sdk_in_use_passes_the_check() -> None:
    assert sdk_supports_writing()


@pytest.mark.parametrize("case", CASES)
def test_written_spans_export_what_the_sdk_exports(case: str) -> None:
    fast, sdk = _spans_both_ways(*CASES[case])
    assert fast == sdk


def test_attributes_set_on_an_ended_span_are_refused_as_the_sdk_refuses_them() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    writer = span_writer(tracer)
    assert writer is not None
    span = tracer.start_span("ended")
    span.end()
    writer.set_attributes(span, {"late": True})
    assert "late" not in span.attributes


class StartAttributesSeen(SpanProcessor):
    """A processor that reads a span's attributes when it starts."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.seen[span.name] = dict(span.attributes or {})


class Step(pocketflow.Node):
    pass


def test_a_processor_reading_start_attributes_sees_every_node_attribute() -> None:
    exporter, seen = InMemorySpanExporter(), StartAttributesSeen()
    provider = TracerProvider()
    provider.add_span_processor(seen)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = PocketFlowInstrumentor()
    instrumentor.instrument(
        tracer_provider=provider,
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
        settings=Settings(),
    )
    try:
        first = Step()
        first >> Step()
        pocketflow.Flow(start=first).run({})
    finally:
        instrumentor.uninstrument()
    node = next(span for span in exporter.get_finished_spans() if span.name == "Step")
    assert seen.seen["Step"]["reasonflow.node.name"] == "Step"
    assert seen.seen["Step"]["reasonflow.node.max_retries"] == 1
    assert set(seen.seen["Step"]) < set(node.attributes)


def test_plain_attributes_skip_the_sdks_cleaning(monkeypatch: pytest.MonkeyPatch) -> None:
    """The case the fast path is for: no attribute of the child goes through the SDK's
    cleaning (which the comparison above shows gives the same span)."""
    from opentelemetry.attributes import BoundedAttributes

    cleaned: list[Mapping[str, Any]] = []
    clean = BoundedAttributes._set_items
    monkeypatch.setattr(
        BoundedAttributes,
        "_set_items",
        lambda self, attributes: (cleaned.append(dict(attributes)), clean(self, attributes))[1],
    )
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    tracer = provider.get_tracer("test")
    writer = span_writer(tracer)
    assert writer is not None
    parent_context = trace.set_span_in_context(tracer.start_span("parent"))
    cleaned.clear()  # the provider's resource, made above
    child = writer.start("child", parent_context, writer.prepare(dict(START)), None)
    writer.set_attributes(child, END)
    assert [attributes for attributes in cleaned if attributes] == []
    assert dict(child.attributes) == {**START, **END}


def test_a_processor_added_later_is_looked_at_before_the_next_span() -> None:
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    tracer = provider.get_tracer("test")
    writer = span_writer(tracer)
    assert writer is not None
    parent_context = trace.set_span_in_context(tracer.start_span("parent"))
    writer.start("before", parent_context, writer.prepare(dict(START)), None).end()
    seen = StartAttributesSeen()
    provider.add_span_processor(seen)
    writer.start("after", parent_context, writer.prepare(dict(START)), None).end()
    assert seen.seen["after"] == START
