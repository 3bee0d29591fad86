"""OpenTelemetry SDK setup: providers, exporters, Views, sampler.

One code path serves both ``reasonflow_otel.instrument()`` and the
``opentelemetry-instrument`` configurator. Standard ``OTEL_*`` variables drive
it (exporters, endpoints, protocol, resource, sampler, export interval); the
SDK's stock configurator cannot install metric Views, so the providers are
built here.

An application that already set its own tracer, meter or logger provider keeps it:
nothing here replaces a provider, and nothing is added to the app's own.

What comes from the layers above (the local trace file, the console tree, the
names of our instrumentors) is handed in as :class:`Parts` by the entry points
(``reasonflow_otel.instrument()``, ``reasonflow_otel.distro``): ``sdk/`` imports
nothing from ``instrumentation/`` or ``local/``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal

from opentelemetry import _logs, metrics, trace
from opentelemetry.environment_variables import (
    OTEL_LOGS_EXPORTER,
    OTEL_METRICS_EXPORTER,
    OTEL_TRACES_EXPORTER,
)
from opentelemetry.sdk._configuration import (
    _get_exporter_entry_point,
    _get_exporter_names,
    _import_config_components,
)
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPERIMENTAL_RESOURCE_DETECTORS,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource, get_aggregated_resources
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from reasonflow_otel.propagation import continue_trace_from_environment
from reasonflow_otel.sdk.delivery import (
    CountingMetricExporter,
    DeliveryReportingLogProcessor,
    DeliveryReportingSpanProcessor,
    ExportGate,
    flush_before_exit,
    reconnect_after_fork,
)
from reasonflow_otel.sdk.dropped import observe_dropped_spans
from reasonflow_otel.sdk.exit import ShutsDown, bound_exit_time, end_by_exit_deadline
from reasonflow_otel.sdk.ids import ID_GENERATOR
from reasonflow_otel.sdk.process_metrics import start_process_metrics
from reasonflow_otel.sdk.sampling import build_sampler
from reasonflow_otel.sdk.service_name import name_unnamed_service
from reasonflow_otel.sdk.tail_sampling import apply_tracking_policy
from reasonflow_otel.sdk.views import build_views
from reasonflow_otel.settings import Settings

_logger = logging.getLogger(__name__)

Signal = Literal["traces", "metrics", "logs"]
_EXPORTER_VARIABLES = {
    "traces": OTEL_TRACES_EXPORTER,
    "metrics": OTEL_METRICS_EXPORTER,
    "logs": OTEL_LOGS_EXPORTER,
}
LOCAL_FILE_EXPORTER = "otlp_json_file"
_OTLP_DEFAULT_ENDPOINTS = {
    "otlp": "http://localhost:4317",
    "otlp_proto_grpc": "http://localhost:4317",
    "otlp_proto_http": "http://localhost:4318",
}


@dataclass(frozen=True)
class Parts:
    """What the setup builds from the layers above the SDK, handed in by an entry point."""

    # The local OTLP JSON lines file exporter for "traces" or "logs".
    local_file: Callable[[Signal, Settings], Any] | None = None
    # The console tree (a span processor), and the log processor that feeds it.
    console: Callable[[], SpanProcessor] | None = None
    console_logs: Callable[[Any], LogRecordProcessor] | None = None


@dataclass
class SdkSetup:
    """What :func:`configure_sdk` installed, for ``doctor`` and the tests."""

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    installed_tracer_provider: bool = False
    installed_meter_provider: bool = False
    trace_exporters: list[str] = field(default_factory=list)
    metric_exporters: list[str] = field(default_factory=list)
    log_exporters: list[str] = field(default_factory=list)
    logger_provider: _logs.LoggerProvider | None = None
    installed_logger_provider: bool = False

    def installed_providers(self) -> dict[Signal, object]:
        """The providers this setup installed (not the application's), by signal."""
        candidates: list[tuple[Signal, bool, object]] = [
            ("traces", self.installed_tracer_provider, self.tracer_provider),
            ("metrics", self.installed_meter_provider, self.meter_provider),
            ("logs", self.installed_logger_provider, self.logger_provider),
        ]
        return {signal: provider for signal, ours, provider in candidates if ours}


def start_telemetry(
    settings: Settings,
    service_name: str | None = None,
    meter_provider: Any = None,
    parts: Parts = Parts(),
) -> SdkSetup:
    """What both entry points (``instrument()``, the configurator) do at startup.

    The SDK providers where the app has none, the trace this process was started
    in (``TRACEPARENT``), and the curated process metrics.
    """
    setup = configure_sdk(settings, service_name, parts)
    continue_trace_from_environment()
    start_process_metrics(settings, meter_provider or setup.meter_provider)
    if setup.installed_tracer_provider and setup.trace_exporters:  # our processors count drops
        observe_dropped_spans(meter_provider or setup.meter_provider)
    return setup


def configure_sdk(
    settings: Settings, service_name: str | None = None, parts: Parts = Parts()
) -> SdkSetup:
    """Install SDK providers where the application has none of its own."""
    setup = SdkSetup(trace.get_tracer_provider(), metrics.get_meter_provider())
    if os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return setup
    resource = _resource(service_name)
    console = None
    if isinstance(setup.tracer_provider, trace.ProxyTracerProvider):
        setup.tracer_provider = _tracer_provider(settings, resource, setup.trace_exporters, parts)
        if settings.console and parts.console is not None:
            console = parts.console()
            setup.tracer_provider.add_span_processor(console)
        trace.set_tracer_provider(setup.tracer_provider)
        setup.installed_tracer_provider = True
    if _is_proxy_meter_provider(setup.meter_provider):
        setup.meter_provider = _meter_provider(settings, resource, setup.metric_exporters, parts)
        metrics.set_meter_provider(setup.meter_provider)
        setup.installed_meter_provider = True
    setup.logger_provider = _logs.get_logger_provider()
    if _is_proxy_logger_provider(setup.logger_provider):
        logger_provider = _logger_provider(settings, resource, setup.log_exporters, console, parts)
        if logger_provider is not None:
            _logs.set_logger_provider(logger_provider)
            setup.logger_provider = logger_provider
            setup.installed_logger_provider = True
    installed: list[ShutsDown] = list(setup.installed_providers().values())  # type: ignore[arg-type]
    if installed:
        flush_before_exit(installed)  # type: ignore[arg-type]
    bound_exit_time(installed)
    return setup


def _resource(service_name: str | None) -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``, then the argument; with no
    service name from any of them, the program's own name. Host and OS attributes under them."""
    attributes = {SERVICE_NAME: service_name} if service_name else {}
    return name_unnamed_service(_host_and_os().merge(Resource.create(attributes)))


def _host_and_os() -> Resource:
    """``host.*`` and ``os.*`` from the SDK's own detectors, unless the user chose detectors.

    Our Collector has no resource detection (its contrib processor does not build for us), so
    the process says which machine it runs on. ``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS`` set
    (even to ``otel`` alone) leaves the choice to the SDK.
    """
    if OTEL_EXPERIMENTAL_RESOURCE_DETECTORS in os.environ:
        return Resource.get_empty()
    detectors = [
        entry_point.load()()
        for name in ("host", "os")
        for entry_point in entry_points(group="opentelemetry_resource_detector", name=name)
    ]
    return get_aggregated_resources(detectors, Resource.get_empty())


def _tracer_provider(
    settings: Settings, resource: Resource, names: list[str], parts: Parts = Parts()
) -> TracerProvider:
    provider = TracerProvider(
        resource=resource, sampler=build_sampler(settings), id_generator=ID_GENERATOR
    )
    processors: list[SpanProcessor] = []
    for name, exporter in _exporters("traces", settings, parts):
        processor = DeliveryReportingSpanProcessor(name, exporter)
        _end_by_exit_deadline("traces", processor.exporter.gate)
        processors.append(processor)
        names.append(name)
    for processor in apply_tracking_policy(processors, settings):
        provider.add_span_processor(processor)
    return provider


def _meter_provider(
    settings: Settings, resource: Resource, names: list[str], parts: Parts
) -> MeterProvider:
    readers: list[MetricReader] = []
    for name, exporter in _exporters("metrics", settings, parts):
        if isinstance(exporter, MetricReader):  # serves its own endpoint: sends nothing
            readers.append(exporter)
        else:
            counting = CountingMetricExporter(name, exporter)
            _end_by_exit_deadline("metrics", counting.gate)
            readers.append(PeriodicExportingMetricReader(counting))
        names.append(name)
    return MeterProvider(resource=resource, metric_readers=readers, views=build_views(settings))


def _logger_provider(
    settings: Settings,
    resource: Resource,
    names: list[str],
    console: SpanProcessor | None,
    parts: Parts,
) -> LoggerProvider | None:
    """A provider for the ``logging`` records the logging instrumentation hands over.

    None when nothing would consume them (no exporter and no console tree).
    """
    exporters = _exporters("logs", settings, parts)
    if not exporters and console is None:
        return None
    provider = LoggerProvider(resource=resource)
    for name, exporter in exporters:
        processor = DeliveryReportingLogProcessor(name, exporter)
        _end_by_exit_deadline("logs", processor.exporter.gate)
        provider.add_log_record_processor(processor)
        names.append(name)
    if console is not None and parts.console_logs is not None:
        provider.add_log_record_processor(parts.console_logs(console))
    return provider


def exporter_names(signal: Signal) -> list[str]:
    """Exporter entry-point names for a signal, after the documented defaults.

    ``OTEL_{TRACES,METRICS,LOGS}_EXPORTER`` wins when set. Otherwise OTLP is used
    if an endpoint is configured; with no endpoint, traces go to the local OTLP
    JSON lines file and metrics are not exported. Logs are sent to a backend only
    when ``OTEL_LOGS_EXPORTER`` asks; they go to the local store whenever traces do.
    """
    if os.environ.get(_EXPORTER_VARIABLES[signal], "").strip():
        return _get_exporter_names(signal)
    if signal == "logs":
        return [LOCAL_FILE_EXPORTER] if exporter_names("traces") == [LOCAL_FILE_EXPORTER] else []
    if _otlp_endpoint_configured(signal):
        return [_get_exporter_entry_point("otlp", signal)]
    return [LOCAL_FILE_EXPORTER] if signal == "traces" else []


def _otlp_endpoint_configured(signal: Signal) -> bool:
    specific = (
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
        if signal == "traces"
        else OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
    )
    return bool(os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT) or os.environ.get(specific))


def _exporters(
    signal: Signal, settings: Settings, parts: Parts
) -> list[tuple[str, SpanExporter | MetricExporter | MetricReader | LogRecordExporter]]:
    """Instantiate each named exporter; an unknown or broken one is skipped with a warning."""
    group = f"opentelemetry_{signal}_exporter"
    exporters = []
    for name in exporter_names(signal):
        try:
            if name == LOCAL_FILE_EXPORTER and signal != "metrics" and parts.local_file:
                exporters.append((name, parts.local_file(signal, settings)))
                continue
            [(_, exporter_class)] = _import_config_components([name], group)
            exporters.append((name, reconnect_after_fork(exporter_class())))
        except Exception as error:
            _logger.warning(
                "reasonflow-otel: cannot use %s exporter %r (%s); it is skipped",
                signal,
                name,
                error,
            )
    return exporters


def _end_by_exit_deadline(signal: Signal, gate: ExportGate) -> None:
    """Register ``gate`` with the bounded exit, with the endpoint an OTLP exporter sends to
    (the SDK's defaults when none is set), so a refused connection ends its wait at once."""
    endpoint = None
    if gate.name in _OTLP_DEFAULT_ENDPOINTS:
        endpoint = (
            os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
            or os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
            or _OTLP_DEFAULT_ENDPOINTS[gate.name]
        )
    end_by_exit_deadline(gate, endpoint)


def _is_proxy_meter_provider(provider: metrics.MeterProvider) -> bool:
    """True while no meter provider was set (the API hands out a proxy until then)."""
    return type(provider).__name__ == "_ProxyMeterProvider"


def _is_proxy_logger_provider(provider: _logs.LoggerProvider) -> bool:
    """True while no logger provider was set."""
    return type(provider).__name__ == "ProxyLoggerProvider"
