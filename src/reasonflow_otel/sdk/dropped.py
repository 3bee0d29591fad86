"""``reasonflow.spans.dropped``: every span the batch processors we install did not deliver.

A span is lost at the batch processor's full queue (the backend or the disk is slower
than the app), after the processor was shut down, or in a failed export (backend down,
disk full). The SDK logs a full queue at most every 20 s and counts it only when
``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED`` is set; a process that runs for months may
never reach the exit report. So each of our span processors counts its losses by cause,
and one ObservableCounter reports them on every collection (nothing on the span path):

- ``error.type=queue_full``: counted by the batch processor's queue itself
  (:class:`EvictionCountingQueue`). The SDK's own drop hook cannot be trusted with it:
  it counts a drop when it sees the queue full and appends afterwards, and its worker
  may take a span in between (counted as dropped, yet delivered);
- ``error.type=already_shutdown``: counted by the SDK's own drop hook
  (``BatchProcessor._metrics.drop_items``, SDK 1.44), wrapped here;
- ``error.type=export_failed``: spans in exports that failed or raised (``ExportGate``).

``otel.component.name`` is the exporter's entry-point name.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from reasonflow_otel import semconv
from reasonflow_otel.version import __version__

QUEUE_FULL = "queue_full"  # the SDK's and the semantic conventions' value
EXPORT_FAILED = "export_failed"


class CountsDrops(Protocol):
    """A span processor that knows what it dropped, by cause."""

    name: str

    def dropped(self) -> dict[str, int]: ...


class EvictionCountingQueue(deque):
    """The SDK batch processor's queue (a bounded deque) that counts the items it pushes
    out when full, where it happens: appending and the worker's pop share a lock, so
    "full" and the append that drops are one step."""

    def __init__(self, items: Iterable[Any], maxlen: int | None) -> None:
        super().__init__(items, maxlen)
        self.evicted = 0
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):  # a fork may copy the lock taken
            new_lock = weakref.WeakMethod(self._new_lock)
            os.register_at_fork(after_in_child=lambda: _call_if_alive(new_lock))

    def appendleft(self, item: Any) -> None:
        with self._lock:
            if len(self) == self.maxlen:
                self.evicted += 1
            super().appendleft(item)

    def pop(self) -> Any:
        with self._lock:
            return super().pop()

    def _new_lock(self) -> None:
        self._lock = threading.Lock()


def _call_if_alive(method: weakref.WeakMethod) -> None:
    alive = method()
    if alive is not None:
        alive()


class QueueDrops:
    """Wraps the SDK batch processor's metrics hook: counts what it drops, then hands on."""

    def __init__(self, hook: Any, queue: EvictionCountingQueue) -> None:
        self._hook = hook
        self._queue = queue
        self._lock = threading.Lock()  # taken only when a span is dropped
        self.counts: Counter[str] = Counter()  # error.type -> spans, but queue_full

    def register_queue_size(self, get_queue_size: Callable[[], int]) -> None:
        self._hook.register_queue_size(get_queue_size)

    def drop_items(self, count: int, *cause: str) -> None:
        """SDK 1.45 names the cause; 1.44 calls this for a full queue only, with no cause
        (and its hook takes none: the call is handed on as it came)."""
        error_type = cause[0] if cause else QUEUE_FULL
        if error_type != QUEUE_FULL:  # the queue counts those exactly
            with self._lock:
                self.counts[error_type] += count
        self._hook.drop_items(count, *cause)

    def finish_items(self, count: int, *error: Any) -> None:
        """SDK 1.44 also passes the export error (counted by the export gate, not here)."""
        self._hook.finish_items(count, *error)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {QUEUE_FULL: self._queue.evicted, **self.counts}


def count_queue_drops(batch_processor: Any) -> QueueDrops | None:
    """Count the drops of an SDK ``BatchProcessor``; None where the SDK has no such hook
    or queue (both are internals, as of SDK 1.44 and 1.45)."""
    hook = getattr(batch_processor, "_metrics", None)
    queue = getattr(batch_processor, "_queue", None)
    if not callable(getattr(hook, "drop_items", None)) or type(queue) is not deque:
        return None
    # Called right after the processor is made: its queue is still empty and unused.
    counting_queue = batch_processor._queue = EvictionCountingQueue(queue, queue.maxlen)
    drops = batch_processor._metrics = QueueDrops(hook, counting_queue)
    return drops


_processors: weakref.WeakSet[Any] = weakref.WeakSet()
_observed_by: weakref.WeakSet[Any] = weakref.WeakSet()  # meter providers with the counter
_observing_lock = threading.Lock()


def track(processor: CountsDrops) -> None:
    """Report ``processor``'s drops in ``reasonflow.spans.dropped`` for as long as it lives."""
    _processors.add(processor)


def observe_dropped_spans(meter_provider: Any = None) -> None:
    """Create the counter on ``meter_provider`` (default: the global one), once per provider."""
    provider = meter_provider or metrics.get_meter_provider()
    with _observing_lock:
        if provider in _observed_by:
            return
        _observed_by.add(provider)
    meter = metrics.get_meter(semconv.METER_SCOPE, __version__, provider)
    meter.create_observable_counter(
        semconv.METRIC_SPANS_DROPPED,
        callbacks=[_observe],
        unit="{span}",
        description="Spans not delivered, by cause: a full queue, a failed export.",
    )


def _observe(options: CallbackOptions) -> Iterable[Observation]:
    return list(_observations(list(_processors)))


def _observations(processors: list[CountsDrops]) -> Iterator[Observation]:
    for processor in processors:
        for cause, count in processor.dropped().items():
            attributes = {semconv.ERROR_TYPE: cause, semconv.OTEL_COMPONENT_NAME: processor.name}
            yield Observation(count, attributes)
