"""OpenTelemetry for Python workflow engines, in one line.

    import reasonflow_otel
    reasonflow_otel.instrument()

configures the OpenTelemetry SDK (unless the application already did) and
instruments every supported workflow engine that is installed. It is the
one-line equivalent of running the program under ``opentelemetry-instrument``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

import reasonflow_otel.sdk.preflight  # noqa: F401  (first: checks OTEL_* before the SDK reads them)
from reasonflow_otel.decorators import node, step, workflow
from reasonflow_otel.guard import report_internal_error
from reasonflow_otel.local.state import load_state
from reasonflow_otel.propagation import (
    child_environment,
    continue_trace,
    extract,
    inject,
)
from reasonflow_otel.sdk.setup import SdkSetup, start_telemetry
from reasonflow_otel.settings import instrumentation_disabled, load_settings
from reasonflow_otel.version import __version__

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

# Engine module -> its instrumentor; an engine counts only when it is importable.
ENGINES = {
    "pocketflow": "reasonflow_otel.instrumentation.pocketflow:PocketFlowInstrumentor",
    "burr": "reasonflow_otel.instrumentation.burr:BurrInstrumentor",
    "reasonflow_methods": "reasonflow_otel.instrumentation.methods:MethodsInstrumentor",
}
# Instrumentors that need no engine installed (by-name tracing and the decorators).
ENGINE_FREE = frozenset({"reasonflow_methods"})

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
    ``reasonflow_otel.settings``). Explicit providers are used as given and no
    SDK setup is done for them. Calling it again does nothing; errors are
    logged, never raised into the application.
    """
    global _setup
    with _lock:
        if _active:
            return
        try:
            settings = load_settings(options)
            _setup = start_telemetry(settings, service_name, meter_provider)
            providers = {
                "tracer_provider": tracer_provider or _setup.tracer_provider,
                "meter_provider": meter_provider or _setup.meter_provider,
            }
            for instrumentor in _installed_instrumentors():
                if instrumentor.is_instrumented_by_opentelemetry:
                    continue  # instrumented already, e.g. by opentelemetry-instrument
                instrumentor.instrument(settings=settings, **providers)
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
    """Threading and logging, then our engine instrumentors, minus the disabled ones.

    Threading comes first so that it is ours to undo here, not the engine
    instrumentors' (each brings it along when used alone).
    """
    instrumentors: list[BaseInstrumentor] = []
    if not instrumentation_disabled("threading"):
        from opentelemetry.instrumentation.threading import ThreadingInstrumentor

        instrumentors.append(ThreadingInstrumentor())
    if not instrumentation_disabled("logging"):
        from opentelemetry.instrumentation.logging import LoggingInstrumentor

        instrumentors.append(LoggingInstrumentor())  # logging records -> OTel logs
    for engine, target in ENGINES.items():
        if instrumentation_disabled(engine) or not _engine_installed(engine):
            continue
        module_name, _, class_name = target.partition(":")
        instrumentors.append(getattr(importlib.import_module(module_name), class_name)())
    return instrumentors


def _engine_installed(engine: str) -> bool:
    return engine in ENGINE_FREE or importlib.util.find_spec(engine) is not None
