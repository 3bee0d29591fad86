"""Getting telemetry out of the process: failed exports, lost spans, and the last flush.

Applies only to the providers reasonflow-otel installs (an application's own
providers are left as they are):

- Every span exporter runs behind a :class:`DeliveryReportingSpanProcessor`: an
  exception from ``export()`` is reported once per kind instead of once per
  batch, and when the provider shuts down, the number of sampled spans that
  never reached the backend (failed exports and full-queue drops alike) is
  logged once, so an outage is never silent.
- Interpreter exit flushes through the SDK's own ``atexit`` shutdown.
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
from collections.abc import Sequence
from types import FrameType
from typing import Any, Protocol, TypeVar

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from reasonflow_otel.guard import report_internal_error

_logger = logging.getLogger(__name__)

# The longest a SIGTERM or a multiprocessing child's exit waits for the last flush.
FLUSH_SECONDS = 5.0


class Flushable(Protocol):
    def force_flush(self, timeout_millis: int = ...) -> bool: ...


class CountingSpanExporter(SpanExporter):
    """Wraps an exporter: its failures are reported once per kind, its spans counted."""

    def __init__(self, name: str, exporter: SpanExporter) -> None:
        self.name = name
        self._exporter = exporter
        self._lock = threading.Lock()
        self.delivered_spans = 0
        self.lost_spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._exporter.export(spans)
        except Exception as error:
            report_internal_error(f"the {self.name} span exporter", error)
            result = SpanExportResult.FAILURE
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.delivered_spans += len(spans)
            else:
                self.lost_spans += len(spans)
        return result

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._exporter.shutdown()


class DeliveryReportingSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, reporting at shutdown every sampled span that never arrived.

    A span is lost in a failed export or, while the backend is slow or down, at
    the full queue (which the SDK only logs, at most every 20 s). Sampled spans
    are counted as they end with ``next()`` on an ``itertools.count``: one C call,
    atomic under the GIL, so no lock on the application's threads.
    """

    def __init__(self, name: str, exporter: SpanExporter, **options: Any) -> None:
        self.exporter = CountingSpanExporter(name, exporter)
        super().__init__(self.exporter, **options)
        self._ended = itertools.count()
        self._report_lock = threading.Lock()
        self._reported = False

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            next(self._ended)
        super().on_end(span)

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            self._report_lost_spans()

    def _report_lost_spans(self) -> None:
        """Once, at the first shutdown (the SDK may shut a processor down again at exit)."""
        with self._report_lock:
            if self._reported:
                return
            self._reported = True
            ended = next(self._ended)  # spans ended so far (this read adds one afterwards)
            lost = ended - self.exporter.delivered_spans
            if lost > 0:
                _logger.warning(
                    "reasonflow-otel: %d of %d spans could not be delivered by the %s exporter "
                    "(dropped at a full queue or in a failed export; export errors were "
                    "logged when they happened)",
                    lost,
                    ended,
                    self.exporter.name,
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
