"""OpenTelemetry for Python workflow engines, in one line.

    import reasonflow_otel
    reasonflow_otel.instrument()

configures the OpenTelemetry SDK (unless the application already did) and
instruments every supported workflow engine that is installed. It is the
one-line equivalent of running the program under ``opentelemetry-instrument``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

import reasonflow_otel.sdk.preflight  # noqa: F401  (first: checks OTEL_* before the SDK reads them)
from reasonflow_otel import last_resort
from reasonflow_otel.decorators import node, step, workflow
from reasonflow_otel.guard import report_internal_error
from reasonflow_otel.instrumentation import ENGINES, engine_instrumentor, engine_version, threads
from reasonflow_otel.local.sdk_parts import sdk_parts
from reasonflow_otel.local.state import load_state
from reasonflow_otel.propagation import (
    child_environment,
    continue_trace,
    extract,
    inject,
)
from reasonflow_otel.sdk.setup import SdkSetup, start_telemetry
from reasonflow_otel.settings import (
    instrumentation_disabled,
    load_settings,
    reject_unknown_options,
)
from reasonflow_otel.version import __version__

last_resort.install()

__all__ = [
    "__version__",
    "child_environment",
    "continue_trace",
    "extract",
    "inject",
    "instrument",
    "instrumented_engines",
    "load_state",
    "node",
    "step",
    "uninstrument",
    "workflow",
]

_logger = logging.getLogger(__name__)

_lock = threading.Lock()
_active: list[BaseInstrumentor] = []
_setup: SdkSetup | None = None


def instrument(
    *,
    service_name: str | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    **options: Any,
) -> None:
    """Set up the SDK where the app has not, and instrument installed engines.

    ``options`` are the ``REASONFLOW_OTEL_*`` settings by field name (see
    ``reasonflow_otel.settings``); an unknown one raises ``TypeError``. Explicit
    providers are used as given and no SDK setup is done for them. Calling it
    again does nothing; errors are logged, never raised into the application.
    """
    global _setup
    reject_unknown_options(options)
    with _lock:
        if _active:
            return
        try:
            settings = load_settings(options)
            _setup = start_telemetry(settings, service_name, meter_provider, sdk_parts())
            providers = {
                "tracer_provider": tracer_provider or _setup.tracer_provider,
                "meter_provider": meter_provider or _setup.meter_provider,
            }
            for instrumentor in _installed_instrumentors():
                if instrumentor.is_instrumented_by_opentelemetry:
                    continue  # instrumented already, e.g. by opentelemetry-instrument
                instrumentor.instrument(settings=settings, **providers)
                if instrumentor.is_instrumented_by_opentelemetry:  # not on a version conflict
                    _active.append(instrumentor)
        except Exception as error:
            report_internal_error("instrument()", error)


def uninstrument() -> None:
    """Remove every wrapper ``instrument()`` installed; providers stay as they are."""
    with _lock:
        while _active:
            _active.pop().uninstrument()


def instrumented_engines() -> list[str]:
    """Names of the engines currently instrumented through :func:`instrument`."""
    with _lock:
        return [type(instrumentor).__name__ for instrumentor in _active]


def _installed_instrumentors() -> list[BaseInstrumentor]:
    """Thread context, logging (with the ``logs`` extra), then our engine instrumentors,
    minus the disabled ones.

    Threading comes first so that it is ours to undo here, not the engine
    instrumentors' (each brings it along when used alone).
    """
    instrumentors: list[BaseInstrumentor] = []
    if not instrumentation_disabled(threads.NAME):
        instrumentors.append(threads.ThreadingInstrumentor())
    logging_instrumentor = _logging_instrumentor()
    if logging_instrumentor is not None and not instrumentation_disabled("logging"):
        instrumentors.append(logging_instrumentor)  # logging records -> OTel logs
    for name in ENGINES:
        if instrumentation_disabled(name):
            continue
        instrumentor = engine_instrumentor(name)
        if engine_version(instrumentor) is not None:
            instrumentors.append(instrumentor)
    return instrumentors


def _logging_instrumentor() -> BaseInstrumentor | None:
    """The contrib logging instrumentation, if installed (the ``logs`` extra brings it)."""
    try:
        from opentelemetry.instrumentation.logging import LoggingInstrumentor
    except ImportError:
        return None
    return LoggingInstrumentor()
