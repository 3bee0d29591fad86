"""Span attributes we made ourselves, handed to the SDK's span without being cleaned again.

Why: the SDK cleans every attribute it is given (type checks, a copy, a lock per
key), and at a span's start the sampler's result wraps them in one more mapping
first. A node's span carries about a dozen attributes, each a ``str``, ``int``,
``float`` or ``bool`` the recorder built: measured in a running flow, giving a
node span six attributes at its start and six at its end costs the SDK about
15 µs, against under 1 µs to put the same values in the span's attribute
dictionary, which is what the SDK does after cleaning them.

When. Only where the result is the SDK's own, value for value:

- values of those four exact types (``bool`` included) or tuples of strings,
  string keys, no string longer than the span limit allows, and room for every
  key under the attribute-count limit (so nothing is truncated or dropped: the
  SDK's own accounting stays right); anything else goes through the SDK;
- at a span's start, only where the sampler's decision cannot depend on the
  attributes (the SDK's always-on sampler; a child of a local sampled span
  under the SDK's ``ParentBased`` with its default always-on delegate for such
  spans), with no links, and when every span processor's ``on_start`` is one
  of the SDK's that do nothing (a processor that reads attributes when a span
  starts sees them as always);
  a root span, a flow's sampler by name (``REASONFLOW_OTEL_SAMPLING_RATIOS``)
  and any other sampler or processor get the attributes through ``start_span``;
- later, on a span not yet ended, under the span's lock and the attribute
  mapping's, as ``set_attributes`` takes them.

The SDK's internals this touches (``Span._attributes``, ``_lock`` and
``_end_time``; a ``BoundedAttributes`` with ``_dict``, ``maxlen``,
``max_value_len`` and ``_lock``) are checked once per
process: :func:`sdk_supports_writing` makes spans both ways on a throwaway
provider and compares what they export. Any difference or error means one log
line and the SDK's own calls everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Tracer

from reasonflow_otel.recorder.fast_paths import trials
from reasonflow_otel.recorder.spans import ApiSpans

# Attribute values the SDK keeps as they are: written without cleaning.
_PLAIN_VALUES = frozenset({str, bool, int, float})
_STR = frozenset({str})


class SdkSpans(ApiSpans):
    """The SDK's spans, given attributes the recorder made without a second cleaning."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__(tracer)
        self._blind = _attribute_blind(tracer)
        # The processors last looked at and whether each ignores a span's start (one
        # tuple: threads read and replace it whole).
        self._checked: tuple[Any, bool] = (None, False)
        self._provider_processor = getattr(tracer, "span_processor", None)

    @staticmethod
    def prepare(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
        """``attributes`` checked once, for a set the recorder gives again and again (a
        node's own attributes); the caller never changes it afterwards."""
        return _Plain(attributes) if _plain(attributes) else attributes

    def start(
        self,
        name: str,
        parent_context: Context,
        attributes: Mapping[str, Any],
        links: Sequence[Link] | None,
        local_sampled_parent: bool = False,
        more: Mapping[str, Any] | None = None,
    ) -> Span:
        plain = type(attributes) is _Plain
        if more and not (plain and attributes.keys().isdisjoint(more) and _plain(more)):
            attributes, more, plain = {**attributes, **more}, None, False
        if (
            links
            or self._blind is None
            or not (
                local_sampled_parent or self._blind == "all" or _under_local_sampled(parent_context)
            )
            or not (plain or _plain(attributes))
            or not self._processors_quiet()
        ):
            return super().start(name, parent_context, attributes, links, more=more)
        span = self._tracer.start_span(name, parent_context, SpanKind.INTERNAL)
        if not _write(span, attributes, more):  # over a limit: the SDK drops or cuts
            span.set_attributes({**attributes, **more} if more else attributes)
        return span

    @staticmethod
    def set_attributes(span: Span, attributes: Mapping[str, Any]) -> None:
        if not (_plain(attributes) and _write_locked(span, attributes)):
            span.set_attributes(attributes)

    def _processors_quiet(self) -> bool:
        """Every span processor ignores a span's start; the answer is kept until the
        provider's processors change (one is added)."""
        processors = getattr(self._provider_processor, "_span_processors", None)
        checked, quiet = self._checked
        if processors is not checked:
            quiet = processors is not None and all(map(_quiet_on_start, processors))
            self._checked = (processors, quiet)
        return quiet


def span_writer(tracer: Tracer) -> SdkSpans | None:
    """:class:`SdkSpans` for the SDK's tracer where the check passed; None: the API's calls."""
    from opentelemetry.sdk.trace import Tracer as SdkTracer

    if isinstance(tracer, SdkTracer) and sdk_supports_writing():
        return SdkSpans(tracer)
    return None


class _Plain(dict[str, Any]):
    """Attributes :func:`_plain` accepted (see ``SdkSpans.prepare``)."""


def _plain(attributes: Mapping[str, Any]) -> bool:
    """Non-empty string keys and values the SDK keeps as they are (a ``str``, ``bool``,
    ``int``, ``float`` or a tuple of strings)."""
    if not _STR.issuperset(map(type, attributes)) or "" in attributes:
        return False
    values = attributes.values()
    if _PLAIN_VALUES.issuperset(map(type, values)):
        return True
    for value in values:
        kind = type(value)
        if kind not in _PLAIN_VALUES and not (kind is tuple and _STR.issuperset(map(type, value))):
            return False
    return True


def _write(span: Any, attributes: Mapping[str, Any], more: Mapping[str, Any] | None) -> bool:
    """Put clean attributes in a span no other thread can see (or whose locks are held);
    False if the SDK would drop, cut or reorder one (over a limit, a key already set)."""
    bounded = span._attributes
    stored = bounded._dict
    if not more:
        more = {}
    if not (
        _fits(bounded, stored, attributes, len(more))
        and _fits(bounded, stored, more, len(attributes))
    ):
        return False
    stored.update(attributes)
    stored.update(more)
    return True


def _write_locked(span: Any, attributes: Mapping[str, Any]) -> bool:
    """Put clean ``attributes`` in a span other threads may hold, while it is not ended
    (under the span's lock, as ``set_attributes``); False if the SDK would drop, cut or
    reorder one (over a limit, a key already set), or warn (ended)."""
    bounded = getattr(span, "_attributes", None)
    lock = getattr(span, "_lock", None)
    if bounded is None or lock is None:  # not an SDK span
        return False
    with lock:
        if span._end_time is not None:
            return False
        with bounded._lock:
            return _write(span, attributes, None)


def _fits(
    bounded: Any, stored: dict[str, Any], attributes: Mapping[str, Any], others: int = 0
) -> bool:
    """No key already present (the SDK moves it last), under both limits with ``others``
    attributes more to come."""
    if stored and not stored.keys().isdisjoint(attributes):
        return False
    limit = bounded.maxlen
    if limit is not None and len(stored) + len(attributes) + others > limit:
        return False
    longest = bounded.max_value_len
    return longest is None or not any(  # the SDK cuts long strings, in tuples too
        type(value) is tuple or (type(value) is str and len(value) > longest)
        for value in attributes.values()
    )


def _under_local_sampled(parent_context: Context) -> bool:
    """The current span of ``parent_context`` is this process's and sampled."""
    span_context = trace.get_current_span(parent_context).get_span_context()
    return span_context.is_valid and not span_context.is_remote and span_context.trace_flags.sampled


def _attribute_blind(tracer: Any) -> str | None:
    """Which spans the tracer's sampler decides without reading their attributes:
    ``"all"`` (the SDK's always-on sampler), ``"children"`` (the SDK's ``ParentBased``
    keeps a child of a local sampled span with its default always-on delegate), or None."""
    from opentelemetry.sdk.trace.sampling import Decision, ParentBased, StaticSampler

    def always_on(sampler: Any) -> bool:
        return type(sampler) is StaticSampler and sampler._decision is Decision.RECORD_AND_SAMPLE

    sampler = getattr(tracer, "sampler", None)
    if always_on(sampler):
        return "all"
    if isinstance(sampler, ParentBased) and always_on(sampler._local_parent_sampled):
        return "children"
    return None


def _quiet_on_start(processor: Any) -> bool:
    """The processor's ``on_start`` is one of the SDK's that do nothing (or it only holds
    such processors)."""
    from opentelemetry.sdk.trace import (
        ConcurrentMultiSpanProcessor,
        SpanProcessor,
        SynchronousMultiSpanProcessor,
    )
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if isinstance(processor, (SynchronousMultiSpanProcessor, ConcurrentMultiSpanProcessor)):
        return all(_quiet_on_start(inner) for inner in processor._span_processors)
    quiet = (SpanProcessor.on_start, BatchSpanProcessor.on_start, SimpleSpanProcessor.on_start)
    return type(processor).on_start in quiet


@functools.cache
def sdk_supports_writing() -> bool:
    """Whether spans written here export what the SDK's own calls export (checked once)."""
    return trials.agrees(
        _trial, "span internals", "span attributes go through the SDK's calls (slower, same data)"
    )


def _trial() -> tuple[list, list]:
    """A parent and a child, made both ways on a throwaway provider: what they export."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        tracer = provider.get_tracer("reasonflow-otel-trial")
        start = {"s": "node", "i": 3, "f": 0.5, "b": True}
        end = {"e": "end", "z": False}
        written = SdkSpans(tracer)
        if written._blind != "children":
            raise TypeError("the SDK's default sampler is not the ParentBased this was written for")
        for fast in (True, False):
            parent = tracer.start_span("parent")
            parent_context = trace.set_span_in_context(parent)
            if fast:
                child = written.start("child", parent_context, start, None)
                written.set_attributes(child, end)
            else:
                child = tracer.start_span("child", parent_context, attributes=start)
                child.set_attributes(end)
            child.end()
            parent.end()
        return [_exported(span) for span in exporter.get_finished_spans()[0:2]], [
            _exported(span) for span in exporter.get_finished_spans()[2:4]
        ]
    finally:
        provider.shutdown()


def _exported(span: Any) -> tuple:
    return (span.name, list(span.attributes.items()), span.dropped_attributes, span.kind)


def drops_unsampled_children(tracer: Any) -> bool:
    """Whether the tracer's sampler drops every span whose local parent was not sampled.

    True for the SDK's always-off sampler and for a parent-based one whose
    delegate for such spans is always-off (the default, per-flow ratios
    included): such spans are then not made at all. Read from the SDK's own
    sampler objects; any other tracer or sampler is asked span by span.
    """
    from opentelemetry.sdk.trace.sampling import Decision, ParentBased, StaticSampler

    sampler = getattr(tracer, "sampler", None)
    if isinstance(sampler, ParentBased):
        sampler = getattr(sampler, "_local_parent_not_sampled", None)
    return isinstance(sampler, StaticSampler) and getattr(sampler, "_decision", None) is (
        Decision.DROP
    )
