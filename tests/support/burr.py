"""Burr fixtures: BurrInstrumentor on real SDK providers, and small real Burr apps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from burr.core import Application, ApplicationBuilder, State, action, default, expr
from burr.core.action import streaming_action
from conftest import Telemetry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from reasonflow_otel.instrumentation.burr import BurrInstrumentor
from reasonflow_otel.sdk.views import build_views
from reasonflow_otel.settings import load_settings

ENGINE = {"reasonflow.engine": "burr"}


@pytest.fixture
def make_burr_telemetry() -> Iterator[Callable[..., Telemetry]]:
    """Instrument Burr with given settings (keywords) and an optional sampler."""
    instrumentor = BurrInstrumentor()

    def make(sampler: Sampler | None = None, **options: Any) -> Telemetry:
        settings = load_settings(options, environ={})
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider(sampler=sampler)
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader], views=build_views(settings))
        instrumentor.instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider, settings=settings
        )
        return Telemetry(exporter, reader, tracer_provider, meter_provider)

    yield make
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@pytest.fixture
def burr_telemetry(make_burr_telemetry: Callable[..., Telemetry]) -> Telemetry:
    return make_burr_telemetry()


class Flaky(Exception):
    """Raised by ``check`` while the counter is below the threshold."""


# --- A counter: count (loops while n < 2), then check (raises when asked), then done ----------


@action(reads=["n"], writes=["n"])
def count(state: State) -> State:
    return state.update(n=state["n"] + 1)


@action(reads=["n", "fail"], writes=["checked"])
def check(state: State) -> State:
    if state["fail"]:
        raise Flaky(f"n={state['n']}")
    return state.update(checked=True)


@action(reads=["checked"], writes=["done"])
def done(state: State) -> State:
    return state.update(done=True)


def counter(fail: bool = False, **builder_options: Any) -> Application:
    builder = (
        ApplicationBuilder()
        .with_actions(count=count, check=check, done=done)
        .with_transitions(
            ("count", "count", expr("n < 2")),
            ("count", "check", default),
            ("check", "done", default),
        )
        .with_state(n=0, fail=fail)
        .with_entrypoint("count")
    )
    if "app_id" in builder_options or "partition_key" in builder_options:
        builder = builder.with_identifiers(**builder_options)
    return builder.build()


# --- A stream: words streamed one by one, then shout --------------------------------------------


@streaming_action(reads=["text"], writes=["words"])
def speak(state: State):
    words = state["text"].split()
    for word in words:
        yield {"word": word}, None
    yield {"word": None}, state.update(words=words)


@action(reads=["words"], writes=["shout"])
def shout(state: State) -> State:
    return state.update(shout=" ".join(state["words"]).upper())


def streamer(text: str = "one two three") -> Application:
    return (
        ApplicationBuilder()
        .with_actions(speak=speak, shout=shout)
        .with_transitions(("speak", "shout", default))
        .with_state(text=text)
        .with_entrypoint("speak")
        .build()
    )


@streaming_action(reads=["text"], writes=["words"])
async def aspeak(state: State):
    words = state["text"].split()
    for word in words:
        yield {"word": word}, None
    yield {"word": None}, state.update(words=words)


def async_streamer(text: str = "one two three") -> Application:
    return (
        ApplicationBuilder()
        .with_actions(speak=aspeak, shout=shout)
        .with_transitions(("speak", "shout", default))
        .with_state(text=text)
        .with_entrypoint("speak")
        .build()
    )
