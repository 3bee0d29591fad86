"""A Burr app that sets its own tracer provider, then calls reasonflow_otel.instrument().

Prints one JSON line: the span names its own exporter received, whether its provider is
still the global one, and the engines instrumented.
"""

from __future__ import annotations

import json

from burr.core import ApplicationBuilder, State, action
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import reasonflow_otel


@action(reads=[], writes=["greeting"])
def greet(state: State) -> State:
    return state.update(greeting="hello")


def main() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    reasonflow_otel.instrument()
    app = ApplicationBuilder().with_actions(greet=greet).with_state().with_entrypoint("greet")
    app.build().run(halt_after=["greet"])
    print(
        json.dumps(
            {
                "spans": [span.name for span in exporter.get_finished_spans()],
                "own_provider": trace.get_tracer_provider() is provider,
                "engines": reasonflow_otel.instrumented_engines(),
            }
        )
    )


if __name__ == "__main__":
    main()
