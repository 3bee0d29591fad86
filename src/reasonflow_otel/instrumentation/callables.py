"""Plain Python callables as workflow and node runs: the one wrapper behind both the
by-name instrumentation (``REASONFLOW_OTEL_TRACE_METHODS``) and the decorators.

A wrapper is installed once (when a function is decorated, or when a named one is
resolved) and asks at call time for the active recorder, which the
``reasonflow_methods`` instrumentor provides while it is instrumented; with none,
the original runs unchanged. Functions, methods, static and class methods, async
functions, generators and async generators are supported; for the last two the
run covers the whole iteration. Only the public recorder API is used.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

from opentelemetry import context
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from wrapt import FunctionWrapper

from reasonflow_otel import semconv
from reasonflow_otel.recorder import (
    NodeInfo,
    Recorder,
    Run,
    traced_async_generator,
    traced_generator,
)

ENGINE = semconv.ENGINE_PYTHON
KIND_STEP = "step"
_NO_RESULT = object()

_recorder: Recorder | None = None

Handler = Callable[[Callable[..., Any], Any, tuple, dict], Any]


def activate(recorder: Recorder | None) -> None:
    """Make ``recorder`` the one every traced callable reports to (None: none)."""
    global _recorder
    _recorder = recorder


def active_recorder() -> Recorder | None:
    return _recorder


def function_of(target: Any) -> Callable[..., Any]:
    """The plain function inside a staticmethod or classmethod object."""
    return getattr(target, "__func__", target)


def default_name(function: Callable[..., Any]) -> str:
    """The qualified name without its enclosing functions: ``Engine.run``, ``fetch``."""
    qualname = getattr(function, "__qualname__", None) or getattr(function, "__name__", "call")
    return qualname.rpartition("<locals>.")[2]


def describe(
    target: Any, name: str | None, *, is_flow: bool, category: str | None = None
) -> NodeInfo:
    """The run description of a callable: its name, qualified name and kind."""
    function = function_of(target)
    return NodeInfo(
        ENGINE,
        name or default_name(function),
        default_name(function),
        _kind(function),
        is_flow=is_flow,
        category=category,
    )


@functools.lru_cache(maxsize=1024)
def describe_step(name: str, category: str | None) -> NodeInfo:
    """A ``step`` block's description, made once per name and category."""
    return NodeInfo(ENGINE, name, name, KIND_STEP, is_flow=False, category=category)


def traced(target: Any, info: NodeInfo) -> FunctionWrapper:
    """``target`` (function or static/class method object) wrapped to run as ``info``."""
    return FunctionWrapper(target, _HANDLERS[info.kind](info))


def start(
    info: NodeInfo, owner: object = None, *, attach: bool = True
) -> tuple[Recorder, Run] | None:
    """A run of ``info`` on the active recorder, or None (not instrumented, suppressed)."""
    recorder = _recorder
    if recorder is None or not is_instrumentation_enabled():
        return None
    run = recorder.start(info, owner, attach=attach)
    return None if run is None else (recorder, run)


def end(
    recorder: Recorder, run: Run, error: BaseException | None = None, result: Any = _NO_RESULT
) -> None:
    """Attempts the code reported, its result when captured, then the end of the run."""
    if run.attempts:  # attempts reported so far were retried: this one is the last
        recorder.attempts_used(run, run.attempts + 1)
    if error is None and result is not _NO_RESULT:
        recorder.capture(run, "exec", result)
    recorder.finish(run, error=error)


def _kind(function: Callable[..., Any]) -> str:
    if inspect.isasyncgenfunction(function):
        return "async_generator"
    if inspect.iscoroutinefunction(function):
        return "async"
    if inspect.isgeneratorfunction(function):
        return "generator"
    return "function"


# --- One handler per kind of callable (wrapt's wrapper signature) ---------------------


def _function(info: NodeInfo) -> Handler:
    def run_function(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        started = start(info, instance)
        if started is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as error:
            end(*started, error)
            raise
        end(*started, result=result)
        return result

    return run_function


def _coroutine(info: NodeInfo) -> Handler:
    async def run_coroutine(
        wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict
    ) -> Any:
        started = start(info, instance)
        if started is None:
            return await wrapped(*args, **kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as error:
            end(*started, error)
            raise
        end(*started, result=result)
        return result

    return run_coroutine


def _iteration(info: NodeInfo, lazily: Callable[..., Any]) -> Handler:
    """Generators: the run starts at the first step, under the context of the call, and
    ends with the iteration; a generator that never starts makes no run to leave open."""

    def run_iteration(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        generator = wrapped(*args, **kwargs)
        if _recorder is None:
            return generator
        return lazily(info, instance, context.get_current(), generator)

    return run_iteration


def _start_in(parent: Context, info: NodeInfo, instance: Any) -> tuple[Recorder, Run] | None:
    token = context.attach(parent)
    try:
        return start(info, instance, attach=False)
    finally:
        context.detach(token)


def _generator(
    info: NodeInfo, instance: Any, parent: Context, generator: Generator[Any, Any, Any]
) -> Generator[Any, Any, Any]:
    started = _start_in(parent, info, instance)
    if started is None:
        return (yield from generator)
    return (yield from traced_generator(*started, generator))


async def _async_generator(
    info: NodeInfo, instance: Any, parent: Context, generator: AsyncGenerator[Any, Any]
) -> AsyncGenerator[Any, Any]:
    """``yield from`` for async generators: items, ``asend``, ``athrow`` and ``aclose``."""
    started = _start_in(parent, info, instance)
    inner = generator if started is None else traced_async_generator(*started, generator)
    step: Callable[[Any], Any] = inner.asend
    value: Any = None
    while True:
        try:
            item = await step(value)
        except StopAsyncIteration:
            return
        try:
            value, step = (yield item), inner.asend
        except GeneratorExit:
            await inner.aclose()
            raise
        except BaseException as thrown:
            value, step = thrown, inner.athrow


_HANDLERS: dict[str, Callable[[NodeInfo], Handler]] = {
    "function": _function,
    "async": _coroutine,
    "generator": functools.partial(_iteration, lazily=_generator),
    "async_generator": functools.partial(_iteration, lazily=_async_generator),
}
