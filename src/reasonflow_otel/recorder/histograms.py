"""Histograms recorded together, one attribute set per point: the API-only way.

A :class:`RecordingGroup` holds instruments a run records together (a node's
duration, CPU time and memory growth; a flow's duration) and hands every value
to ``Histogram.record``. Each attribute set is a :class:`HistogramSeries`,
made once per place and capped (``bounded.SeriesCap``). The SDK-specific group
that queues values and merges them on collection (``fast_paths.histograms``)
is a subclass.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from opentelemetry.metrics import Histogram

from reasonflow_otel.recorder.bounded import DEFAULT_CARDINALITY_LIMIT, SeriesCap


class HistogramSeries:
    """One attribute set of a group: its attributes as the SDK cleans them, its aggregations."""

    __slots__ = ("attributes", "fresh", "targets")

    def __init__(self, attributes: Mapping[str, Any]) -> None:
        self.attributes = attributes
        self.fresh = True
        self.targets: dict[Any, Any] = {}  # _ViewInstrumentMatch -> its aggregation of us


class RecordingGroup:
    """The fallback: every value through ``Histogram.record``."""

    def __init__(self, instruments: Sequence[Histogram]) -> None:
        self._instruments = tuple(instruments)
        self._series = SeriesCap(
            _metric_names(instruments), self._new_series, DEFAULT_CARDINALITY_LIMIT
        )

    def limit_series(self, limit: int) -> None:
        """At most ``limit`` series, the overflow series included (see ``bounded.SeriesCap``)."""
        self._series.limit = limit

    def series(self, key: Hashable, attributes: Mapping[str, Any]) -> HistogramSeries:
        """The series of ``key``, made once (a place, an error type) with these attributes."""
        return self._series.series(key, attributes)

    def _new_series(self, attributes: Mapping[str, Any]) -> HistogramSeries:
        return HistogramSeries(self._cleaned(attributes))

    def _cleaned(self, attributes: Mapping[str, Any]) -> Mapping[str, Any]:
        return attributes

    def record(self, series: HistogramSeries, values: Sequence[float]) -> None:
        """One value per instrument of the group, in the group's order."""
        for instrument, value in zip(self._instruments, values, strict=True):
            instrument.record(value, series.attributes)

    def flush(self) -> None:
        """Nothing is held back."""


def _metric_names(instruments: Sequence[Histogram]) -> str:
    """The group's metrics, as a warning names them (the API's proxies have no name)."""
    names = [getattr(instrument, "name", "?") for instrument in instruments]
    return names[0] if len(names) == 1 else f"{names[0]} (with {', '.join(names[1:])})"
