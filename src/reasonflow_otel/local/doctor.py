"""``reasonflow-otel doctor``: the configuration an instrumented program would get, checked.

It reads the same environment and settings the program reads, through the same functions
(exporter choice, sampler, settings, the preflight of ``OTEL_*`` values), installs nothing,
and lists the problems to fix (an endpoint nobody answers at, a value that does not parse, no
engine to instrument, and so on), apart from advice that is no failure (no service name).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from opentelemetry.environment_variables import OTEL_PROPAGATORS
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_DISTRO
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from reasonflow_otel import __version__
from reasonflow_otel.instrumentation import (
    ENGINES,
    engine_distribution,
    engine_instrumentor,
    engine_version,
)
from reasonflow_otel.local.store import generations, log_file_for
from reasonflow_otel.sdk import preflight
from reasonflow_otel.sdk.exit import connection_error
from reasonflow_otel.sdk.sampling import build_sampler
from reasonflow_otel.sdk.setup import LOCAL_FILE_EXPORTER, Signal, exporter_names
from reasonflow_otel.settings import Settings, instrumentation_disabled, load_settings

CONNECT_TIMEOUT = 2.0
_SIGNAL_ENDPOINTS: Mapping[Signal, str] = {
    "traces": OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    "metrics": OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    "logs": OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
}
_OTLP_EXPORTERS = ("otlp_proto_grpc", "otlp_proto_http")


@dataclass
class Diagnosis:
    facts: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # doctor exits with status 1
    advice: list[str] = field(default_factory=list)

    def add(self, label: str, value: str) -> None:
        self.facts.append((label, value))


def diagnose() -> Diagnosis:
    """Facts, advice and problems for the configuration in ``os.environ``."""
    diagnosis = Diagnosis()
    with _warnings_of("reasonflow_otel") as warnings:
        settings = load_settings()
        _check_sdk(diagnosis, settings)
    diagnosis.problems[:0] = [*preflight.REPAIRS, *warnings]
    _check_engines(diagnosis)
    _check_logging(diagnosis)
    _check_local_store(diagnosis, settings)
    _check_distro(diagnosis)
    return diagnosis


def _check_sdk(diagnosis: Diagnosis, settings: Settings) -> None:
    service = str(Resource.create().attributes.get(SERVICE_NAME, ""))
    if service.startswith("unknown_service"):
        diagnosis.add("service name", "not set: each program is named after its script or module")
        diagnosis.advice.append(
            "Set OTEL_SERVICE_NAME to name the service; without it, `python app.py` is `app`."
        )
    else:
        diagnosis.add("service name", service)
    if os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        diagnosis.problems.append("OTEL_SDK_DISABLED=true: nothing is recorded until it is unset.")
    _check_exporters(diagnosis)
    diagnosis.add("sampler", build_sampler(settings).get_description())
    diagnosis.add("propagators", os.environ.get(OTEL_PROPAGATORS) or "tracecontext,baggage")
    diagnosis.add("console tree", "on" if settings.console else "off")


def _check_exporters(diagnosis: Diagnosis) -> None:
    """Each signal's exporters, then each OTLP endpoint they use, tried once."""
    endpoints: dict[str, list[Signal]] = {}
    for signal in ("traces", "metrics", "logs"):
        try:
            names = exporter_names(signal)
        except RuntimeError as error:  # e.g. an unknown OTEL_EXPORTER_OTLP_PROTOCOL
            names = []
            diagnosis.problems.append(f"{signal} exporter: {error}")
        diagnosis.add(f"{signal} exporters", ", ".join(names) or "none")
        for name in names:
            if name in _OTLP_EXPORTERS:
                endpoints.setdefault(otlp_endpoint(signal, name), []).append(signal)
    for url, signals in endpoints.items():
        problem = connection_problem(url)
        for signal in signals:
            diagnosis.add(f"{signal} endpoint", f"{url} ({problem or 'answers'})")
        if problem:
            diagnosis.problems.append(
                f"Nothing answers at {url} ({problem}): start the Collector or backend, or fix "
                f"OTEL_EXPORTER_OTLP_ENDPOINT; until then {' and '.join(signals)} are dropped."
            )


def otlp_endpoint(signal: Signal, exporter: str) -> str:
    """The URL an OTLP exporter sends ``signal`` to, resolved as the SDK resolves it."""
    specific = os.environ.get(_SIGNAL_ENDPOINTS[signal])
    if specific:
        return specific
    base = os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
    if exporter == "otlp_proto_grpc":
        return base or "http://localhost:4317"
    return f"{(base or 'http://localhost:4318').rstrip('/')}/v1/{signal}"


def connection_problem(url: str) -> str | None:
    """Why a TCP connection to the URL's host and port fails, or None if it opens."""
    error = connection_error(url, CONNECT_TIMEOUT)
    return None if error is None else error.strerror or str(error)


def _check_engines(diagnosis: Diagnosis) -> None:
    instrumentors = {name: engine_instrumentor(name) for name in ENGINES}
    engines = {name: i for name, i in instrumentors.items() if engine_distribution(i)}
    states = [_engine_state(diagnosis, name, i) for name, i in engines.items()]
    diagnosis.add("engines", ", ".join(state for state, _ in states))
    if not any(usable for _, usable in states):
        diagnosis.problems.append(
            f"No workflow engine will be instrumented: install one ({', '.join(engines)}) "
            "or remove it from OTEL_PYTHON_DISABLED_INSTRUMENTATIONS."
        )


def _check_logging(diagnosis: Diagnosis) -> None:
    """Whether Python logging records are tied to spans (the ``logs`` extra)."""
    if importlib.util.find_spec("opentelemetry.instrumentation.logging") is None:
        state = "records not tied to spans (pip install 'reasonflow-otel[logs]')"
    elif instrumentation_disabled("logging"):
        state = "disabled"
    else:
        state = "records tied to the current span"
    diagnosis.add("logging", state)


def _engine_state(
    diagnosis: Diagnosis, engine: str, instrumentor: BaseInstrumentor
) -> tuple[str, bool]:
    """``pocketflow 0.0.3 (will be instrumented)`` and whether it will be."""
    installed_version = engine_version(instrumentor)
    if installed_version is None:
        return f"{engine} (not installed)", False
    installed = f"{engine} {installed_version}"
    conflict = get_dependency_conflicts(instrumentor.instrumentation_dependencies())
    if conflict is not None:
        diagnosis.problems.append(str(conflict))
        return f"{installed} (unsupported version)", False
    if instrumentation_disabled(engine):
        return f"{installed} (disabled)", False
    return f"{installed} (will be instrumented)", True


def _check_local_store(diagnosis: Diagnosis, settings: Settings) -> None:
    """The local files, when something is written there (no endpoint set)."""
    if LOCAL_FILE_EXPORTER not in exporter_names("traces") + exporter_names("logs"):
        return
    for label, path in (
        ("local trace file", settings.trace_file),
        ("local log file", log_file_for(settings.trace_file)),
    ):
        state = f"{path.stat().st_size:,} bytes" if path.is_file() else "not created yet"
        diagnosis.add(label, f"{path.absolute()} ({state})")
    rotated = len(generations(settings.trace_file)) - 1
    diagnosis.add(
        "rotation",
        f"at {settings.trace_file_max_bytes:,} bytes, {settings.trace_file_backups} rotated files "
        f"kept ({rotated} now)",
    )
    if not _writable(settings.trace_file):
        diagnosis.problems.append(
            f"{settings.trace_file.absolute()} cannot be written: point "
            f"{Settings.env_name('trace_file')} at a writable place."
        )


def _writable(path: Path) -> bool:
    """Whether the file can be written or created (its nearest existing ancestor allows it)."""
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return os.access(existing, os.W_OK)


def _check_distro(diagnosis: Diagnosis) -> None:
    distros = sorted(entry_point.name for entry_point in entry_points(group="opentelemetry_distro"))
    chosen = os.environ.get(OTEL_PYTHON_DISTRO, "")
    diagnosis.add("distro", f"reasonflow-otel {__version__} (installed: {', '.join(distros)})")
    if len(distros) > 1 and chosen != "reasonflow":
        diagnosis.problems.append(
            f"Several distros are installed ({', '.join(distros)}): set "
            f"{OTEL_PYTHON_DISTRO}=reasonflow so opentelemetry-instrument uses this one."
        )


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().removeprefix("reasonflow-otel: "))


@contextlib.contextmanager
def _warnings_of(logger_name: str) -> Iterator[list[str]]:
    """The warnings a logger (and its children) emit while the block runs, as problems."""
    handler = _Collect()
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def render_diagnosis(diagnosis: Diagnosis) -> Iterator[str]:
    width = max(len(label) for label, _ in diagnosis.facts)
    yield from (f"{label.ljust(width)}  {value}" for label, value in diagnosis.facts)
    yield ""
    if diagnosis.advice:
        yield "Advice:"
        yield from (f"  - {advice}" for advice in diagnosis.advice)
        yield ""
    if not diagnosis.problems:
        yield "Nothing to fix."
        return
    yield "What to fix:"
    yield from (
        f"  {number}. {problem}" for number, problem in enumerate(diagnosis.problems, start=1)
    )
