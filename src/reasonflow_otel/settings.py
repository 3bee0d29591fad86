"""Every ``REASONFLOW_OTEL_*`` setting, parsed and validated in one place.

Each setting is read from the environment, or given as a keyword to
``reasonflow_otel.instrument(**options)`` under its field name (the variable
name without the prefix, lower case). A malformed value never raises: it
produces one warning naming the variable and the default that is used instead.
Standard ``OTEL_*`` variables are left to the OpenTelemetry SDK wherever it
reads them itself.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from opentelemetry.instrumentation.environment_variables import (
    OTEL_PYTHON_DISABLED_INSTRUMENTATIONS,
)

_logger = logging.getLogger(__name__)

PREFIX = "REASONFLOW_OTEL_"

# Bucket boundaries in seconds for workflow durations: 1 ms to 10 minutes,
# dense around the 5-120 s range where LLM calls land.
DEFAULT_DURATION_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)

RESOURCE_PROBES = ("none", "rusage", "psutil")
PARTITION_KEY_MODES = ("omit", "hash", "raw")
CAPTURE_PHASES = ("prep", "exec", "post", "shared", "state")
KEEP_ALL = "all"
KEEP_RULES = ("errors", "slow", "ratio")


class SettingError(ValueError):
    """A value that does not parse; the message says what was expected.

    For a list with some wrong entries, ``rejected`` names them and ``usable`` is
    the value made of the others (None when no entry is right).
    """

    def __init__(self, message: str, usable: Any = None, rejected: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.usable = usable
        self.rejected = rejected


# --- Parsers: text -> value, raising SettingError with a readable reason. ---------


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingError("expected true or false")


def _whole_number(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise SettingError("expected a whole number") from None


def parse_positive_int(text: str) -> int:
    value = _whole_number(text)
    if value <= 0:
        raise SettingError("expected a number above 0")
    return value


def parse_count(text: str) -> int:
    """A whole number, 0 or more."""
    value = _whole_number(text)
    if value < 0:
        raise SettingError("expected 0 or more")
    return value


def parse_ratio(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise SettingError("expected a number from 0 to 1") from None
    if not 0.0 <= value <= 1.0:
        raise SettingError("expected a number from 0 to 1")
    return value


def parse_names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_each(
    text: str, parse_entry: Callable[[str], Any], collect: Callable[[list[Any]], Any] = tuple
) -> Any:
    """A comma-separated list, entry by entry: a wrong entry does not cost the right ones
    (the SettingError carries them as ``usable``)."""
    parsed, rejected, reasons = [], [], []
    for entry in parse_names(text):
        try:
            parsed.append(parse_entry(entry))
        except SettingError as error:
            rejected.append(entry)
            reasons.append(str(error))
    if rejected:
        usable = collect(parsed) if parsed else None
        raise SettingError("; ".join(dict.fromkeys(reasons)), usable, tuple(rejected))
    return collect(parsed)


def _pattern(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as error:
        raise SettingError(f"{pattern!r} is not a regular expression ({error})") from None
    return pattern


def parse_patterns(text: str) -> tuple[str, ...]:
    """Comma-separated regular expressions, each checked to compile."""
    return parse_each(text, _pattern)


def _flow_ratio(item: str) -> tuple[str, float]:
    name, sep, ratio = item.partition("=")
    if not sep or not name.strip():
        raise SettingError(f"expected FlowName=ratio pairs, got {item!r}")
    return name.strip(), parse_ratio(ratio)


def parse_ratios(text: str) -> Mapping[str, float]:
    """``FlowA=0.01,FlowB=1`` -> ``{"FlowA": 0.01, "FlowB": 1.0}``."""
    return parse_each(text, _flow_ratio, lambda pairs: MappingProxyType(dict(pairs)))


def parse_buckets(text: str) -> tuple[float, ...]:
    try:
        buckets = tuple(float(part) for part in parse_names(text))
    except ValueError:
        raise SettingError("expected comma-separated numbers of seconds") from None
    if not buckets or any(not math.isfinite(b) or b < 0 for b in buckets):
        raise SettingError("expected finite, non-negative numbers")
    if list(buckets) != sorted(set(buckets)):
        raise SettingError("expected strictly increasing numbers")
    return buckets


def parse_seconds(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise SettingError("expected a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise SettingError("expected a finite, non-negative number of seconds")
    return value


def parse_keep_traces(text: str) -> tuple[str, ...]:
    """``all``, or one or more of the tail-sampling rules (a trace is kept if any keeps it)."""
    values = tuple(name.lower() for name in parse_names(text))
    if values == (KEEP_ALL,):
        return values
    if not values or any(value not in KEEP_RULES for value in values):
        raise SettingError(f"expected {KEEP_ALL}, or some of {', '.join(KEEP_RULES)}")
    return values


def choice(*allowed: str) -> Callable[[str], str]:
    def parse_choice(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise SettingError(f"expected one of {', '.join(allowed)}")
        return value

    return parse_choice


def subset_of(*allowed: str) -> Callable[[str], tuple[str, ...]]:
    def parse_member(name: str) -> str:
        if name.lower() not in allowed:
            raise SettingError(f"expected some of {', '.join(allowed)}")
        return name.lower()

    def parse_subset(text: str) -> tuple[str, ...]:
        return parse_each(text, parse_member)

    return parse_subset


def parse_path(text: str) -> Path:
    if not text.strip():
        raise SettingError("expected a file path")
    return Path(text.strip()).expanduser()


def parse_text(text: str) -> str:
    return text.strip()


def _setting(default: Any, parse: Callable[[str], Any], help: str) -> Any:
    metadata = {"parse": parse, "help": help}
    if isinstance(default, Mapping):  # read-only, but dataclasses want a factory
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Validated settings; build it with :func:`load_settings`."""

    # Spans
    phase_spans: bool = _setting(False, parse_bool, "Child spans for prep, exec and post.")
    phase_durations: bool = _setting(
        False, parse_bool, "Per-phase durations (prep, exec, post) as node span attributes."
    )
    graph_max_length: int = _setting(
        4096, parse_positive_int, "Longest flow-graph attribute, in characters."
    )
    # Metrics
    duration_buckets: tuple[float, ...] = _setting(
        DEFAULT_DURATION_BUCKETS, parse_buckets, "Histogram buckets for durations, in seconds."
    )
    drop_metrics: tuple[str, ...] = _setting(
        (), parse_names, "Metric names to drop (comma-separated; * and ? match any)."
    )
    resource_probe: str = _setting(
        "rusage",
        choice(*RESOURCE_PROBES),
        "Per-node resource probe: none, rusage (thread CPU, peak RSS; cheap) or psutil "
        "(adds RSS change, disk I/O, open descriptors; tens of µs per node boundary).",
    )
    metric_cardinality_limit: int = _setting(
        2000,
        parse_positive_int,
        "Most series per metric of ours, the overflow series (otel.metric.overflow=true) "
        "included: past it, new attribute sets are counted there.",
    )
    process_metrics: bool = _setting(
        True, parse_bool, "Process CPU, memory, threads, descriptors and GC metrics."
    )
    # Sampling
    sampling_ratios: Mapping[str, float] = _setting(
        MappingProxyType({}), parse_ratios, "Per-flow sampling ratios, e.g. Chatty=0.01,Rare=1."
    )
    # Context propagation
    baggage_keys: tuple[str, ...] = _setting(
        (), parse_names, "Baggage entries copied onto flow and node spans."
    )
    baggage_hash_keys: tuple[str, ...] = _setting(
        (), parse_names, "Baggage entries copied as a SHA-256 hash, not the value."
    )
    # Local, backend-free output
    trace_file: Path = _setting(
        Path(".reasonflow-otel/traces.jsonl"),
        parse_path,
        "Local OTLP JSON lines file used when no OTLP endpoint is set (relative to the working "
        "directory); logs go beside it, as <name>.logs.jsonl.",
    )
    trace_file_max_bytes: int = _setting(
        100_000_000,
        parse_positive_int,
        "Size at which the local trace (and log) file is rotated: traces.jsonl becomes "
        "traces.jsonl.1, .1 becomes .2, and so on.",
    )
    trace_file_backups: int = _setting(
        2, parse_count, "Rotated local files kept (traces.jsonl.1 ... .N); the oldest is dropped."
    )
    console: bool = _setting(
        False, parse_bool, "Print each finished trace on stderr as a tree, with its logs."
    )
    # Payload capture (off by default)
    capture: tuple[str, ...] = _setting(
        (), subset_of(*CAPTURE_PHASES), "Payloads to record: prep, exec, post, shared, state."
    )
    capture_max_length: int = _setting(
        1024, parse_positive_int, "Longest captured value, in characters."
    )
    capture_shared_keys: tuple[str, ...] = _setting(
        (), parse_names, "Shared-store keys to capture (empty: all)."
    )
    exclude_shared_keys: tuple[str, ...] = _setting(
        (), parse_names, "Shared-store keys never captured."
    )
    redact_patterns: tuple[str, ...] = _setting(
        (), parse_patterns, "Extra regular expressions whose matches are redacted."
    )
    # Any engine: callables traced by name
    trace_methods: tuple[str, ...] = _setting(
        (),
        parse_names,
        "Callables to trace, comma-separated: module:qualified.name, optionally =workflow "
        "or =node (the default).",
    )
    # Tracking policies: which finished traces are exported (decided in-process)
    keep_traces: tuple[str, ...] = _setting(
        (KEEP_ALL,),
        parse_keep_traces,
        "Traces to export: all, or some of errors, slow, ratio (kept if any rule keeps it).",
    )
    slow_trace_seconds: float = _setting(
        1.0, parse_seconds, "The slow rule keeps traces whose local root lasts this long."
    )
    keep_ratio: float = _setting(
        0.1, parse_ratio, "The share of traces the ratio rule keeps, chosen by trace id."
    )
    keep_buffer_spans: int = _setting(
        5_000, parse_positive_int, "Most spans held while their trace awaits its decision."
    )
    # Applications with ids and explicit state (Burr)
    partition_key: str = _setting(
        "hash",
        choice(*PARTITION_KEY_MODES),
        "Application partition keys (often user ids) on spans: omit, hash (SHA-256) or raw.",
    )
    state_key_names: bool = _setting(
        False, parse_bool, "Name the changed state keys on state-change events."
    )
    burr_application_name: str = _setting(
        "",
        parse_text,
        "Workflow name of top-level Burr applications without a tracker project.",
    )

    @classmethod
    def env_name(cls, field_name: str) -> str:
        return PREFIX + field_name.upper()


def setting_docs() -> list[tuple[str, str, str]]:
    """(variable, default, help) for every setting, for docs and the CLI."""
    defaults = Settings()
    return [
        (Settings.env_name(f.name), _show(getattr(defaults, f.name)), f.metadata["help"])
        for f in fields(Settings)
    ]


def reject_unknown_options(options: Mapping[str, Any]) -> None:
    """Raise TypeError for a keyword that is no setting, as a Python function would: unlike
    the environment, ``instrument(**options)`` is written by the developer."""
    known = {f.name for f in fields(Settings)}
    for name in options:
        if name not in known:
            raise TypeError(f"instrument() got an unexpected keyword argument {name!r}")


def instrumentation_disabled(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` turns off the instrumentation
    with this entry-point name, read the way ``opentelemetry-instrument`` reads it."""
    environ = os.environ if environ is None else environ
    disabled = parse_names(environ.get(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, ""))
    return name in disabled or "*" in disabled


def load_settings(
    options: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from ``options`` (keywords) over the environment over defaults."""
    environ = os.environ if environ is None else environ
    options = dict(options or {})
    defaults = Settings()
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = Settings.env_name(f.name)
        if f.name in options:
            raw, source = options.pop(f.name), f"instrument({f.name}=...)"
        elif name in environ:
            raw, source = environ[name], name
        else:
            continue
        try:
            values[f.name] = f.metadata["parse"](raw if isinstance(raw, str) else _show(raw))
        except SettingError as error:
            if error.usable is not None:
                values[f.name] = error.usable
                rejected = ", ".join(repr(entry) for entry in error.rejected)
                warn_once(
                    "reasonflow-otel: ignoring %s in %s=%r (%s); using %s",
                    rejected,
                    source,
                    raw,
                    error,
                    _show(error.usable),
                )
                continue
            warn_once(
                "reasonflow-otel: ignoring %s=%r (%s); using the default %s",
                source,
                raw,
                error,
                _show(getattr(defaults, f.name)) or "(none)",
            )
    for unknown in options:
        warn_once("reasonflow-otel: ignoring unknown option %r", unknown)
    known = {Settings.env_name(f.name) for f in fields(Settings)}
    for name in sorted(set(environ) - known):
        if name.startswith(PREFIX):
            warn_once("reasonflow-otel: ignoring unknown variable %s", name)
    return Settings(**values)


_warned: set[str] = set()


def warn_once(message: str, *args: Any) -> None:
    """Log a configuration warning once per process, however often settings are loaded
    (``opentelemetry-instrument`` loads them in the configurator and in each instrumentor)."""
    text = message % args
    if text not in _warned:
        _warned.add(text)
        _logger.warning(text)


def _show(value: Any) -> str:
    """A value as it would be written in the environment."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return ",".join(_show(v) for v in value)
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)
