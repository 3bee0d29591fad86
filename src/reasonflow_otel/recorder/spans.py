"""Spans started and given attributes through the API's calls: what the recorder uses
unless its fast paths hand it the SDK-specific writer (``fast_paths.spans.SdkSpans``,
a subclass)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Tracer


class ApiSpans:
    """Starts spans and sets attributes the recorder made."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    @staticmethod
    def prepare(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
        """``attributes``, made ready to start many spans with (never changed afterwards)."""
        return attributes

    def start(
        self,
        name: str,
        parent_context: Context,
        attributes: Mapping[str, Any],
        links: Sequence[Link] | None,
        local_sampled_parent: bool = False,
        more: Mapping[str, Any] | None = None,
    ) -> Span:
        """An INTERNAL span of ``parent_context`` with ``attributes`` then ``more``, started;
        ``local_sampled_parent``: the caller knows its parent is a sampled span of ours."""
        merged = {**attributes, **more} if more else attributes
        return self._tracer.start_span(
            name, parent_context, SpanKind.INTERNAL, attributes=merged, links=links
        )

    @staticmethod
    def set_attributes(span: Span, attributes: Mapping[str, Any]) -> None:
        """``span.set_attributes(attributes)``."""
        span.set_attributes(attributes)
