"""Bounds on what grows with the names a workflow uses.

Naming a flow after an order or request id makes a new name per run. Two things
would grow with such names for as long as the process lives: metric series
(the OpenTelemetry Python SDK limits them only from 1.45, silently, and not in 1.44)
and our caches of what a name is. Both are bounded here:

- :class:`SeriesCap` keeps at most ``limit`` series per metric, with the
  OpenTelemetry specification's cardinality-limit semantics: once ``limit - 1``
  attribute sets have series, points with any other set go to one overflow
  series whose only attribute is ``otel.metric.overflow=true``. Every run is
  still counted; one warning names the metric and the attribute that explodes.
- :class:`BoundedCache` is a dict that forgets everything when it would grow
  past its size: a cache, so a forgotten entry is only made again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

from opentelemetry.metrics import Counter

from reasonflow_otel import semconv

_logger = logging.getLogger(__name__)

# What the specification recommends, and REASONFLOW_OTEL_METRIC_CARDINALITY_LIMIT's default.
DEFAULT_CARDINALITY_LIMIT = 2000
# Entries a per-name cache holds before it starts afresh.
CACHE_ENTRIES = 4096

SeriesT = TypeVar("SeriesT")


class SeriesCap(Generic[SeriesT]):
    """The series of one metric by key: at most ``limit`` of them, the overflow series included.

    ``make(attributes)`` builds a series; a key is looked up once per series, so
    the cap costs nothing on a run whose series exists.
    """

    def __init__(
        self, metric: str, make: Callable[[Mapping[str, Any]], SeriesT], limit: int
    ) -> None:
        self.metric = metric
        self.limit = limit
        self._make = make
        self._series: dict[Hashable, SeriesT] = {}
        self._attributes: list[Mapping[str, Any]] = []  # of each series, to name the culprit
        self._overflow: SeriesT | None = None
        self._warned = False
        self._lock = threading.Lock()

    def find(self, key: Hashable) -> SeriesT | None:
        """The series made for ``key``, if any (None also for a key sent to the overflow)."""
        return self._series.get(key)

    def series(self, key: Hashable, attributes: Mapping[str, Any]) -> SeriesT:
        """The series of ``key`` (made with ``attributes`` if there is room), or the overflow."""
        series = self._series.get(key)
        if series is None:
            series = self._add(key, attributes)
        return series

    def values(self) -> list[SeriesT]:
        """Every series, the overflow series last (once made)."""
        series = list(self._series.values())
        return series if self._overflow is None else [*series, self._overflow]

    def _add(self, key: Hashable, attributes: Mapping[str, Any]) -> SeriesT:
        with self._lock:
            series = self._series.get(key)
            if series is not None:  # another thread made it first
                return series
            overflowed = semconv.SERIES_OVERFLOW in attributes  # by a cap upstream: no warning
            if not overflowed and len(self._series) < self.limit - 1:
                series = self._series[key] = self._make(attributes)
                self._attributes.append(attributes)
                return series
            if self._overflow is None:
                self._overflow = self._make({semconv.SERIES_OVERFLOW: True})
            if not (overflowed or self._warned):
                self._warned = True
                self._warn(attributes)
            return self._overflow

    def _warn(self, refused: Mapping[str, Any]) -> None:
        name, count = _most_varied(self._attributes, refused)
        _logger.warning(
            "reasonflow-otel: metric %s reached its cardinality limit of %d series "
            "(REASONFLOW_OTEL_METRIC_CARDINALITY_LIMIT); points with other attribute sets "
            "are counted in one series with %s=true. The attribute with the most values is "
            "%s (%d values, e.g. %r): name flows and nodes after what they do, not after "
            "ids, or drop it from metrics with a View",
            self.metric,
            self.limit,
            semconv.SERIES_OVERFLOW,
            name,
            count,
            refused.get(name),
        )


class CappedCounter:
    """A counter whose attribute sets are capped as a :class:`SeriesCap` caps series."""

    def __init__(self, counter: Counter, metric: str, limit: int) -> None:
        self._counter = counter
        self._sets: SeriesCap[Mapping[str, Any]] = SeriesCap(metric, dict, limit)

    def add(self, amount: int, attributes: Mapping[str, Any]) -> None:
        key = frozenset(attributes.items())
        self._counter.add(amount, self._sets.series(key, attributes))


def _most_varied(admitted: list[Mapping[str, Any]], refused: Mapping[str, Any]) -> tuple[str, int]:
    """The attribute with the most distinct values among the series, and that number."""
    values: dict[str, set[Any]] = {}
    for attributes in [*admitted, refused]:
        for name, value in attributes.items():
            values.setdefault(name, set()).add(_hashable(value))
    if not values:
        return "(none)", 0
    name = max(values, key=lambda key: len(values[key]))
    return name, len(values[name])


def _hashable(value: Any) -> Hashable:
    return tuple(value) if isinstance(value, (list, tuple)) else value


KeyT = TypeVar("KeyT", bound=Hashable)
ValueT = TypeVar("ValueT")


class BoundedCache(dict[KeyT, ValueT]):
    """A dict cleared when a new key would take it past ``maxsize`` entries.

    Lookups stay a plain ``dict`` lookup (no bookkeeping on a hit, unlike an
    LRU); a name that keeps coming back is made again once after each clearing.
    """

    def __init__(self, maxsize: int = CACHE_ENTRIES) -> None:
        super().__init__()
        self.maxsize = maxsize

    def __setitem__(self, key: KeyT, value: ValueT) -> None:
        if len(self) >= self.maxsize and key not in self:
            self.clear()
        super().__setitem__(key, value)

    def setdefault(self, key: KeyT, default: ValueT) -> ValueT:  # type: ignore[override]
        if len(self) >= self.maxsize and key not in self:
            self.clear()
        return super().setdefault(key, default)
