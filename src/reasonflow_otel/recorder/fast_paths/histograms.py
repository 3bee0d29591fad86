"""Histograms recorded in process and merged into the SDK's metric pipeline on collection.

Why: ``Histogram.record`` costs 10-13 µs (a ``Measurement`` object, attribute
cleaning and hashing per reader and View, a lock, an exemplar offer), and a
node run records three points (duration, CPU time, memory growth). Here a node
run appends one entry to a queue; the SDK's own aggregations receive the
queued values in bulk.

How, and why it is exact. A :class:`HistogramGroup` holds instruments recorded
together with one attribute set (a node's three histograms; a flow's
duration). Each attribute set is a :class:`HistogramSeries`.

- The first value of a series goes through ``record`` itself, so the SDK
  creates that series' aggregation in every reader's storage at the time it
  would have (the start time of cumulative points stays the SDK's).
- Every later value is queued, in arrival order, on the group.
- The queue is merged when a reader collects (a callback of the meter's
  in-flight gauge, which the SDK runs before each reader's storage collects)
  and whenever it holds :data:`QUEUE_LIMIT` entries. Merging walks the same
  objects ``record`` walks: every reader's storage, every View matched to the
  instrument (``_ViewInstrumentMatch``, which the SDK makes per reader), the
  View's attribute filter and the SDK's attribute hashing to find the
  aggregation, and then, per aggregation, the statements of
  ``_ExplicitBucketHistogramAggregation.aggregate`` in the same order: the sum
  is added value by value, so even its rounding matches. Drop Views are
  skipped; any other aggregation (an exponential histogram a reader asked for)
  is fed through its own ``aggregate``. Values ``record`` would refuse
  (negative, not finite) are refused.
- A View's aggregation of a series is kept on the series, except where a
  delta collection discards the View's aggregations (SDK 1.45.2 replaces
  them with new ones, ``_reset_on_collect``). There the merge does what
  ``consume_measurement`` does: it holds the View's lock, gets each series'
  aggregation through ``_get_or_create_aggregation`` and adds to it before
  releasing the lock, so no value lands in a discarded aggregation.
- Aggregations are made in arrival order, through the SDK's own code, so the
  SDK's cardinality limit (1.45.2: 2000 attribute sets per View, then one
  ``otel.metric.overflow`` series) admits the series ``record`` would have
  admitted. Our own cap (``bounded.SeriesCap``) sends its overflow to a series
  with the same single attribute: the SDK's overflow series, which then takes
  values of both in arrival order.

So Views, attribute filtering, drop rules, temporality, readers and
exporters all stay the SDK's. What is given up: exemplars on queued values,
and the SDK's warning on a refused value.

This relies on SDK internals, and our dependency range spans several SDK releases.
:func:`histogram_group` checks them once per process by merging a few values into a
throwaway provider (a cumulative and a delta reader, collected twice) and comparing with
``record``; if anything differs or raises it logs one line and returns a
:class:`RecordingGroup` that calls ``record``. In our range SDK 1.45.1 and 1.45.2 merge
and 1.44 (no ``_hash_attributes``) records. The shape is told by what the SDK has
(``_reset_on_collect``, ``_get_or_create_aggregation``), never by its version string.
tests/test_histogram_equivalence.py runs at both ends of the range (tests/constraints/).
"""

from __future__ import annotations

import collections
import functools
import math
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import Histogram, Meter

from reasonflow_otel.recorder.bounded import DEFAULT_CARDINALITY_LIMIT
from reasonflow_otel.recorder.fast_paths import trials
from reasonflow_otel.recorder.histograms import HistogramSeries, RecordingGroup
from reasonflow_otel.recorder.in_flight import in_flight_gauge

# Entries queued before the recording thread merges them itself: bounds memory
# between collections (a few hundred kilobytes per group).
QUEUE_LIMIT = 4096


class HistogramGroup(RecordingGroup):
    """Instruments recorded together, queued in process and merged on collection."""

    def __init__(self, instruments: Sequence[Histogram], consumer: Any) -> None:
        super().__init__(instruments)
        self._consumer = consumer
        self._queue: collections.deque[tuple[HistogramSeries, Sequence[float]]] = (
            collections.deque()
        )
        self._merging = threading.Lock()

    def _cleaned(self, attributes: Mapping[str, Any]) -> Mapping[str, Any]:
        """The attributes a ``Measurement`` would hold, made by the SDK's own code."""
        from opentelemetry.sdk.metrics._internal.measurement import Measurement

        return dict(Measurement(0, 0, self._instruments[0], Context(), attributes).attributes)

    def record(self, series: HistogramSeries, values: Sequence[float]) -> None:
        if series.fresh:  # the SDK makes the series' aggregations, as record would
            self.flush()  # earlier values first: the order of additions is kept
            series.fresh = False
            super().record(series, values)
            return
        queue = self._queue
        queue.append((series, values))
        if len(queue) >= QUEUE_LIMIT:
            self.flush()

    def flush(self) -> None:
        """Merge every queued value into every reader's aggregations."""
        with self._merging:
            queue = self._queue
            entries = [queue.popleft() for _ in range(len(queue))]
            if entries:
                self._merge(entries)

    def _merge(self, entries: list[tuple[HistogramSeries, Sequence[float]]]) -> None:
        storages = list(self._consumer._reader_storages.values())
        for index, instrument in enumerate(self._instruments):
            for storage in storages:
                for match in storage._get_or_init_view_instrument_match(instrument):
                    if not isinstance(match._aggregation, _drop_aggregation()):
                        _merge_into_view(match, instrument, index, entries)


def _merge_into_view(match: Any, instrument: Histogram, index: int, entries: Iterable) -> None:
    """Values to one View's aggregations, each aggregation's in arrival order.

    Where a delta collection discards the View's aggregations (``_reset_on_collect``,
    SDK 1.45.2), the merge does what ``consume_measurement`` does there: it holds the
    View's lock while finding each series' current aggregation and adding to it.
    """
    if getattr(match, "_reset_on_collect", False):
        with match._lock:
            find = functools.partial(_current_aggregation, match)
            _aggregate(instrument, _values_by_aggregation(entries, index, find))
        return
    find = functools.partial(_aggregation_of, match, instrument)
    _aggregate(instrument, _values_by_aggregation(entries, index, find))


def _values_by_aggregation(
    entries: Iterable, index: int, find: Callable[[HistogramSeries, float], Any]
) -> dict[Any, list[float]]:
    """The instrument's values by the aggregation that takes them, in arrival order.

    ``find`` is asked once per series, in arrival order (the order in which the SDK
    makes aggregations, which decides what goes to its overflow series); None means
    it aggregated the value itself.
    """
    found: dict[HistogramSeries, Any] = {}
    by_aggregation: dict[Any, list[float]] = {}
    for series, values in entries:
        value = values[index]
        if not (value >= 0 and math.isfinite(value)):  # what record refuses
            continue
        aggregation = found.get(series)
        if aggregation is None:
            aggregation = find(series, value)
            if aggregation is None:
                continue
            found[series] = aggregation
        values_of = by_aggregation.get(aggregation)
        if values_of is None:
            values_of = by_aggregation[aggregation] = []
        values_of.append(value)
    return by_aggregation


def _aggregate(instrument: Histogram, by_aggregation: dict[Any, list[float]]) -> None:
    for aggregation, values in by_aggregation.items():
        if type(aggregation) is _explicit_aggregation():
            _add_to_explicit(aggregation, values)
        else:
            for value in values:  # attributes only matter to exemplars, not offered here
                aggregation.aggregate(_measurement(value, instrument, None), False)


def _aggregation_of(
    match: Any, instrument: Histogram, series: HistogramSeries, value: float
) -> Any:
    """The View's aggregation of the series, found as ``consume_measurement`` finds it.

    Kept on the series: this View never discards it. If the View has none yet (a
    reader added later, a series past the SDK's cardinality limit), an SDK with
    ``_get_or_create_aggregation`` (1.45.2) makes it or gives its overflow series';
    an older one (1.45.1) makes it from this value, and None is returned: the value
    is in.
    """
    aggregation = series.targets.get(match)
    if aggregation is not None:
        return aggregation
    key, attributes = _aggregation_key(match, series)
    aggregation = match._attributes_aggregation.get(key)
    if aggregation is None:
        if not hasattr(match, "_get_or_create_aggregation"):
            match.consume_measurement(_measurement(value, instrument, series.attributes), False)
            return None
        with match._lock:
            aggregation = match._get_or_create_aggregation(key, attributes)
    series.targets[match] = aggregation
    return aggregation


def _current_aggregation(match: Any, series: HistogramSeries, value: float) -> Any:
    """The aggregation the View holds now for the series (made, or its overflow series').

    Not kept: the next delta collection discards it. The View's lock must be held.
    """
    return match._get_or_create_aggregation(*_aggregation_key(match, series))


def _aggregation_key(match: Any, series: HistogramSeries) -> tuple[Any, dict[str, Any]]:
    """The key and attributes the View aggregates the series under (after its filter)."""
    from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes

    attributes = dict(series.attributes)
    keys = match._view._attribute_keys
    if keys is not None:
        attributes = {key: item for key, item in attributes.items() if key in keys}
    return _hash_attributes(attributes), attributes


def _add_to_explicit(aggregation: Any, values: list[float]) -> None:
    """``_ExplicitBucketHistogramAggregation.aggregate`` for many values, under one lock."""
    boundaries = aggregation._boundaries
    with aggregation._lock:
        if aggregation._value is None:
            aggregation._value = aggregation._get_empty_bucket_counts()
        counts = aggregation._value
        total = aggregation._sum
        for value in values:
            total += value
            counts[bisect_left(boundaries, value)] += 1
        aggregation._sum = total
        if aggregation._record_min_max:
            aggregation._min = min(aggregation._min, min(values))
            aggregation._max = max(aggregation._max, max(values))


def _measurement(value: float, instrument: Histogram, attributes: Mapping[str, Any] | None) -> Any:
    from opentelemetry.sdk.metrics._internal.measurement import Measurement

    return Measurement(value, time_ns(), instrument, Context(), attributes)


@functools.cache
def _explicit_aggregation() -> type:
    from opentelemetry.sdk.metrics._internal.aggregation import (
        _ExplicitBucketHistogramAggregation,
    )

    return _ExplicitBucketHistogramAggregation


@functools.cache
def _drop_aggregation() -> type:
    from opentelemetry.sdk.metrics._internal.aggregation import _DropAggregation

    return _DropAggregation


# --- One group per meter and instruments; the SDK checked once --------------------------

_lock = threading.Lock()
_groups: weakref.WeakKeyDictionary[Meter, dict[tuple[int, ...], RecordingGroup]] = (
    weakref.WeakKeyDictionary()
)


def histogram_group(
    meter: Meter,
    instruments: Sequence[Histogram],
    cardinality_limit: int = DEFAULT_CARDINALITY_LIMIT,
) -> RecordingGroup:
    """The group of these instruments on ``meter``, made once, with at most
    ``cardinality_limit`` series.

    A meter instrumented again (after ``uninstrument()``) gets the same
    instruments from the SDK, so it reuses their group: values still queued
    are not lost, and the collection hook is registered once.
    """
    # By identity: the SDK hands out the same objects again, and the API's proxy
    # instruments (OTEL_SDK_DISABLED, no provider yet) have no ``name``.
    key = tuple(id(instrument) for instrument in instruments)
    with _lock:
        groups = _groups.setdefault(meter, {})
        group = groups.get(key)
        if group is None:
            group = groups[key] = _new_group(meter, instruments)
        group.limit_series(cardinality_limit)
        return group


def _new_group(meter: Meter, instruments: Sequence[Histogram]) -> RecordingGroup:
    consumer = _sdk_consumer(meter, instruments)
    if consumer is None or not sdk_supports_merging():
        return RecordingGroup(instruments)
    group = HistogramGroup(instruments, consumer)
    in_flight_gauge(meter).on_collect(group.flush)
    return group


def _sdk_consumer(meter: Meter, instruments: Sequence[Histogram]) -> Any:
    """The SDK measurement consumer the instruments report to, or None (another SDK, a proxy)."""
    from opentelemetry.sdk.metrics import Meter as SdkMeter
    from opentelemetry.sdk.metrics._internal.instrument import _Histogram

    if not isinstance(meter, SdkMeter):
        return None
    consumer = getattr(meter, "_measurement_consumer", None)
    if not all(
        isinstance(instrument, _Histogram)
        and getattr(instrument, "_measurement_consumer", None) is consumer
        for instrument in instruments
    ):
        return None
    return consumer


@functools.cache
def sdk_supports_merging() -> bool:
    """Whether merging gives what ``record`` gives, tried on a throwaway provider.

    Run once per process. Any difference or error means the SDK's internals are
    not what this module was written against: one log line, and ``record``. SDK
    1.44, the lowest of our range, lacks the internals, so the line is
    informational: the data is the same.
    """
    return trials.agrees(
        _trial, "metric internals", "histograms are recorded one by one (slower, same data)"
    )


def _trial() -> tuple[list, list]:
    """The points of a few values merged by a group, and of the same values recorded.

    Collected twice by a cumulative and a delta reader, with values between: a merge
    into aggregations a delta collection discarded (as 1.45.2 does) would show here.
    """
    from opentelemetry.sdk.metrics import Histogram as HistogramKind
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import View

    delta = {HistogramKind: AggregationTemporality.DELTA}
    readers = [InMemoryMetricReader(), InMemoryMetricReader(preferred_temporality=delta)]
    views = [View(instrument_name="merged"), View(instrument_name="recorded")]
    provider = MeterProvider(metric_readers=readers, views=views, shutdown_on_exit=False)
    try:
        meter = provider.get_meter("reasonflow-otel-trial")
        merged, recorded = meter.create_histogram("merged"), meter.create_histogram("recorded")
        consumer = _sdk_consumer(meter, [merged])
        if consumer is None:
            raise TypeError("the SDK meter does not report to a measurement consumer")
        group = HistogramGroup([merged], consumer)
        series = group.series("trial", {"a": "b"})
        points: dict[str, list] = {"merged": [], "recorded": []}
        for values in ((0.1, 0.25, 3), (7.5, 0.1)):
            for value in values:
                group.record(series, (value,))
                recorded.record(value, {"a": "b"})
            group.flush()
            for reader in readers:
                _add_points(points, reader.get_metrics_data())
        return points["merged"], points["recorded"]
    finally:
        provider.shutdown()


def _add_points(points: dict[str, list], data: Any) -> None:
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points[metric.name] += (point_summary(p) for p in metric.data.data_points)


def point_summary(point: Any) -> tuple:
    """What a histogram point says, without its times and exemplars."""
    return (
        tuple(sorted(point.attributes.items())),
        point.count,
        point.sum,
        point.min,
        point.max,
        tuple(point.bucket_counts),
        tuple(point.explicit_bounds),
    )
