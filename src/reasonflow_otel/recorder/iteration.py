"""Runs that span a generator's whole iteration, sync or async.

A run started with ``Recorder.start(..., attach=False)`` is made current only
while the generator computes its next item, so spans the generator opens nest
under the run while the consumer's code between items keeps its own context.
The run ends when the generator returns, raises, is closed, or is
garbage-collected; no context token ever outlives the step that attached it,
so ending in another context or thread is safe.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, TypeVar

from opentelemetry import context

from reasonflow_otel.recorder.core import Recorder, Run

Y = TypeVar("Y")
S = TypeVar("S")
R = TypeVar("R")


def traced_generator(
    recorder: Recorder, run: Run, generator: Generator[Y, S, R]
) -> Generator[Y, S, R]:
    """``generator`` with ``run`` current while it runs, finishing ``run`` when it ends."""
    error: BaseException | None = None
    try:
        step: Callable[[Any], Y] = generator.send
        value: Any = None
        while True:
            token = context.attach(run.context)
            try:
                item = step(value)
            except StopIteration as stop:
                return stop.value
            finally:
                context.detach(token)
            try:
                value, step = (yield item), generator.send
            except GeneratorExit:
                _close(run, generator)
                raise
            except BaseException as thrown:  # consumer's throw(): the generator decides
                value, step = thrown, generator.throw
    except GeneratorExit:
        raise
    except BaseException as raised:
        error = raised
        raise
    finally:
        recorder.finish(run, error=error)


async def traced_async_generator(
    recorder: Recorder, run: Run, generator: AsyncGenerator[Y, S]
) -> AsyncGenerator[Y, S]:
    """``generator`` with ``run`` current while it runs, finishing ``run`` when it ends."""
    error: BaseException | None = None
    try:
        step: Callable[[Any], Any] = generator.asend
        value: Any = None
        while True:
            token = context.attach(run.context)
            try:
                item = await step(value)
            except StopAsyncIteration:
                return
            finally:
                context.detach(token)
            try:
                value, step = (yield item), generator.asend
            except GeneratorExit:
                await _aclose(run, generator)
                raise
            except BaseException as thrown:
                value, step = thrown, generator.athrow
    except GeneratorExit:
        raise
    except BaseException as raised:
        error = raised
        raise
    finally:
        recorder.finish(run, error=error)


def _close(run: Run, generator: Generator[Any, Any, Any]) -> None:
    token = context.attach(run.context)
    try:
        generator.close()
    finally:
        context.detach(token)


async def _aclose(run: Run, generator: AsyncGenerator[Any, Any]) -> None:
    token = context.attach(run.context)
    try:
        await generator.aclose()
    finally:
        context.detach(token)
