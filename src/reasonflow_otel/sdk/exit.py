"""A bounded exit: the process ends within the export timeout, backend or no backend.

At interpreter exit the SDK shuts its providers down one after another. A batch
processor exports what is still queued batch by batch, each batch waiting up to
the exporter's timeout (retrying a refused connection, or waiting on a backend
that accepts and never answers) and the shutdown waits up to 30 s for it. With
the backend gone, exit takes the batches times the timeout, for each provider.

Here the batching providers (spans, logs) are shut down at exit by a watchdog
thread, started beforehand because Python 3.12 starts no thread once the
interpreter exits, while exit waits for it at most the configured export
timeout. If it is not done by then, the exporters :func:`configure_sdk` made are
shut down: their retry waits and gRPC calls end at once, what is left fails at
once (and is counted as lost), and exit goes on after at most
:data:`UNWIND_SECONDS` more; a request already sent over HTTP ends by its own
timeout, in a daemon thread nobody waits for. The meter provider keeps the
SDK's own exit handler: it exports once, within the timeout. A healthy backend
is flushed long before the deadline.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Sequence
from typing import Protocol, TypeVar

from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_LOGS_TIMEOUT,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
)
from opentelemetry.sdk.metrics.export import MetricReader

from reasonflow_otel.guard import report_internal_error

# The SDK's OTLP exporters read their timeouts in seconds, 10 when unset.
DEFAULT_EXPORT_TIMEOUT = 10.0
# How long exit waits past the deadline for the shutdown to unwind once exports are ended.
UNWIND_SECONDS = 0.5
_SIGNAL_TIMEOUTS = (
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_LOGS_TIMEOUT,
)


class ShutsDown(Protocol):
    def shutdown(self) -> None: ...


ShutsDownT = TypeVar("ShutsDownT", bound=ShutsDown)

_lock = threading.Lock()
_exporters: list[ShutsDown] = []


def end_by_exit_deadline(exporter: ShutsDownT) -> ShutsDownT:
    """Have ``exporter`` shut down if exit is still waiting at the deadline; returns it.

    A metric reader that serves its own endpoint (Prometheus) sends nothing, so it
    is left to the meter provider.
    """
    if not isinstance(exporter, MetricReader):
        with _lock:
            _exporters.append(exporter)
    return exporter


def bound_exit_time(batching_providers: Sequence[ShutsDown]) -> None:
    """Shut ``batching_providers`` down at exit, waiting at most the export timeout."""
    if batching_providers:
        _ExitWatchdog(batching_providers, export_timeout()).start()


def export_timeout() -> float:
    """The longest export timeout configured for any signal, in seconds.

    Read the way the SDK's OTLP exporters read theirs: the signal's variable,
    else ``OTEL_EXPORTER_OTLP_TIMEOUT``, else 10.
    """
    return max(_seconds(os.environ.get(variable)) for variable in _SIGNAL_TIMEOUTS)


def _seconds(signal_timeout: str | None) -> float:
    text = signal_timeout or os.environ.get(OTEL_EXPORTER_OTLP_TIMEOUT)
    try:
        return float(text) if text else DEFAULT_EXPORT_TIMEOUT
    except ValueError:
        return DEFAULT_EXPORT_TIMEOUT


class _ExitWatchdog:
    """Runs the providers' shutdown when exit begins; exit waits for it until the deadline."""

    def __init__(self, providers: Sequence[ShutsDown], deadline_seconds: float) -> None:
        self._providers = tuple(providers)
        self._deadline_seconds = deadline_seconds
        self._exit_began = threading.Event()
        self._shut_down = threading.Event()

    def start(self) -> None:
        self._start_thread()
        # Registered after the providers, so it runs before the SDK's own exit handlers.
        atexit.register(self._on_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._restart_in_child)

    def _start_thread(self) -> None:
        threading.Thread(
            target=self._shut_down_at_exit, name="reasonflow-otel-exit", daemon=True
        ).start()

    def _restart_in_child(self) -> None:
        """Threads do not survive fork(): without this, a forked child's exit would wait
        the whole deadline for a watchdog that is not there, then end its exports unsent."""
        self._exit_began = threading.Event()
        self._shut_down = threading.Event()
        self._start_thread()

    def _shut_down_at_exit(self) -> None:
        self._exit_began.wait()
        for provider in self._providers:
            try:
                provider.shutdown()
            except Exception as error:
                report_internal_error("shutting telemetry down at exit", error)
        self._shut_down.set()

    def _on_exit(self) -> None:
        self._exit_began.set()
        if not self._shut_down.wait(self._deadline_seconds):
            _end_exports()
            self._shut_down.wait(UNWIND_SECONDS)  # lets the shutdown report what was lost


def _end_exports() -> None:
    with _lock:
        exporters = list(_exporters)
    for exporter in exporters:
        try:
            exporter.shutdown()
        except Exception as error:
            report_internal_error("ending exports at the exit deadline", error)
