"""OpenTelemetry SDK setup: providers, exporters, Views, sampler.

One code path serves both ``reasonflow_otel.instrument()`` and the
``opentelemetry-instrument`` configurator. Standard ``OTEL_*`` variables drive
it (exporters, endpoints, protocol, resource, sampler, export interval); the
SDK's stock configurator cannot install metric Views, so the providers are
built here.

An application that already set its own tracer or meter provider keeps it:
nothing here replaces a provider, and nothing is added to the app's own.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry import metrics, trace
from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER
from opentelemetry.sdk._configuration import (
    _get_exporter_entry_point,
    _get_exporter_names,
    _import_config_components,
)
from opentelemetry.sdk.environment_variables import (
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
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from reasonflow_otel.sampling import build_sampler
from reasonflow_otel.settings import Settings
from reasonflow_otel.views import build_views

_logger = logging.getLogger(__name__)

Signal = Literal["traces", "metrics"]
LOCAL_FILE_EXPORTER = "otlp_json_file"


@dataclass
class SdkSetup:
    """What :func:`configure_sdk` installed, for ``doctor`` and the tests."""

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    installed_tracer_provider: bool = False
    installed_meter_provider: bool = False
    trace_exporters: list[str] = field(default_factory=list)
    metric_exporters: list[str] = field(default_factory=list)


def configure_sdk(settings: Settings, service_name: str | None = None) -> SdkSetup:
    """Install SDK providers where the application has none of its own."""
    setup = SdkSetup(trace.get_tracer_provider(), metrics.get_meter_provider())
    if os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return setup
    resource = _resource(service_name)
    if isinstance(setup.tracer_provider, trace.ProxyTracerProvider):
        setup.tracer_provider = _tracer_provider(settings, resource, setup.trace_exporters)
        trace.set_tracer_provider(setup.tracer_provider)
        setup.installed_tracer_provider = True
    if _is_proxy_meter_provider(setup.meter_provider):
        setup.meter_provider = _meter_provider(settings, resource, setup.metric_exporters)
        metrics.set_meter_provider(setup.meter_provider)
        setup.installed_meter_provider = True
    return setup


def _resource(service_name: str | None) -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``, then the argument."""
    attributes = {SERVICE_NAME: service_name} if service_name else {}
    return Resource.create(attributes)


def _tracer_provider(settings: Settings, resource: Resource, names: list[str]) -> TracerProvider:
    provider = TracerProvider(resource=resource, sampler=build_sampler(settings))
    for name, exporter in _exporters("traces", settings):
        provider.add_span_processor(BatchSpanProcessor(exporter))
        names.append(name)
    return provider


def _meter_provider(settings: Settings, resource: Resource, names: list[str]) -> MeterProvider:
    readers: list[MetricReader] = []
    for name, exporter in _exporters("metrics", settings):
        if isinstance(exporter, MetricReader):
            readers.append(exporter)
        else:
            readers.append(PeriodicExportingMetricReader(exporter))
        names.append(name)
    return MeterProvider(resource=resource, metric_readers=readers, views=build_views(settings))


def exporter_names(signal: Signal) -> list[str]:
    """Exporter entry-point names for a signal, after the documented defaults.

    ``OTEL_{TRACES,METRICS}_EXPORTER`` wins when set. Otherwise OTLP is used if an
    endpoint is configured; with no endpoint, traces go to the local OTLP JSON
    lines file and metrics are not exported.
    """
    variable = OTEL_TRACES_EXPORTER if signal == "traces" else OTEL_METRICS_EXPORTER
    if os.environ.get(variable, "").strip():
        return _get_exporter_names(signal)
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
    signal: Signal, settings: Settings
) -> list[tuple[str, SpanExporter | MetricExporter | MetricReader]]:
    """Instantiate each named exporter; an unknown or broken one is skipped with a warning."""
    group = f"opentelemetry_{signal}_exporter"
    exporters = []
    for name in exporter_names(signal):
        try:
            if name == LOCAL_FILE_EXPORTER and signal == "traces":
                exporters.append((name, _local_trace_file_exporter(settings)))
                continue
            [(_, exporter_class)] = _import_config_components([name], group)
            exporters.append((name, exporter_class()))
        except Exception as error:
            _logger.warning(
                "reasonflow-otel: cannot use %s exporter %r (%s); it is skipped",
                signal,
                name,
                error,
            )
    return exporters


def _local_trace_file_exporter(settings: Settings) -> SpanExporter:
    from opentelemetry.exporter.otlp.json.file import FileSpanExporter

    path = settings.trace_file
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"reasonflow-otel: traces are written to {path}", file=sys.stderr)
    return FileSpanExporter(str(path))


def _is_proxy_meter_provider(provider: metrics.MeterProvider) -> bool:
    """True while no meter provider was set (the API hands out a proxy until then)."""
    return type(provider).__name__ == "_ProxyMeterProvider"
