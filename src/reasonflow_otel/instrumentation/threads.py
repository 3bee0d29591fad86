"""Threads keep their parent: the contrib threading instrumentation, brought along once.

contextvars do not cross into a new ``Thread`` or a ``ThreadPoolExecutor``
worker, so a span opened there would lose the node that started the thread.
Every engine instrumentor holds the contrib ``ThreadingInstrumentor`` while it
is instrumented; it is turned on only if nobody else did (``instrument()`` and
``opentelemetry-instrument`` also load it) and off when the last holder that
turned it on lets go. ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=threading`` wins.
"""

from __future__ import annotations

import threading

from opentelemetry.instrumentation.threading import ThreadingInstrumentor

from reasonflow_otel.settings import instrumentation_disabled

_lock = threading.Lock()
_holders = 0
_we_turned_it_on = False


def hold() -> None:
    """One more engine instrumentor needs thread context propagation."""
    global _holders, _we_turned_it_on
    with _lock:
        _holders += 1
        threading_instrumentor = ThreadingInstrumentor()
        if threading_instrumentor.is_instrumented_by_opentelemetry:
            return
        if instrumentation_disabled("threading"):
            return
        threading_instrumentor.instrument()
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
