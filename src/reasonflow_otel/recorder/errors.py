"""How an exception that ends a run becomes telemetry: a failure, or control flow.

A failure is ``error.type`` on the span and the metric points, an ERROR status
and an exception event. Control flow is an exception an engine raises to stop a
run on purpose (a cancelled task, Ctrl-C, LangGraph's ``GraphInterrupt``): the
status stays UNSET and the span carries the attribute the engine declared for
it. ``sys.exit()`` and ``sys.exit(0)`` are a deliberate success: neither.
"""

from __future__ import annotations

from asyncio import CancelledError
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from reasonflow_otel import semconv
from reasonflow_otel.guard import safe_str


class ErrorMapping:
    """The exception types each engine declared as control flow, and what a failure records."""

    def __init__(self) -> None:
        self._control_flow: dict[type[BaseException], str] = {}
        self._types: tuple[type[BaseException], ...] = ()
        self.declare((CancelledError, KeyboardInterrupt), semconv.CANCELLED)

    def declare(self, exception_types: tuple[type[BaseException], ...], attribute: str) -> None:
        """Runs ended by these exceptions are stopped, not failed: ``attribute=True``."""
        for exception_type in exception_types:
            self._control_flow[exception_type] = attribute
        self._types = tuple(self._control_flow)

    def stop_attribute(self, error: BaseException) -> str | None:
        """The declared attribute when ``error`` is control flow, else None."""
        if not isinstance(error, self._types):
            return None
        for exception_type in type(error).__mro__:
            attribute = self._control_flow.get(exception_type)  # type: ignore[arg-type]
            if attribute is not None:
                return attribute
        return None

    def error_type(self, error: BaseException | None) -> str | None:
        """``error.type`` of a run ended by ``error``; None when it did not fail."""
        if error is None or isinstance(error, self._types) or is_clean_exit(error):
            return None
        return class_name(error)

    def mark(self, span: trace.Span, error: BaseException, error_type: str | None) -> None:
        """The span of a run ended by ``error``: stopped, cleanly exited, or failed."""
        stop_attribute = self.stop_attribute(error)
        if stop_attribute is not None:
            span.set_attribute(stop_attribute, True)
        elif not is_clean_exit(error):
            mark_failed(span, error, error_type)


def mark_failed(span: trace.Span, error: BaseException, error_type: str | None) -> None:
    message = safe_str(error)
    try:
        # exception.type as error.type names it (the SDK would module-qualify it)
        span.record_exception(
            error, attributes={semconv.EXCEPTION_TYPE: class_name(error)}, escaped=True
        )
    except Exception:  # the SDK prints the exception, and its __str__ may raise
        span.add_event(
            semconv.EVENT_EXCEPTION,
            {semconv.EXCEPTION_TYPE: class_name(error), semconv.EXCEPTION_MESSAGE: message},
        )
    span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}"))
    span.set_attribute(semconv.ERROR_TYPE, error_type or "_OTHER")


def error_attributes(error: BaseException) -> dict[str, Any]:
    """What an event says about an exception that did not end the run (a retried attempt)."""
    return {semconv.ERROR_TYPE: class_name(error), semconv.EXCEPTION_MESSAGE: safe_str(error)}


def class_name(error: BaseException) -> str:
    """How ``error.type`` and the exception event both name the exception's class."""
    return type(error).__qualname__


def is_clean_exit(error: BaseException) -> bool:
    """``sys.exit()``, ``sys.exit(0)``: a deliberate, successful exit is no failure."""
    return isinstance(error, SystemExit) and error.code in (None, 0)
