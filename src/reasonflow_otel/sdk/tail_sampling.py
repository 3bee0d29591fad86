"""Tracking policies: which finished traces are exported, decided in this process.

A trace's spans are held until its *local root* (the span with no parent, or a
remote one) ends; the whole local trace is then known, so the decision needs no
Collector. A trace is exported when any listed rule keeps it:

- ``errors``: a span of the trace has status ERROR;
- ``slow``: the local root lasted at least ``REASONFLOW_OTEL_SLOW_TRACE_SECONDS``;
- ``ratio``: its trace id falls in ``REASONFLOW_OTEL_KEEP_RATIO``, the same
  deterministic test as the SDK's ``TraceIdRatioBased`` sampler.

Memory is bounded: at most ``REASONFLOW_OTEL_KEEP_BUFFER_SPANS`` spans wait for
a decision; past that the oldest undecided trace's spans are dropped and counted.
Decisions are remembered for the last :data:`DECISIONS_REMEMBERED` traces, so a
span ending after its root (a thread that outlives it) follows its trace.
Only export is affected: the recorder's metrics count every run.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import StatusCode

from reasonflow_otel.settings import KEEP_ALL, Settings

_logger = logging.getLogger(__name__)

DECISIONS_REMEMBERED = 4096
_NANOSECONDS = 1_000_000_000


class TailSamplingSpanProcessor(SpanProcessor):
    """Holds each trace's spans until its local root ends, then exports or drops them all.

    The decision is taken on the thread that ends the local root; exporting is
    left to the wrapped processors (the SDK's batch processors).
    """

    def __init__(
        self,
        processors: Sequence[SpanProcessor],
        rules: Sequence[str],
        *,
        slow_seconds: float = 1.0,
        ratio: float = 0.0,
        max_spans: int = 5_000,
    ) -> None:
        self._processors = tuple(processors)
        self._keep_errors = "errors" in rules
        self._slow_ns = int(slow_seconds * _NANOSECONDS) if "slow" in rules else None
        self._ratio_bound = TraceIdRatioBased.get_bound_for_rate(ratio) if "ratio" in rules else 0
        self._max_spans = max_spans
        self._lock = threading.Lock()
        self._pending: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._decided: OrderedDict[int, bool] = OrderedDict()
        self.held_spans = 0
        self.kept_traces = 0
        self.dropped_traces = 0
        self.dropped_spans = 0

    # --- SpanProcessor -----------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for processor in self._processors:
            processor.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            self._export([span])  # not sampled: the exporting processors skip it themselves
            return
        if span.parent is None or span.parent.is_remote:
            self._local_root_ended(span)
            return
        with self._lock:
            decided = self._decided.get(context.trace_id)
            if decided is None:
                self._hold(context.trace_id, span)
                return
        if decided:
            self._export([span])

    def shutdown(self) -> None:
        with self._lock:
            self.dropped_spans += self.held_spans  # undecided at exit: their roots never ended
            self._pending.clear()
            self.held_spans = 0
        if self.dropped_spans:
            _logger.warning(
                "reasonflow-otel: tail sampling dropped %d spans that could not be held "
                "(REASONFLOW_OTEL_KEEP_BUFFER_SPANS=%d) or whose trace never ended",
                self.dropped_spans,
                self._max_spans,
            )
        for processor in self._processors:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flushes what was decided; spans still waiting for their root stay held."""
        return all(processor.force_flush(timeout_millis) for processor in self._processors)

    # --- Holding and deciding --------------------------------------------------------------

    def _hold(self, trace_id: int, span: ReadableSpan) -> None:
        """Under the lock: keep ``span`` for later, making room by dropping the oldest trace."""
        if self.held_spans >= self._max_spans:
            _, dropped = self._pending.popitem(last=False)
            self.held_spans -= len(dropped)
            self.dropped_spans += len(dropped)
        self._pending.setdefault(trace_id, []).append(span)
        self.held_spans += 1

    def _local_root_ended(self, root: ReadableSpan) -> None:
        trace_id = root.context.trace_id
        with self._lock:
            spans = self._pending.pop(trace_id, [])
            self.held_spans -= len(spans)
            spans.append(root)
            keep = self._keeps(root, spans)
            self._remember(trace_id, keep)
            if keep:
                self.kept_traces += 1
            else:
                self.dropped_traces += 1
        if keep:
            self._export(spans)

    def _keeps(self, root: ReadableSpan, spans: list[ReadableSpan]) -> bool:
        if self._keep_errors and any(s.status.status_code is StatusCode.ERROR for s in spans):
            return True
        if self._slow_ns is not None and _duration_ns(root) >= self._slow_ns:
            return True
        return root.context.trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self._ratio_bound

    def _remember(self, trace_id: int, keep: bool) -> None:
        self._decided[trace_id] = keep
        if len(self._decided) > DECISIONS_REMEMBERED:
            self._decided.popitem(last=False)

    def _export(self, spans: list[ReadableSpan]) -> None:
        for span in spans:
            for processor in self._processors:
                processor.on_end(span)


def apply_tracking_policy(
    processors: list[SpanProcessor], settings: Settings
) -> list[SpanProcessor]:
    """``processors`` behind one tail-sampling processor, unless every trace is kept."""
    if settings.keep_traces == (KEEP_ALL,) or not processors:
        return processors
    return [
        TailSamplingSpanProcessor(
            processors,
            settings.keep_traces,
            slow_seconds=settings.slow_trace_seconds,
            ratio=settings.keep_ratio,
            max_spans=settings.keep_buffer_spans,
        )
    ]


def _duration_ns(span: ReadableSpan) -> int:
    return (span.end_time or 0) - (span.start_time or 0)
