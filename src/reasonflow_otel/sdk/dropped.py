"""``reasonflow.spans.dropped``: every span the batch processors we install did not deliver.

A span is lost at the batch processor's full queue (the backend or the disk is slower
than the app), after the processor was shut down, or in a failed export (backend down,
disk full). The SDK logs a full queue at most every 20 s and counts it only when
``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED`` is set; a process that runs for months may
never reach the exit report. So each of our span processors counts its losses by cause,
and one ObservableCounter reports them on every collection (nothing on the span path):

- ``error.type=queue_full`` / ``already_shutdown``: counted by the SDK's own drop hook
  (``BatchProcessor._metrics.drop_items``, SDK 1.45), wrapped here;
- ``error.type=export_failed``: spans in exports that failed or raised (``ExportGate``).

``otel.component.name`` is the exporter's entry-point name.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
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


class QueueDrops:
    """Wraps the SDK batch processor's metrics hook: counts what it drops, then hands on."""

    def __init__(self, hook: Any) -> None:
        self._hook = hook
        self._lock = threading.Lock()  # taken only when a span is dropped
        self.counts: Counter[str] = Counter({QUEUE_FULL: 0})  # error.type -> spans

    def register_queue_size(self, get_queue_size: Callable[[], int]) -> None:
        self._hook.register_queue_size(get_queue_size)

    def drop_items(self, count: int, error_type: str = QUEUE_FULL) -> None:
        with self._lock:
            self.counts[error_type] += count
        self._hook.drop_items(count, error_type)

    def finish_items(self, count: int, *error: Any) -> None:
        """SDK 1.44 also passes the export error (counted by the export gate, not here)."""
        self._hook.finish_items(count, *error)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def count_queue_drops(batch_processor: Any) -> QueueDrops | None:
    """Count the drops of an SDK ``BatchProcessor``; None where the SDK has no such hook."""
    hook = getattr(batch_processor, "_metrics", None)
    if hook is None or not callable(getattr(hook, "drop_items", None)):
        return None
    drops = batch_processor._metrics = QueueDrops(hook)
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
