"""Workflow telemetry for code on no engine: ``@workflow``, ``@node`` and ``step``.

    @reasonflow_otel.workflow
    def checkout(cart): ...

    @reasonflow_otel.node(category="ai_provider")
    async def summarize(text): ...

    with reasonflow_otel.step("render", category="ui") as step:
        step.set_attribute("app.pages", 3)

They make the same spans and metric points as an engine adapter
(``invoke_workflow {name}`` and ``{name}``, ``reasonflow.engine=python``) through
the same wrapper as ``REASONFLOW_OTEL_TRACE_METHODS``, and report while
``reasonflow_otel.instrument()`` or ``opentelemetry-instrument`` is active; the
rest of the time the decorated code runs as if undecorated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

from reasonflow_otel import semconv
from reasonflow_otel.instrumentation import callables
from reasonflow_otel.recorder import NodeInfo, Run, current_run

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["node", "step", "workflow"]


@overload
def workflow(function: F, /) -> F: ...
@overload
def workflow(*, name: str | None = None, category: str | None = None) -> Callable[[F], F]: ...
def workflow(
    function: Any = None, /, *, name: str | None = None, category: str | None = None
) -> Any:
    """Trace each call as a workflow run: span ``invoke_workflow {name}``.

    ``name`` defaults to the qualified name (``Engine.run``); usable bare or called.
    """
    return _decorate(function, name, category, is_flow=True)


@overload
def node(function: F, /) -> F: ...
@overload
def node(*, name: str | None = None, category: str | None = None) -> Callable[[F], F]: ...
def node(function: Any = None, /, *, name: str | None = None, category: str | None = None) -> Any:
    """Trace each call as a node run: span ``{name}``, child of the enclosing run.

    ``category`` (e.g. ``ai_provider``) goes on the span and the metric points.
    """
    return _decorate(function, name, category, is_flow=False)


def _decorate(function: Any, name: str | None, category: str | None, *, is_flow: bool) -> Any:
    def decorate(target: Any) -> Any:
        info = callables.describe(target, name, is_flow=is_flow, category=category)
        return callables.traced(target, info)

    return decorate if function is None else decorate(function)


class step:  # lower case: used like a function, ``with reasonflow_otel.step(...)``
    """A node run for a block of code: ``with step(name, category=None) as s:``.

    Also ``async with``. An exception leaving the block marks the run failed and
    passes through unchanged. Inside, ``s`` can add span attributes, record the
    block's result (when payload capture is on), mark an error that was handled,
    and report retries. ``step.current()`` gives the same handle for the
    innermost run, e.g. inside a ``@node`` function.
    """

    __slots__ = ("_error", "_info", "_run")

    def __init__(self, name: str, category: str | None = None) -> None:
        self._info: NodeInfo | None = callables.describe_step(name, category)
        self._run: Run | None = None
        self._error: BaseException | None = None

    @classmethod
    def current(cls) -> step:
        """A handle on the innermost run in this context (inert when there is none).

        It reports attributes, results and retries; the run ends as its own code
        (decorator, engine) ends it.
        """
        handle = cls.__new__(cls)
        handle._info = handle._error = None
        handle._run = current_run() if callables.active_recorder() is not None else None
        return handle

    # --- The block ---------------------------------------------------------------------

    def __enter__(self) -> step:
        if self._info is not None:
            self._run = callables.start(self._info)
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._info is None or self._run is None:
            return
        run, self._run = self._run, None
        callables.end(run, error or self._error)

    async def __aenter__(self) -> step:
        return self.__enter__()

    async def __aexit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(error_type, error, traceback)

    # --- What the code reports -----------------------------------------------------------

    def set_attribute(self, key: str, value: Any) -> None:
        """An attribute on this run's span (never on metrics: any cardinality is fine)."""
        self.set_attributes({key: value})

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._run is not None:
            self._run.set_attributes(attributes)

    def set_result(self, value: Any) -> None:
        """The block's result, recorded like an exec result when capture asks for it."""
        if self._run is not None:
            self._run.capture("exec", semconv.NODE_EXEC_RESULT, value)

    def set_error(self, error: BaseException) -> None:
        """End this run failed with ``error``, which the code handled instead of raising."""
        self._error = error

    def retry(self, error: BaseException) -> None:
        """An attempt failed with ``error`` and is tried again: a retry event and count."""
        if self._run is not None:  # the attempt that failed, then the next one
            self._run.attempt(max(self._run.attempts, 1) + 1, failed=error)
