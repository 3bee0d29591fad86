"""Our warnings reach stderr when no handler but OpenTelemetry's would show them to a person.

With no logging configured, Python prints warnings on stderr through its last-resort
handler, but only while no handler at all is found for a record. The logging
instrumentation puts OpenTelemetry's handler on the root logger, so from then on our
warnings (an export failing, spans dropped, a cardinality limit reached) would only go
to the log exporter: maybe the very one failing, and shut down at exit, perhaps before
the exit report is written. This handler, on our own package logger only, passes a
record to Python's last resort when every other handler it would reach is
OpenTelemetry's: the output Python gives without the instrumentation, never twice.
"""

from __future__ import annotations

import logging

PACKAGE_LOGGER = "reasonflow_otel"


class LastResortHandler(logging.Handler):
    """Python's last resort, also when the only handlers found are OpenTelemetry's."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        last_resort = logging.lastResort
        if last_resort is not None and not _shown_elsewhere(record):
            last_resort.handle(record)


def _shown_elsewhere(record: logging.LogRecord) -> bool:
    """Whether a handler other than ours and OpenTelemetry's takes the record."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        for handler in logger.handlers:
            if record.levelno >= handler.level and not _silent_to_people(handler):
                return True
        if not logger.propagate:
            return False
        logger = logger.parent  # type: ignore[assignment]
    return False


def _silent_to_people(handler: logging.Handler) -> bool:
    return isinstance(handler, LastResortHandler) or type(handler).__module__.startswith(
        "opentelemetry."
    )


def install() -> None:
    """Once per process, on our package logger (the application's loggers are not touched)."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    if not any(isinstance(handler, LastResortHandler) for handler in logger.handlers):
        logger.addHandler(LastResortHandler())
