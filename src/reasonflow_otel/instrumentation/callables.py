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
from collections.abc import Callable
from typing import Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from wrapt import FunctionWrapper

from reasonflow_otel import semconv
from reasonflow_otel.recorder import NodeInfo, Recorder, Run, bracket
from reasonflow_otel.recorder.wrapping import shape_of

ENGINE = semconv.ENGINE_PYTHON
KIND_STEP = "step"
_NO_RESULT = object()
# A callable's node kind, by how a call of it runs.
_KINDS = {
    "call": "function",
    "await": "async",
    "iterate": "generator",
    "aiterate": "async_generator",
}

_recorder: Recorder | None = None


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

    def begin(instance: Any, args: tuple, kwargs: dict) -> Run | None:
        return start(info, instance)

    iterates = info.kind in (_KINDS["iterate"], _KINDS["aiterate"])
    return bracket(target, begin, _end_iteration if iterates else _end_call, _fail, gate=_active)


def start(info: NodeInfo, owner: object = None) -> Run | None:
    """A run of ``info`` on the active recorder, or None (not instrumented, suppressed)."""
    recorder = _recorder
    if recorder is None or not is_instrumentation_enabled():
        return None
    return recorder.begin(info, owner)


def end(run: Run, error: BaseException | None = None, result: Any = _NO_RESULT) -> None:
    """The run's result when captured, then its end."""
    if error is not None:
        run.fail(error)
        return
    if result is not _NO_RESULT:
        run.capture("exec", semconv.NODE_EXEC_RESULT, result)
    run.end()


def _active() -> bool:
    return _recorder is not None


def _end_call(run: Run, result: Any) -> None:
    end(run, result=result)


def _end_iteration(run: Run, result: Any) -> None:
    run.end()  # a generator's items are its result: nothing single to capture


def _fail(run: Run, error: BaseException) -> None:
    run.fail(error)


def _kind(function: Callable[..., Any]) -> str:
    return _KINDS[shape_of(function)]
