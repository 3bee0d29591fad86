"""The parts of the SDK setup that belong to the local layer, handed to ``sdk.setup``.

The local OTLP JSON file (traces and logs), with the line on stderr saying where
traces go, and the console tree. The entry points hand them over as
``sdk.setup.Parts``, so the SDK layer imports nothing from here.
"""

from __future__ import annotations

import sys

from reasonflow_otel.instrumentation import ENGINES
from reasonflow_otel.local.console import ConsoleLogProcessor, ConsoleTreeProcessor
from reasonflow_otel.local.store import log_file_for
from reasonflow_otel.local.trace_file import LogFileExporter, TraceFileExporter
from reasonflow_otel.sdk.setup import Parts, Signal
from reasonflow_otel.settings import Settings, instrumentation_disabled


def sdk_parts() -> Parts:
    return Parts(
        local_file=local_file,
        console=ConsoleTreeProcessor,
        console_logs=ConsoleLogProcessor,
    )


def local_file(signal: Signal, settings: Settings) -> TraceFileExporter | LogFileExporter:
    """Our OTLP JSON lines exporter for ``signal``, writing to the local store."""
    limits = (settings.trace_file_max_bytes, settings.trace_file_backups)
    if signal == "logs":
        return LogFileExporter(log_file_for(settings.trace_file), *limits)
    if not _every_engine_disabled():
        print(
            f"reasonflow-otel: traces are written to {settings.trace_file.absolute()} "
            "(no backend needed; list them with `reasonflow-otel traces`)",
            file=sys.stderr,
        )
    return TraceFileExporter(settings.trace_file, *limits)


def _every_engine_disabled() -> bool:
    """``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names every engine (or ``*``): no workflow
    will be traced, so there is nothing to announce."""
    return all(instrumentation_disabled(engine) for engine in ENGINES)
