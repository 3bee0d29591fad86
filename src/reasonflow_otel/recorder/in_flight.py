"""The in-flight node gauge, kept without a lock or a metric call per node run.

An UpDownCounter would cost two SDK measurements per node run, each as dear as
a histogram point. Instead every place a node runs at (engine, flow, node)
counts its starts and its ends on two ``itertools.count``: ``next()`` on one is
a single C call, atomic under the GIL, so any thread may start or end a run
without a lock, and an ObservableUpDownCounter reports starts minus ends
whenever a metric reader collects. The figure is exact, not sampled.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from reasonflow_otel import semconv
from reasonflow_otel.guard import report_internal_error
from reasonflow_otel.recorder.bounded import DEFAULT_CARDINALITY_LIMIT, SeriesCap

_NODE_METRICS = f"{semconv.METRIC_NODE_ACTIVE} (and every reasonflow.node.* metric)"


class InFlight:
    """Node runs in progress at one place, with that place's metric attributes."""

    __slots__ = ("_ends", "_starts", "attributes")

    def __init__(self, attributes: Mapping[str, Any]) -> None:
        self.attributes = attributes
        self._starts = itertools.count()
        self._ends = itertools.count()

    def start(self) -> None:
        next(self._starts)

    def end(self) -> None:
        next(self._ends)

    def value(self) -> int:
        """Starts minus ends.

        Reading advances both counters by one, which cancels out. Ends are read
        first: a run that ends between the two reads still counts as running,
        so the value may be high for that instant but is never below zero.
        """
        ended = next(self._ends)
        return next(self._starts) - ended


class InFlightGauge:
    """``reasonflow.node.active``: one :class:`InFlight` per place, observed on collection.

    Its callback is also the meter's collection hook: the SDK runs it when a
    reader collects, before that reader's storage is read, and it first runs
    the functions given to :meth:`on_collect` (queued histogram values merge).
    """

    def __init__(self, meter: Meter) -> None:
        # Every node metric takes its attributes from a place: capping places caps them all.
        self._places = SeriesCap(_NODE_METRICS, InFlight, DEFAULT_CARDINALITY_LIMIT)
        self._collect_hooks: list[Callable[[], None]] = []
        meter.create_observable_up_down_counter(
            semconv.METRIC_NODE_ACTIVE,
            callbacks=[self._observe],
            unit="{node}",
            description="Node runs in progress.",
        )

    def limit_series(self, limit: int) -> None:
        """At most ``limit`` places, the overflow place included (see ``bounded.SeriesCap``)."""
        self._places.limit = limit

    def get(self, key: Hashable) -> InFlight | None:
        return self._places.find(key)

    def add(self, key: Hashable, attributes: Mapping[str, Any]) -> InFlight:
        """The counter of a new place (or the one another thread added first, or the overflow)."""
        return self._places.series(key, attributes)

    def on_collect(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` whenever a reader collects, before its data is read."""
        self._collect_hooks.append(hook)

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        for hook in self._collect_hooks:
            try:
                hook()
            except Exception as error:  # one failing hook must not cost the others
                report_internal_error("merging metric points before a collection", error)
        return [Observation(place.value(), place.attributes) for place in self._places.values()]


_lock = threading.Lock()
_gauges: weakref.WeakKeyDictionary[Meter, InFlightGauge] = weakref.WeakKeyDictionary()


def in_flight_gauge(meter: Meter) -> InFlightGauge:
    """The gauge of ``meter``, created once.

    The SDK keeps the first callbacks registered under an instrument name, so a
    meter instrumented again (after ``uninstrument()``) must reuse its gauge.
    """
    with _lock:
        gauge = _gauges.get(meter)
        if gauge is None:
            gauge = _gauges[meter] = InFlightGauge(meter)
        return gauge
