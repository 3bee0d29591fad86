"""Runs that span a generator's whole iteration, sync or async.

A run started with ``Recorder.start(..., attach=False)`` is made current only
while the generator computes its next item, so spans the generator opens nest
under the run while the consumer's code between items keeps its own context.
The run ends when the generator returns, raises, is closed, or is
garbage-collected; no context token ever outlives the step that attached it,
so ending in another context or thread is safe.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
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


@contextlib.contextmanager
def current(run: Run) -> Iterator[None]:
    """``run`` (started with ``attach=False``) current for the ``with`` block only."""
    token = context.attach(run.context)
    try:
        yield
    finally:
        context.detach(token)


class TracedSteps:
    """An iterator over ``generator`` whose run ends with its last item, not with the generator.

    For engines that stop pulling once a generator yields its final item (leaving it
    paused): ``run`` (started with ``attach=False``) is current while an item is
    computed, and ``end(error)`` is called once: when an item satisfies ``is_last``,
    when the generator raises or ends, or when this iterator is closed or
    garbage-collected. ``end`` finishes the run; a consumer stopping early is no error.
    """

    def __init__(
        self,
        run: Run,
        generator: Any,
        is_last: Callable[[Any], bool],
        end: Callable[[BaseException | None], None],
    ) -> None:
        self.end = end
        self._run = run
        self._generator = generator
        self._is_last = is_last
        self._done = False

    def _step_context(self) -> object | None:
        return None if self._done else context.attach(self._run.context)

    def _after(self, item: Any) -> Any:
        if not self._done and self._is_last(item):
            self._end(None)
        return item

    def stop(self, error: BaseException | None = None) -> None:
        """The consumer is done with the stream (for an engine that says so): end now."""
        self._end(error)

    def _end(self, error: BaseException | None) -> None:
        if not self._done:
            self._done = True
            self.end(None if isinstance(error, GeneratorExit) else error)

    def __del__(self) -> None:
        self._end(None)  # abandoned before its last item: the run ends, not as a failure


class TracedStepIterator(TracedSteps):
    """:class:`TracedSteps` over a synchronous generator."""

    def __iter__(self) -> TracedStepIterator:
        return self

    def __next__(self) -> Any:
        token = self._step_context()
        try:
            item = next(self._generator)
        except BaseException as error:
            self._end(None if isinstance(error, StopIteration) else error)
            raise
        finally:
            if token is not None:
                context.detach(token)
        return self._after(item)

    def close(self) -> None:
        try:
            self._generator.close()
        finally:
            self._end(None)


class TracedAsyncStepIterator(TracedSteps):
    """:class:`TracedSteps` over an asynchronous generator."""

    def __aiter__(self) -> TracedAsyncStepIterator:
        return self

    async def __anext__(self) -> Any:
        token = self._step_context()
        try:
            item = await self._generator.__anext__()
        except BaseException as error:
            self._end(None if isinstance(error, StopAsyncIteration) else error)
            raise
        finally:
            if token is not None:
                context.detach(token)
        return self._after(item)

    async def aclose(self) -> None:
        try:
            await self._generator.aclose()
        finally:
            self._end(None)
