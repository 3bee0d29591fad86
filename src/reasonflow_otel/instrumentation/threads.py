"""Threads keep their parent: the current context carried into new threads and pool workers.

contextvars do not cross into a new ``Thread``, a ``Timer`` or a ``ThreadPoolExecutor``
worker, so a span opened there would lose the node that started the thread.
:class:`ThreadingInstrumentor` does what the contrib ``opentelemetry-instrumentation-
threading`` does (the context at ``start()``/``submit()`` is attached around the thread's
``run()``/the task), which we cannot depend on: it is not released with every instrumentation
version and pins the one it is released with. It answers to the same name in
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (``threading``).

Every engine instrumentor holds it while it is instrumented; it is turned on only if nobody
else did (``instrument()`` also does) and off when the last holder that turned it on lets go.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from concurrent import futures
from typing import Any

from opentelemetry import context
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from reasonflow_otel.settings import instrumentation_disabled

NAME = "threading"
_THREAD_CLASSES = (threading.Thread, threading.Timer)


class ThreadingInstrumentor(BaseInstrumentor):
    """Carries the OpenTelemetry context into threads, timers and thread pool tasks."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        for thread_class in _THREAD_CLASSES:
            wrap_function_wrapper(thread_class, "start", _remember_context)
            wrap_function_wrapper(thread_class, "run", _run_in_remembered_context)
        wrap_function_wrapper(futures.ThreadPoolExecutor, "submit", _submit_in_context)

    def _uninstrument(self, **kwargs: Any) -> None:
        for thread_class in _THREAD_CLASSES:
            unwrap(thread_class, "start")
            unwrap(thread_class, "run")
        unwrap(futures.ThreadPoolExecutor, "submit")


def _remember_context(start: Callable[..., Any], thread: Any, args: Any, kwargs: Any) -> Any:
    thread._reasonflow_context = context.get_current()
    return start(*args, **kwargs)


def _run_in_remembered_context(run: Callable[..., Any], thread: Any, args: Any, kwargs: Any) -> Any:
    remembered = getattr(thread, "_reasonflow_context", None)
    if remembered is None:
        return run(*args, **kwargs)
    token = context.attach(remembered)
    try:
        return run(*args, **kwargs)
    finally:
        context.detach(token)


def _submit_in_context(submit: Callable[..., Any], pool: Any, args: Any, kwargs: Any) -> Any:
    task, *rest = args
    submitted = context.get_current()

    def task_in_context(*task_args: Any, **task_kwargs: Any) -> Any:
        token = context.attach(submitted)
        try:
            return task(*task_args, **task_kwargs)
        finally:
            context.detach(token)

    return submit(task_in_context, *rest, **kwargs)


_lock = threading.Lock()
_holders = 0
_we_turned_it_on = False


def hold() -> None:
    """One more engine instrumentor needs thread context propagation."""
    global _holders, _we_turned_it_on
    with _lock:
        _holders += 1
        instrumentor = ThreadingInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry or instrumentation_disabled(NAME):
            return
        instrumentor.instrument()
        _we_turned_it_on = True


def release() -> None:
    """An engine instrumentor was uninstrumented: the last one undoes what we turned on."""
    global _holders, _we_turned_it_on
    with _lock:
        _holders = max(_holders - 1, 0)
        if _holders or not _we_turned_it_on:
            return
        _we_turned_it_on = False
        ThreadingInstrumentor().uninstrument()
