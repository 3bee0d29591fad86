"""Prints what the propagation helpers write under this process's ``OTEL_PROPAGATORS``.

The global propagators are read from the environment once, at import, so each
setting needs a process of its own. Prints one JSON object: the carrier
``inject()`` fills and the propagation variables ``child_environment()`` adds,
both inside a span (trace id 1, span id 2) that carries baggage ``session.id=s-1``.
"""

from __future__ import annotations

import json

from opentelemetry import baggage, context, trace

import reasonflow_otel

SPAN = trace.NonRecordingSpan(
    trace.SpanContext(1, 2, is_remote=False, trace_flags=trace.TraceFlags.SAMPLED)
)


def main() -> None:
    current = baggage.set_baggage("session.id", "s-1", trace.set_span_in_context(SPAN))
    token = context.attach(current)
    try:
        headers = reasonflow_otel.inject()
        environment = reasonflow_otel.child_environment({})
    finally:
        context.detach(token)
    print(json.dumps({"headers": headers, "environment": environment}, sort_keys=True))


if __name__ == "__main__":
    main()
