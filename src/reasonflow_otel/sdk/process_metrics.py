"""Process resource metrics: a curated set from the contrib system-metrics instrumentation.

The contrib instrumentor reports dozens of host and process metrics by default,
several of them twice (``process.runtime.*`` copies). We start it with a short
list instead: process CPU time and utilization, memory usage, thread count,
open file descriptors and CPython GC. ``REASONFLOW_OTEL_PROCESS_METRICS=false``
turns them off; ``OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS`` and
``REASONFLOW_OTEL_DROP_METRICS`` remove single metrics (glob patterns), and
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=system_metrics`` is honoured too.

They are started at most once per process, whichever comes first:
``reasonflow_otel.instrument()``, our configurator under
``opentelemetry-instrument``, or our distro when ``opentelemetry-instrument``
reaches the contrib's own entry point (which would otherwise start the full
default set a second time). An app that started the instrumentor itself keeps
its own configuration.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from opentelemetry.instrumentation.system_metrics.environment_variables import (
    OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS,
)

from reasonflow_otel import semconv
from reasonflow_otel.sdk.views import is_dropped
from reasonflow_otel.settings import Settings, instrumentation_disabled, parse_names

# The contrib's entry-point name, as listed in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS.
ENTRY_POINT = "system_metrics"

# Instrument name -> the attribute values it reports (None: a single series).
CURATED: Mapping[str, tuple[str, ...] | None] = MappingProxyType(
    {
        semconv.METRIC_PROCESS_CPU_TIME: ("user", "system"),
        semconv.METRIC_PROCESS_CPU_UTILIZATION: None,
        semconv.METRIC_PROCESS_MEMORY_USAGE: None,
        semconv.METRIC_PROCESS_THREAD_COUNT: None,
        semconv.METRIC_PROCESS_OPEN_FDS: None,
        semconv.METRIC_GC_COLLECTIONS: None,
        semconv.METRIC_GC_COLLECTED_OBJECTS: None,
        semconv.METRIC_GC_UNCOLLECTABLE_OBJECTS: None,
    }
)

_lock = threading.Lock()


def process_metrics_config(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> dict[str, list[str] | None]:
    """The curated set minus what the exclusion variable or the drop setting names.

    The contrib applies its exclusion variable only to its own default set, so
    it is applied here to ours.
    """
    environ = os.environ if environ is None else environ
    excluded = parse_names(environ.get(OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS, ""))
    return {
        name: list(values) if values else None
        for name, values in CURATED.items()
        if not is_dropped(name, (*excluded, *settings.drop_metrics))
    }


def start_process_metrics(settings: Settings, meter_provider: Any = None) -> bool:
    """Start the curated process metrics unless turned off or already running.

    Returns whether this call started them.
    """
    with _lock:
        if _running() or not settings.process_metrics or instrumentation_disabled(ENTRY_POINT):
            return False
        config = process_metrics_config(settings)
        if not config:
            return False
        SystemMetricsInstrumentor(config=config).instrument(meter_provider=meter_provider)
        return True


def _running() -> bool:
    """Whether the instrumentor runs already, started by us, the app or another distro.

    It is a singleton whose ``__init__`` replaces the running instance's
    configuration, so it must not even be constructed again.
    """
    running = SystemMetricsInstrumentor._instance  # BaseInstrumentor's singleton slot
    return running is not None and running.is_instrumented_by_opentelemetry
