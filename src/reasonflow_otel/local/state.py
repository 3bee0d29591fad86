"""Reload a prior application state from the local trace file, the OpenTelemetry way.

With state capture on (``REASONFLOW_OTEL_CAPTURE=state``), every step span of an
application carries the state after the step (``reasonflow.state.after``, redacted
and bounded) and the next action the graph chose (``reasonflow.node.successor``).
:func:`load_state` reads them back so an app can be rebuilt at that point::

    state, next_action = reasonflow_otel.load_state("4bf92f35", step=2)
    app = ApplicationBuilder().with_actions(...).with_transitions(...)
        .with_state(**state).with_entrypoint(next_action).build()
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from string import hexdigits
from typing import Any, NamedTuple

from reasonflow_otel import semconv
from reasonflow_otel.local.store import SpanRecord, read_spans, warn_on_stderr
from reasonflow_otel.recorder.capture import CUT_MARK
from reasonflow_otel.settings import Settings, load_settings

_CAPTURE = Settings.env_name("capture")
_MAX_LENGTH = Settings.env_name("capture_max_length")


class StateError(LookupError):
    """The state cannot be loaded; the message says why and what to do."""


class SavedState(NamedTuple):
    """The state after a step and the action to continue with (None: the run had ended)."""

    state: dict[str, Any]
    next_action: str | None


def load_state(trace_id: str, step: int | None = None, *, file: Path | None = None) -> SavedState:
    """The state after step ``step`` (a sequence id; default: the last that succeeded) of the
    application run in trace ``trace_id`` (or the first digits of it), read from the
    local trace file (default: ``REASONFLOW_OTEL_TRACE_FILE``)."""
    path = file or load_settings().trace_file
    steps = _steps(_trace(path, trace_id))
    chosen = _choose(steps, step, trace_id)
    return SavedState(_state_of(chosen), _next_action(chosen))


def _trace(path: Path, trace_id: str) -> list[SpanRecord]:
    prefix = trace_id.strip().lower()
    if not prefix or len(prefix) > 32 or any(char not in hexdigits for char in prefix):
        raise StateError(f"{trace_id!r} is not a trace id (up to 32 hex digits)")
    try:
        spans = [
            span for span in read_spans(path, warn_on_stderr) if span.trace_id.startswith(prefix)
        ]
    except FileNotFoundError:
        raise StateError(f"no trace file at {path.absolute()}") from None
    if not spans:
        raise StateError(f"no trace id in {path} starts with {prefix}")
    if len({span.trace_id for span in spans}) > 1:
        raise StateError(f"{prefix} matches several traces; give more digits")
    return spans


def _steps(spans: list[SpanRecord]) -> dict[int, SpanRecord]:
    """Steps of the outermost application runs (not of sub-applications), by sequence id."""
    applications = {span.span_id for span in spans if _is_application(span)}
    by_id = {span.span_id: span for span in spans}
    outermost = {
        span_id for span_id in applications if not _inside_application(by_id[span_id], by_id)
    }
    steps: dict[int, SpanRecord] = {}
    for span in spans:
        sequence_id = span.attributes.get(semconv.NODE_SEQUENCE_ID)
        if span.parent_id in outermost and isinstance(sequence_id, int):
            if sequence_id in steps:
                raise StateError(
                    f"trace {span.trace_id} holds several applications with a step "
                    f"{sequence_id}; load the state from a trace of one application"
                )
            steps[sequence_id] = span
    return steps


def _is_application(span: SpanRecord) -> bool:
    return span.flow_name is not None and semconv.APP_ID in span.attributes


def _inside_application(span: SpanRecord, by_id: dict[str, SpanRecord]) -> bool:
    parent = by_id.get(span.parent_id)
    while parent is not None:
        if _is_application(parent):
            return True
        parent = by_id.get(parent.parent_id)
    return False


def _choose(steps: dict[int, SpanRecord], step: int | None, trace_id: str) -> SpanRecord:
    if not steps:
        raise StateError(f"trace {trace_id} has no application steps")
    if step is None:  # the last step that left a state (a failed one did not)
        succeeded = [sequence_id for sequence_id, span in steps.items() if not span.failed]
        return steps[max(succeeded or steps)]
    if step not in steps:
        raise StateError(f"trace {trace_id} has no step {step}; its steps are {_ranges(steps)}")
    return steps[step]


def _state_of(span: SpanRecord) -> dict[str, Any]:
    sequence_id = span.attributes[semconv.NODE_SEQUENCE_ID]
    if span.failed:
        raise StateError(f"step {sequence_id} ({span.name}) failed: it left no state after it")
    text = span.attributes.get(semconv.STATE_AFTER)
    if not isinstance(text, str):
        raise StateError(
            f"no state was recorded for step {sequence_id}: state capture was off "
            f"(set {_CAPTURE}=state and run again)"
        )
    try:
        state = json.loads(text)
    except ValueError:
        if text.endswith(CUT_MARK):
            raise StateError(
                f"the state after step {sequence_id} was truncated at {len(text)} characters "
                f"(raise {_MAX_LENGTH} and run again)"
            ) from None
        raise StateError(f"the state after step {sequence_id} is not JSON") from None
    if not isinstance(state, dict):
        raise StateError(f"the state after step {sequence_id} is not a mapping")
    return state


def _next_action(span: SpanRecord) -> str | None:
    successor = span.attributes.get(semconv.NODE_SUCCESSOR)
    return None if successor in (None, semconv.SUCCESSOR_END) else str(successor)


def _ranges(steps: Iterable[int]) -> str:
    ordered = sorted(steps)
    return f"{ordered[0]} to {ordered[-1]}" if len(ordered) > 1 else str(ordered[0])
