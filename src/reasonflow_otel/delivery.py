"""Getting telemetry out of the process: failed exports, lost spans, and the last flush.

Applies only to the providers reasonflow-otel installs (an application's own
providers are left as they are):

- Every span exporter is wrapped in :class:`CountingSpanExporter`: an exception
  from ``export()`` is reported once per kind instead of once per batch, and the
  spans of each batch the backend did not take are counted. The count is logged
  when the provider shuts down, so an outage is never silent.
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

import logging
import os
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any, Protocol, TypeVar

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from reasonflow_otel.guard import report_internal_error

_logger = logging.getLogger(__name__)

# The longest a SIGTERM or a multiprocessing child's exit waits for the last flush.
FLUSH_SECONDS = 5.0


class Flushable(Protocol):
    def force_flush(self, timeout_millis: int = ...) -> bool: ...


class CountingSpanExporter(SpanExporter):
    """Wraps an exporter: failures are reported, and the spans they cost are counted."""

    def __init__(self, name: str, exporter: SpanExporter) -> None:
        self.name = name
        self._exporter = exporter
        self._lock = threading.Lock()
        self.lost_spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._exporter.export(spans)
        except Exception as error:
            report_internal_error(f"the {self.name} span exporter", error)
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            with self._lock:
                self.lost_spans += len(spans)
        return result

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        try:
            self._exporter.shutdown()
        finally:
            if self.lost_spans:
                _logger.warning(
                    "reasonflow-otel: %d spans could not be delivered by the %s exporter "
                    "(the errors were logged when they happened)",
                    self.lost_spans,
                    self.name,
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
