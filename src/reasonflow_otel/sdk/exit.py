"""A bounded exit: the process ends within the export timeout, backend or no backend.

At interpreter exit the SDK shuts its providers down one after another. A batch
processor exports what is still queued batch by batch, each batch waiting up to
the exporter's timeout (retrying a refused connection, or waiting on a backend
that accepts and never answers), and a metric reader spends a timeout of its
own: with the backend gone, exit takes the timeout several times over.

Here the providers reasonflow-otel installed are shut down at exit all at once,
each by its own thread, under one deadline: the longest export timeout. If they are
not done by then, every exporter gate is closed (see
:class:`~reasonflow_otel.sdk.delivery.ExportGate`): retry waits and gRPC calls
end at once, what is left fails at once and is counted as lost, and exit goes on
after at most :data:`UNWIND_SECONDS` more; a request already sent over HTTP ends
by its own timeout, in a daemon thread nobody waits for.

A backend that refuses connections (nothing listening, the Collector not
started) or whose name does not resolve will not answer a retry either: when
the shutdown is not done after :data:`PROBE_AFTER_SECONDS`, each OTLP endpoint
is probed with one connection attempt, and the gates of the unreachable ones are
closed at once. A healthy backend is flushed long before either.

Ctrl-C or SIGTERM during the wait ends the process at once, quietly, the way the
signal would have ended it.
"""

from __future__ import annotations

import atexit
import errno
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import urlsplit

from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_LOGS_TIMEOUT,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
)

from reasonflow_otel.guard import report_internal_error

# The SDK's OTLP exporters read their timeouts in seconds, 10 when unset.
DEFAULT_EXPORT_TIMEOUT = 10.0
# How long exit waits past the deadline for the shutdown to unwind once exports are ended.
UNWIND_SECONDS = 0.5
# A shutdown not done by then has to wait on the network: find out whether it can answer.
PROBE_AFTER_SECONDS = 0.2
_SIGNAL_TIMEOUTS = (
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_LOGS_TIMEOUT,
)
# Connection errors that mean "nobody will answer there", unlike a timeout.
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EINVAL}
)


class ShutsDown(Protocol):
    def shutdown(self) -> None: ...


class Closes(Protocol):
    def close(self) -> None: ...


_lock = threading.Lock()
_gates: list[tuple[Closes, str | None]] = []
_exit_began = threading.Event()


def end_by_exit_deadline(gate: Closes, endpoint: str | None = None) -> None:
    """Have ``gate`` closed if exit is still waiting at the deadline, or as soon as its
    OTLP ``endpoint`` (a URL, or host:port) turns out to refuse connections."""
    with _lock:
        _gates.append((gate, endpoint))


def bound_exit_time(providers: Sequence[ShutsDown]) -> None:
    """Shut ``providers`` down together at exit, waiting at most the export timeout."""
    if providers:
        _ExitWatchdog(providers, export_timeout()).start()


def exit_began() -> bool:
    """Whether the bounded exit is under way (a SIGTERM then ends the process at once)."""
    return _exit_began.is_set()


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


def connection_error(endpoint: str, timeout: float) -> OSError | None:
    """Why one TCP connection to the endpoint's host and port fails, or None if it opens.

    ``endpoint`` is a URL, or host:port as gRPC takes it.
    """
    address = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    try:
        port = address.port or (443 if address.scheme == "https" else 80)
        with socket.create_connection((address.hostname or "localhost", port), timeout):
            return None
    except ValueError as error:  # a port out of range
        return OSError(errno.EINVAL, str(error))
    except OSError as error:
        return error


def refuses_connections(endpoint: str, timeout: float) -> bool:
    """True when a connection is refused, the host is unreachable or its name does not
    resolve: retrying will not help. False when it opens or merely takes too long."""
    error = connection_error(endpoint, timeout)
    return isinstance(error, socket.gaierror) or (
        error is not None and error.errno in _UNREACHABLE_ERRNOS
    )


class _ExitWatchdog:
    """Shuts the providers down when exit begins; exit waits for them until the deadline.

    Its threads are started beforehand: Python 3.12 starts no thread once the
    interpreter exits.
    """

    def __init__(self, providers: Sequence[ShutsDown], deadline_seconds: float) -> None:
        self._providers = tuple(providers)
        self._deadline_seconds = deadline_seconds
        self._done: list[threading.Event] = []
        self._probe_now = threading.Event()

    def start(self) -> None:
        self._start_threads()
        for provider in self._providers:
            # The SDK's own exit handler would shut each down again, one after another.
            atexit.unregister(provider.shutdown)
        # Registered after the providers, so it runs before any other SDK exit handler.
        atexit.register(self._on_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._start_threads)

    def _start_threads(self) -> None:
        """Also in a forked child (threads do not survive fork()): without them, its exit
        would wait the whole deadline for shutdowns nobody runs, then lose its exports."""
        self._done = [threading.Event() for _ in self._providers]
        self._probe_now = threading.Event()
        for provider, done in zip(self._providers, self._done, strict=True):
            _daemon(self._shut_down_at_exit, provider, done)
        _daemon(self._probe_when_asked, self._probe_now)

    def _shut_down_at_exit(self, provider: ShutsDown, done: threading.Event) -> None:
        _exit_began.wait()
        try:
            provider.shutdown()
        except Exception as error:
            report_internal_error("shutting telemetry down at exit", error)
        finally:
            done.set()

    def _probe_when_asked(self, probe_now: threading.Event) -> None:
        probe_now.wait()
        with _lock:
            endpoints = list(dict.fromkeys(endpoint for _, endpoint in _gates if endpoint))
        for endpoint in endpoints:
            if refuses_connections(endpoint, self._deadline_seconds):
                _close_gates(endpoint)

    def _on_exit(self) -> None:
        _exit_began.set()
        try:
            self._wait_for_shutdown()
        except KeyboardInterrupt:
            _end_like(signal.SIGINT)

    def _wait_for_shutdown(self) -> None:
        started = time.monotonic()
        if self._all_done(started + PROBE_AFTER_SECONDS):
            return
        self._probe_now.set()
        if not self._all_done(started + self._deadline_seconds):
            _close_gates()
            self._all_done(time.monotonic() + UNWIND_SECONDS)  # lets them report what was lost

    def _all_done(self, deadline: float) -> bool:
        return all(done.wait(max(deadline - time.monotonic(), 0.0)) for done in self._done)


def _daemon(target: Callable[..., None], *args: object) -> None:
    threading.Thread(target=target, args=args, name="reasonflow-otel-exit", daemon=True).start()


def _close_gates(endpoint: str | None = None) -> None:
    """Close the gates of ``endpoint``, or all of them."""
    with _lock:
        gates = [gate for gate, where in _gates if endpoint is None or where == endpoint]
    for gate in gates:
        try:
            gate.close()
        except Exception as error:
            report_internal_error("ending exports at the exit deadline", error)


def _end_like(signum: int) -> None:
    """End the process as ``signum`` would have, without a traceback."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # only if the signal did not end it
