"""Getting telemetry out of the process: failed exports, lost spans, and the last flush.

Applies only to the providers reasonflow-otel installs (an application's own
providers are left as they are):

- An exception from an exporter's ``export()`` is reported once per kind instead
  of once per batch, and when the provider shuts down, the number of spans, log
  records and metric points that never reached the backend (failed exports and
  full-queue drops alike) is logged once, so an outage is never silent.
- Every exporter runs behind an :class:`ExportGate` that counts what it delivered
  and lost, for spans, metric points and log records alike, and that the bounded
  exit (``exit.py``) closes when waiting longer is pointless.
- SIGTERM (how containers and process managers stop a program) ends a Python
  process without running ``atexit``. A handler flushes first, for at most
  :data:`FLUSH_SECONDS`, then does what the previous handler did: calls it, or
  lets SIGTERM end the process as before.
- ``multiprocessing`` children leave through ``os._exit()``, which skips
  ``atexit`` too; each flushes when its target returns. The SDK itself restarts
  its batch workers in forked children and drops the parent's queue there, so a
  child exports its own spans, once, over connections of its own (see
  :func:`reconnect_after_fork`). A child made with a bare ``os.fork()`` flushes
  at its normal exit, not when it leaves through ``os._exit()``.
- A ``multiprocessing`` child gets back the SIGTERM handler the app had, so
  ``terminate()`` keeps its meaning. A Python-level handler runs only when the
  main thread gets to it, and a pool worker is often blocked in a lock just as
  ``Pool.terminate()`` signals it: with our handler, such a worker could miss
  the signal and the pool's ``join()`` would hang. What a terminated child had
  not exported yet is lost (``close()`` and ``join()`` a pool to keep it).
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any, Protocol, TypeVar

from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from reasonflow_otel.guard import report_internal_error
from reasonflow_otel.sdk.dropped import EXPORT_FAILED, QUEUE_FULL, count_queue_drops, track
from reasonflow_otel.sdk.exit import exit_began

_logger = logging.getLogger(__name__)

# The longest a SIGTERM or a multiprocessing child's exit waits for the last flush.
FLUSH_SECONDS = 5.0


class Flushable(Protocol):
    def force_flush(self, timeout_millis: int = ...) -> bool: ...


_QUEUED = "dropped at a full queue or in a failed export"
# What is counted for each kind of exporter, and where it can be lost.
_UNITS = {
    "span": ("spans", _QUEUED),
    "log": ("log records", _QUEUED),
    "metric": ("metric points", "in a failed export"),
}


class ExportGate:
    """One exporter, what it delivered and lost, and a gate the exit deadline can close.

    Once closed, nothing more reaches the exporter: what is left fails at once and is
    counted as lost, instead of each batch waiting out retries (or making the
    exporter warn that it was shut down).
    """

    def __init__(self, name: str, kind: str, exporter: Any) -> None:
        self.name = name
        self.kind = kind  # "span", "metric" or "log"
        self.exporter = exporter
        self.delivered = 0
        self.lost = 0
        self._lock = threading.Lock()
        self._open = True
        self._shut_down = False
        self._reported = False

    def send(self, items: int, export: Callable[[], bool]) -> bool:
        """Run ``export`` (True when the items arrived) unless closed, and count them."""
        arrived = False
        if self._open:
            try:
                arrived = export()
            except Exception as error:
                if self._open:  # once closed, an export cut off midway may raise: expected
                    report_internal_error(f"the {self.name} {self.kind} exporter", error)
        with self._lock:
            if arrived:
                self.delivered += items
            else:
                self.lost += items
        return arrived

    def close(self) -> None:
        """Send nothing more; the exporter's retry waits and gRPC calls end at once."""
        self._open = False
        self.shutdown()

    def shutdown(self) -> None:
        """Shut the exporter down once, whoever asks first (the exit, the provider)."""
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
        self.exporter.shutdown()

    def report(self, produced: int, causes: Mapping[str, int] | None = None) -> None:
        """Log once how many of the ``produced`` items never arrived, and why if ``causes``
        says (unless the exporter itself warned that it drops them: one line, not two)."""
        with self._lock:
            if self._reported:
                return
            self._reported = True
            lost = produced - self.delivered
        if lost > 0 and not getattr(self.exporter, "said_what_it_drops", False):
            unit, where = _UNITS[self.kind]
            _logger.warning(
                "reasonflow-otel: %d of %d %s could not be delivered by the %s exporter "
                "(%s; export errors were logged when they happened)",
                lost,
                produced,
                unit,
                self.name,
                where if causes is None else _loss_causes(lost, causes),
            )


_CAUSES = {
    QUEUE_FULL: "dropped at a full queue",
    "already_shutdown": "ended after the shutdown",
    EXPORT_FAILED: "in failed exports",
}


def _loss_causes(lost: int, causes: Mapping[str, int]) -> str:
    """``12 dropped at a full queue, 28 in failed exports``; the rest was still queued."""
    parts = [f"{count} {_CAUSES.get(cause, cause)}" for cause, count in causes.items() if count]
    unexplained = lost - sum(causes.values())
    if unexplained > 0:
        parts.append(f"{unexplained} still queued at the end")
    return ", ".join(parts)


class _Gated:
    """What every counting exporter passes straight to the exporter behind its gate."""

    gate: ExportGate

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.gate.exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.gate.shutdown()


class CountingSpanExporter(_Gated, SpanExporter):
    """Wraps an exporter: its failures are reported once per kind, its spans counted."""

    def __init__(self, name: str, exporter: SpanExporter) -> None:
        self.gate = ExportGate(name, "span", exporter)

    @property
    def name(self) -> str:
        return self.gate.name

    @property
    def lost_spans(self) -> int:
        return self.gate.lost

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        exporter = self.gate.exporter
        if self.gate.send(len(spans), lambda: exporter.export(spans) is SpanExportResult.SUCCESS):
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE


class CountingLogExporter(_Gated, LogRecordExporter):
    """Wraps a log record exporter: its failures are reported once per kind, records counted."""

    def __init__(self, name: str, exporter: LogRecordExporter) -> None:
        self.gate = ExportGate(name, "log", exporter)

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        exporter = self.gate.exporter
        succeeded = LogRecordExportResult.SUCCESS
        if self.gate.send(len(batch), lambda: exporter.export(batch) is succeeded):
            return LogRecordExportResult.SUCCESS
        return LogRecordExportResult.FAILURE


class _ReportsLoss:
    """A batch processor that counts what it is given and, at its shutdown, reports once
    what never arrived. Items are counted with ``next()`` on an ``itertools.count``: one
    C call, atomic under the GIL, so no lock on the application's threads."""

    exporter: CountingSpanExporter | CountingLogExporter

    def _start_counting(self) -> None:
        self._produced = itertools.count()

    def _count_one(self) -> None:
        next(self._produced)

    def dropped(self) -> dict[str, int] | None:
        """Items lost so far by cause, where the kind of item counts them (None: unknown)."""
        return None

    def shutdown(self) -> None:
        try:
            super().shutdown()  # type: ignore[misc]
        finally:
            # Items so far (this read adds one afterwards).
            self.exporter.gate.report(next(self._produced), self.dropped())


class DeliveryReportingSpanProcessor(_ReportsLoss, BatchSpanProcessor):
    """The SDK's batch processor, reporting at shutdown every sampled span that never arrived.

    A span is lost in a failed export or, while the backend is slow or down, at
    the full queue (which the SDK only logs, at most every 20 s).
    """

    def __init__(self, name: str, exporter: SpanExporter, **options: Any) -> None:
        self.name = name
        self.exporter = CountingSpanExporter(name, exporter)
        BatchSpanProcessor.__init__(self, self.exporter, **options)
        self._start_counting()
        self._queue_drops = count_queue_drops(self._batch_processor)
        track(self)  # its losses are reported in reasonflow.spans.dropped

    def dropped(self) -> dict[str, int]:
        """Spans lost so far, by ``error.type``: queue_full, already_shutdown, export_failed."""
        causes = self._queue_drops.snapshot() if self._queue_drops is not None else {}
        causes[EXPORT_FAILED] = self.exporter.lost_spans
        return causes

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            self._count_one()
        super().on_end(span)


class DeliveryReportingLogProcessor(_ReportsLoss, BatchLogRecordProcessor):
    """The SDK's batch log processor, reporting at shutdown every record that never arrived."""

    def __init__(self, name: str, exporter: LogRecordExporter) -> None:
        self.exporter = CountingLogExporter(name, exporter)
        BatchLogRecordProcessor.__init__(self, self.exporter)
        self._start_counting()

    def on_emit(self, log_record: Any) -> None:
        self._count_one()
        super().on_emit(log_record)


class CountingMetricExporter(MetricExporter):
    """Wraps a metric exporter: failures reported once per kind, data points counted, and
    the points that never arrived reported when the reader shuts it down."""

    def __init__(self, name: str, exporter: MetricExporter) -> None:
        super().__init__(
            preferred_temporality=exporter._preferred_temporality,
            preferred_aggregation=exporter._preferred_aggregation,
        )
        self.gate = ExportGate(name, "metric", exporter)

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        exporter = self.gate.exporter

        def export() -> bool:
            result = exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            return result is MetricExportResult.SUCCESS

        if self.gate.send(_data_points(metrics_data), export):
            return MetricExportResult.SUCCESS
        return MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.gate.exporter.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        try:
            self.gate.shutdown()
        finally:
            self.gate.report(self.gate.delivered + self.gate.lost)


def _data_points(metrics_data: MetricsData) -> int:
    return sum(
        len(metric.data.data_points)
        for resource_metrics in metrics_data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    )


ExporterT = TypeVar("ExporterT")


def reconnect_after_fork(exporter: ExporterT) -> ExporterT:
    """Have a forked child drop the connections ``exporter`` inherited; returns it.

    The OTLP HTTP exporters keep connections alive. A child that reused them
    would interleave its requests with the parent's on the same sockets, and the
    backend would read corrupt messages. Closing the child's copies leaves the
    parent's connections intact; the transport reconnects on its next request.
    """
    # The SDK's HTTP exporters (1.45) send through exporter._client._transport.
    transport = getattr(getattr(exporter, "_client", None), "_transport", None)
    close = getattr(transport, "close", None)
    if callable(close) and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=close)
    return exporter


def flush(providers: Sequence[Flushable], timeout_seconds: float = FLUSH_SECONDS) -> bool:
    """Flush each provider, waiting at most ``timeout_seconds`` in all.

    The flush runs on a helper thread: the SDK's ``force_flush`` does not honour
    its timeout, and a slow backend must not hold a terminating process.
    """
    done = threading.Event()

    def flush_all() -> None:
        for provider in providers:
            try:
                provider.force_flush(int(timeout_seconds * 1000))
            except Exception as error:
                report_internal_error("flushing telemetry", error)
        done.set()

    threading.Thread(target=flush_all, name="reasonflow-otel-flush", daemon=True).start()
    return done.wait(timeout_seconds)


def flush_before_exit(providers: Sequence[Flushable]) -> None:
    """Flush ``providers`` on SIGTERM and when a multiprocessing child ends."""
    last_flush = _LastFlush(providers)
    _last_flushes.append(last_flush)  # multiprocessing holds it only weakly
    last_flush.install()


class _LastFlush:
    """The flush that runs when the process is told to end."""

    def __init__(self, providers: Sequence[Flushable]) -> None:
        self._providers = tuple(providers)
        self._previous: Any = signal.SIG_DFL

    def install(self) -> None:
        from multiprocessing import util

        util.register_after_fork(self, _LastFlush._in_child)
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set signal handlers
        self._previous = signal.getsignal(signal.SIGTERM)
        if self._previous is not None and self._previous != signal.SIG_IGN:
            # None: set outside Python; SIG_IGN: SIGTERM does not end this process.
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> Any:
        if not exit_began():  # else the exit is already flushing: end at once
            flush(self._providers)
        if callable(self._previous):
            return self._previous(signum, frame)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # end the way SIGTERM would have
        return None

    def _in_child(self) -> None:
        """Runs in each multiprocessing child after fork, before its target."""
        from multiprocessing import util

        util.Finalize(self, flush, args=(self._providers,), exitpriority=0)
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._previous)


_last_flushes: list[_LastFlush] = []
