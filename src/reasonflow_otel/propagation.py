"""Trace context and baggage across processes and services.

Within a process the OpenTelemetry context already follows asyncio tasks and
``gather``, and threads once threading is instrumented (``instrument()`` does
that). Leaving the process needs a carrier, and these helpers fill and read one
with the global propagators: W3C trace context and baggage unless
``OTEL_PROPAGATORS`` says otherwise.

* :func:`inject` writes the current context into a dict of headers or a
  PocketFlow shared store; :func:`extract` and :func:`continue_trace` read it back.
* :func:`child_environment` is a copy of ``os.environ`` carrying ``TRACEPARENT``,
  ``TRACESTATE`` and ``BAGGAGE`` (the OpenTelemetry environment-carrier names);
  a child started with it and instrumented at startup continues the trace
  (:func:`continue_trace_from_environment`).

Malformed input never raises: a malformed ``traceparent`` is ignored (a new
trace starts), a malformed ``tracestate`` is dropped, malformed baggage entries
are dropped, each with one warning per field for the life of the process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.baggage import _is_valid_pair
from opentelemetry.context import Context
from opentelemetry.propagators._envcarrier import (
    EnvironmentGetter,
    EnvironmentSetter,
    _normalize_key,
)
from opentelemetry.propagators.textmap import Getter, default_getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import _member_pattern
from opentelemetry.util.re import _DELIMITER_PATTERN

from reasonflow_otel.settings import Settings

_logger = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
BAGGAGE = "baggage"

Carrier = Mapping[str, Any]

# The trace and baggage this process was started in, from its environment.
_startup_context: Context | None = None


# --- Public helpers ----------------------------------------------------------------


def inject(carrier: MutableMapping[str, Any] | None = None) -> MutableMapping[str, Any]:
    """Write the current trace context and baggage into ``carrier`` and return it.

    ``carrier`` is a dict of outgoing headers or a PocketFlow shared store (a new
    dict when omitted); the fields are the propagators' own (``traceparent``,
    ``tracestate``, ``baggage`` by default).
    """
    carrier = {} if carrier is None else carrier
    propagate.inject(carrier, inherited_context(context.get_current()))
    return carrier


def extract(carrier: Carrier) -> Context:
    """The trace context and baggage a carrier holds (headers, a shared store, a dict).

    Malformed fields are dropped with one warning each; the result is then a new
    trace's context, never an exception.
    """
    return propagate.extract(carrier, getter=_WellFormedGetter(default_getter))


@contextmanager
def continue_trace(carrier: Carrier) -> Iterator[Context]:
    """Run the block in the trace ``carrier`` holds: flows started in it become its children.

    For a service receiving a request::

        with reasonflow_otel.continue_trace(request.headers):
            flow.run(shared)
    """
    extracted = extract(carrier)
    token = context.attach(extracted)
    try:
        yield extracted
    finally:
        context.detach(token)


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (``os.environ``) for a child process, carrying the current trace.

    Propagation variables inherited from this process are replaced by the
    current context's (``TRACEPARENT``, ``TRACESTATE``, ``BAGGAGE`` by default)::

        subprocess.run([sys.executable, "worker.py"], env=reasonflow_otel.child_environment())
    """
    environment = dict(os.environ if environ is None else environ)
    for field in propagate.get_global_textmap().fields:
        environment.pop(_normalize_key(field), None)
    propagate.inject(
        environment, inherited_context(context.get_current()), setter=EnvironmentSetter()
    )
    return environment


# --- Startup: continuing the trace a process was started in --------------------------


def continue_trace_from_environment(environ: Mapping[str, str] | None = None) -> None:
    """Adopt the trace in ``TRACEPARENT``/``TRACESTATE``/``BAGGAGE`` for flows with no parent.

    Called by ``instrument()`` and the ``opentelemetry-instrument`` configurator,
    so a child started with :func:`child_environment` joins its parent's trace.
    A later call replaces the adopted context (an environment without the
    variables clears it).
    """
    global _startup_context
    environ = os.environ if environ is None else environ
    extracted = propagate.extract(environ, getter=_WellFormedGetter(EnvironmentGetter()))
    has_span = trace.get_current_span(extracted).get_span_context().is_valid
    _startup_context = extracted if has_span or baggage.get_all(extracted) else None


def inherited_context(current: Context) -> Context:
    """``current``, or with no active span in it, the trace this process was started in.

    Baggage entries of ``current`` win over the environment's.
    """
    startup = _startup_context
    if startup is None or trace.get_current_span(current).get_span_context().is_valid:
        return current
    inherited = trace.set_span_in_context(trace.get_current_span(startup), current)
    current_entries = baggage.get_all(current)
    for name, value in baggage.get_all(startup).items():
        if name not in current_entries:
            inherited = baggage.set_baggage(name, value, inherited)
    return inherited


# --- Baggage on spans -------------------------------------------------------------------


def baggage_selection(settings: Settings) -> dict[str, bool]:
    """Baggage keys to copy onto spans, each mapped to whether its value is hashed."""
    selection = dict.fromkeys(settings.baggage_keys, False)
    selection.update(dict.fromkeys(settings.baggage_hash_keys, True))
    return selection


def baggage_attributes(parent: Context, selection: Mapping[str, bool]) -> dict[str, str]:
    """The selected baggage entries as span attributes named by their keys.

    A hashed entry's value becomes its SHA-256 hex digest, so spans can be
    grouped by a user without carrying the user's identifier.
    """
    entries = baggage.get_all(parent)
    return {
        key: _sha256(str(entries[key])) if hashed else str(entries[key])
        for key, hashed in selection.items()
        if key in entries
    }


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- Reading carriers safely -----------------------------------------------------------


class _WellFormedGetter(Getter[Any]):
    """Reads string values through ``base`` and drops what a W3C propagator would reject.

    The propagators ignore malformed fields too, but silently (traceparent) or
    with a warning per entry and per request (tracestate, baggage); checking here
    keeps that to one warning per field for the process, and keeps non-string
    values of a shared store away from the propagators. The checks use the
    propagators' own patterns (private names of the pinned opentelemetry-api),
    so a value that passes here never makes them warn.
    """

    def __init__(self, base: Getter[Any]) -> None:
        self._base = base

    def get(self, carrier: Any, key: str) -> list[str] | None:
        values = [value for value in self._base.get(carrier, key) or () if not _blank(value)]
        if not values:
            return None
        well_formed = _WELL_FORMED.get(key, _unchanged)
        kept = [
            checked
            for value in values
            if isinstance(value, str) and (checked := well_formed(value)) is not None
        ]
        if kept != values:
            _warn_malformed(key, values)
        return kept or None

    def keys(self, carrier: Any) -> list[str]:
        return self._base.keys(carrier)


def _blank(value: Any) -> bool:
    """An empty field, as in ``TRACEPARENT=``, is an absent one, not a malformed one."""
    return isinstance(value, str) and not value.strip()


def _unchanged(value: str) -> str:
    return value


def _well_formed_traceparent(value: str) -> str | None:
    extracted = _TRACE_CONTEXT.extract({TRACEPARENT: value})
    return value if trace.get_current_span(extracted).get_span_context().is_valid else None


def _well_formed_tracestate(value: str) -> str | None:
    members = (member.strip(" \t") for member in value.split(","))
    return value if all(_member_pattern.fullmatch(m) for m in members if m) else None


def _well_formed_baggage(value: str) -> str | None:
    """The header, or its well-formed entries when some are not (None if none are)."""
    entries = [entry for entry in _DELIMITER_PATTERN.split(value) if entry]
    kept = [entry for entry in entries if _is_baggage_entry(entry)]
    if len(kept) == len(entries):
        return value
    return ",".join(kept) or None


def _is_baggage_entry(entry: str) -> bool:
    name, separator, value = entry.partition("=")
    return (
        entry.isascii()
        and bool(separator)
        and _is_valid_pair(name.strip(" \t"), value.strip(" \t"))
    )


_TRACE_CONTEXT = TraceContextTextMapPropagator()
_WELL_FORMED: dict[str, Callable[[str], str | None]] = {
    TRACEPARENT: _well_formed_traceparent,
    TRACESTATE: _well_formed_tracestate,
    BAGGAGE: _well_formed_baggage,
}
_CONSEQUENCES = {
    TRACEPARENT: "a new trace starts",
    TRACESTATE: "the trace continues without it",
    BAGGAGE: "its malformed entries are dropped",
}

_warned_lock = threading.Lock()
_warned: set[str] = set()


def _warn_malformed(field: str, values: list[Any]) -> None:
    """One warning per field for the life of the process: bad input may come with every request."""
    with _warned_lock:
        if field in _warned:
            return
        _warned.add(field)
    _logger.warning(
        "reasonflow-otel: ignoring a malformed %s %.200r; %s (further malformed %s values "
        "are ignored without a warning)",
        field,
        values[0] if len(values) == 1 else values,
        _CONSEQUENCES.get(field, "it is ignored"),
        field,
    )
