"""Burr fixtures: BurrInstrumentor on real SDK providers, and small real Burr apps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from burr.core import Application, ApplicationBuilder, State, action, default, expr
from burr.core.action import streaming_action
from conftest import Telemetry, instrumented_telemetry

from reasonflow_otel.instrumentation.burr import BurrInstrumentor

ENGINE = {"reasonflow.engine": "burr"}


@pytest.fixture
def make_burr_telemetry() -> Iterator[Callable[..., Telemetry]]:
    """Instrument Burr with given settings (keywords) and an optional sampler."""
    yield from instrumented_telemetry(BurrInstrumentor())


@pytest.fixture
def burr_telemetry(make_burr_telemetry: Callable[..., Telemetry]) -> Telemetry:
    return make_burr_telemetry()


class Flaky(Exception):
    """Raised by ``check`` in an app built with ``fail=True``."""


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


def streamer(text: str = "one two three", speaker: Any = speak) -> Application:
    return (
        ApplicationBuilder()
        .with_actions(speak=speaker, shout=shout)
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
    return streamer(text, aspeak)
