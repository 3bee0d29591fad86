"""Standard ``OTEL_*`` values, checked before the OpenTelemetry SDK reads them.

``import reasonflow_otel`` imports this module first. The SDK handles malformed
values unevenly: ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=-2`` makes ``import
opentelemetry.sdk.trace`` raise, ``OTEL_BSP_MAX_QUEUE_SIZE=0`` or
``OTEL_EXPORTER_OTLP_PROTOCOL=grpcc`` makes building a provider raise (and with
it all tracing), ``OTEL_EXPORTER_OTLP_TIMEOUT=abc`` disables the exporter, and
``OTEL_EXPORTER_OTLP_TIMEOUT=-1`` loses every span to an expired deadline. Here
each malformed value gets one warning naming the variable and the default, and
is removed from this process's environment so every reader uses that default.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, MutableMapping
from importlib.metadata import entry_points
from typing import Any

from reasonflow_otel.settings import (
    SettingError,
    choice,
    parse_bool,
    parse_positive_int,
    parse_ratio,
    warn_once,
)

Parse = Callable[[str], Any]
_OTLP_SIGNALS = ("", "TRACES_", "METRICS_", "LOGS_")
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")


def parse_limit(text: str) -> int | str:
    """A non-negative whole number, or ``unset`` (no limit), as span limits take."""
    if text.strip().lower() == "unset":
        return "unset"
    try:
        value = int(text.strip())
    except ValueError:
        raise SettingError("expected a whole number of 0 or more") from None
    if value < 0:
        raise SettingError("expected a whole number of 0 or more")
    return value


def parse_positive_number(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise SettingError("expected a number above 0") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingError("expected a number above 0")
    return value


def parse_sampler(text: str) -> str:
    """A sampler name the SDK can load (built in or from an entry point)."""
    name = text.strip()
    names = {point.name for point in entry_points(group="opentelemetry_traces_sampler")}
    if name not in names:
        raise SettingError(f"expected one of {', '.join(sorted(names))}")
    return name


def _standard_variables() -> dict[str, tuple[Parse, str]]:
    """Variable -> (parser, the default the SDK then uses)."""
    variables: dict[str, tuple[Parse, str]] = {
        "OTEL_SDK_DISABLED": (parse_bool, "false"),
        # reasonflow-otel's default sampler (ratio 1.0), not the SDK's parentbased_always_on.
        "OTEL_TRACES_SAMPLER": (parse_sampler, "parentbased_traceidratio"),
        "OTEL_METRIC_EXPORT_INTERVAL": (parse_positive_number, "60000"),
        "OTEL_METRIC_EXPORT_TIMEOUT": (parse_positive_number, "30000"),
    }
    for processor, delay in (("BSP", "5000"), ("BLRP", "1000")):
        variables[f"OTEL_{processor}_SCHEDULE_DELAY"] = (parse_positive_int, delay)
        variables[f"OTEL_{processor}_EXPORT_TIMEOUT"] = (parse_positive_int, "30000")
        variables[f"OTEL_{processor}_MAX_QUEUE_SIZE"] = (parse_positive_int, "2048")
        variables[f"OTEL_{processor}_MAX_EXPORT_BATCH_SIZE"] = (parse_positive_int, "512")
    for signal in _OTLP_SIGNALS:
        prefix = f"OTEL_EXPORTER_OTLP_{signal}"
        variables[prefix + "TIMEOUT"] = (parse_positive_number, "10")
        variables[prefix + "PROTOCOL"] = (choice("grpc", "http/protobuf"), "grpc")
        variables[prefix + "COMPRESSION"] = (choice("gzip", "deflate", "none"), "none")
    for limit in ("ATTRIBUTE", "SPAN_ATTRIBUTE", "EVENT_ATTRIBUTE", "LINK_ATTRIBUTE"):
        variables[f"OTEL_{limit}_COUNT_LIMIT"] = (parse_limit, "128")
    for limit in ("ATTRIBUTE", "SPAN_ATTRIBUTE"):
        variables[f"OTEL_{limit}_VALUE_LENGTH_LIMIT"] = (parse_limit, "no limit")
    for limit in ("SPAN_EVENT", "SPAN_LINK"):
        variables[f"OTEL_{limit}_COUNT_LIMIT"] = (parse_limit, "128")
    return variables


def check_environment(
    environ: MutableMapping[str, str] | None = None, repairs: list[str] | None = None
) -> list[str]:
    """Warn about and remove each malformed standard variable; returns their names.

    Each warning is also added to ``repairs``, for ``reasonflow-otel doctor``.
    """
    environ = os.environ if environ is None else environ
    repairs = [] if repairs is None else repairs
    malformed = [
        name
        for name, (parse, default) in _standard_variables().items()
        if not _valid(environ, name, parse, default, repairs)
    ]
    if environ.get("OTEL_TRACES_SAMPLER", "").strip() in _RATIO_SAMPLERS and not _valid(
        environ, "OTEL_TRACES_SAMPLER_ARG", parse_ratio, "1.0", repairs
    ):
        malformed.append("OTEL_TRACES_SAMPLER_ARG")
    for name in malformed:
        environ.pop(name, None)
    for processor in ("BSP", "BLRP"):
        _fit_batch_to_queue(environ, processor, repairs)
    return malformed


def _valid(
    environ: MutableMapping[str, str], name: str, parse: Parse, default: str, repairs: list[str]
) -> bool:
    """True when unset, empty or well-formed; otherwise warns once."""
    text = environ.get(name, "")
    if not text.strip():
        return True
    try:
        parse(text)
    except SettingError as error:
        _repair(repairs, "ignoring %s=%r (%s); using the default %s", name, text, error, default)
        return False
    return True


def _repair(repairs: list[str], message: str, *args: Any) -> None:
    repairs.append(message % args)
    warn_once(f"reasonflow-otel: {message}", *args)


def _fit_batch_to_queue(
    environ: MutableMapping[str, str], processor: str, repairs: list[str]
) -> None:
    """The SDK refuses a batch larger than the queue, and with it the whole provider
    (the default batch of 512 included): the batch is lowered to the queue size."""
    batch_variable = f"OTEL_{processor}_MAX_EXPORT_BATCH_SIZE"
    queue_variable = f"OTEL_{processor}_MAX_QUEUE_SIZE"
    batch = int(environ.get(batch_variable, "").strip() or 512)
    queue = int(environ.get(queue_variable, "").strip() or 2048)
    if batch > queue:
        _repair(
            repairs,
            "%s=%d is above %s=%d, which the SDK refuses; using %d",
            batch_variable,
            batch,
            queue_variable,
            queue,
            queue,
        )
        environ[batch_variable] = str(queue)


# What was repaired in this process's environment when reasonflow_otel was imported.
REPAIRS: list[str] = []
check_environment(repairs=REPAIRS)
