"""Pool workers deliver each flow's spans when its top-level run ends.

A ``multiprocessing`` pool worker leaves through ``os._exit()``, and a pool used
as ``with Pool(...)`` is terminated (SIGTERM) on the way out: whatever its batch
processor still held was lost, silently. So in a multiprocessing child, the end
of every top-level run flushes the global tracer provider, for at most
:data:`WORKER_FLUSH_SECONDS`; a flush that cannot finish in time is counted and
logged, once per worker with the count so far each time it happens again.
"""

from __future__ import annotations

import logging
import os
import sys

from opentelemetry import trace

from reasonflow_otel.guard import report_internal_error
from reasonflow_otel.sdk.delivery import flush

_logger = logging.getLogger(__name__)

WORKER_FLUSH_SECONDS = 2.0
_late_flushes = 0


def in_multiprocessing_child() -> bool:
    """Started by ``multiprocessing`` (a pool worker or a ``Process``): its exit skips atexit."""
    multiprocessing = sys.modules.get("multiprocessing")
    return multiprocessing is not None and multiprocessing.parent_process() is not None


def top_level_run_ended() -> None:
    """In a multiprocessing child, deliver what the run produced before the pool ends it."""
    if not in_multiprocessing_child():
        return
    try:
        provider = trace.get_tracer_provider()
        if hasattr(provider, "force_flush") and not flush([provider], WORKER_FLUSH_SECONDS):  # type: ignore[list-item]
            _report_late_flush()
    except Exception as error:  # called at the end of the app's flow: never raise there
        report_internal_error("flushing a worker's spans", error)


def _report_late_flush() -> None:
    global _late_flushes
    _late_flushes += 1
    _logger.warning(
        "reasonflow-otel: worker process %d could not deliver a flow's spans within %.0f s "
        "(%d flow run(s) so far); they are lost if the pool is terminated before the "
        "backend answers",
        os.getpid(),
        WORKER_FLUSH_SECONDS,
        _late_flushes,
    )
