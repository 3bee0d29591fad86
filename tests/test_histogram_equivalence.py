"""Histograms merged in process export exactly what ``Histogram.record`` exports.

Two identical SDK pipelines (two readers: cumulative and delta; our Views with
their attribute keys and bucket boundaries, a drop View, an extra View that
keeps only the engine) receive the same values: one through a
``HistogramGroup``, one through ``record``. Every collection of either reader
must give the same points, sums included to the last bit: after repeated delta
collections with values between (SDK 1.45.2 discards delta aggregations at each
one), and past both cardinality limits (the SDK's own, 2000 attribute sets per
View from 1.45.2, and ours, ``REASONFLOW_OTEL_METRIC_CARDINALITY_LIMIT``), whose
overflow series are one and the same.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pocketflow
import pytest
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics._internal import _view_instrument_match
from opentelemetry.sdk.metrics._internal._view_instrument_match import _ViewInstrumentMatch
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import View

from reasonflow_otel import semconv
from reasonflow_otel.instrumentation.pocketflow import PocketFlowInstrumentor
from reasonflow_otel.recorder.fast_paths.histograms import (
    QUEUE_LIMIT,
    HistogramGroup,
    histogram_group,
    point_summary,
    sdk_supports_merging,
)
from reasonflow_otel.recorder.histograms import RecordingGroup
from reasonflow_otel.sdk.views import build_views
from reasonflow_otel.settings import Settings

NODE_HISTOGRAMS = (
    (semconv.METRIC_NODE_DURATION, "s"),
    (semconv.METRIC_NODE_CPU_TIME, "s"),
    (semconv.METRIC_NODE_MEMORY_GROWTH, "By"),
)
PLACES = [
    {semconv.ENGINE: "pocketflow", semconv.GEN_AI_WORKFLOW_NAME: flow, semconv.NODE_NAME: node}
    for flow in ("Billing", "Support")
    for node in ("Parse", "Review", "Send")
]


@dataclass
class Pipeline:
    """One MeterProvider with a cumulative and a delta reader, and the node histograms."""

    provider: MeterProvider
    cumulative: InMemoryMetricReader
    delta: InMemoryMetricReader
    meter: Any
    instruments: list[Histogram]

    def points(self, reader: InMemoryMetricReader) -> dict[str, list[tuple]]:
        """Each metric stream collected now: its identity and its points, times left out."""
        data = reader.get_metrics_data()
        streams: dict[str, list[tuple]] = {}
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    streams[metric.name] = [
                        (metric.unit, metric.data.aggregation_temporality),
                        *sorted(point_summary(point) for point in metric.data.data_points),
                    ]
        return streams


def make_pipeline(settings: Settings) -> Pipeline:
    cumulative = InMemoryMetricReader()
    delta = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    by_engine = View(
        instrument_name=semconv.METRIC_NODE_DURATION,
        name="reasonflow.node.duration.by_engine",
        attribute_keys={semconv.ENGINE},
    )
    provider = MeterProvider(
        metric_readers=[cumulative, delta],
        views=[*build_views(settings), by_engine],
        shutdown_on_exit=False,
    )
    meter = provider.get_meter("equivalence")
    instruments = [meter.create_histogram(name, unit=unit) for name, unit in NODE_HISTOGRAMS]
    return Pipeline(provider, cumulative, delta, meter, instruments)


@pytest.fixture
def settings() -> Settings:
    return Settings(
        duration_buckets=(0.001, 0.01, 0.1, 1.0, 10.0),
        drop_metrics=(semconv.METRIC_NODE_CPU_TIME,),
    )


@pytest.fixture
def pipelines(settings: Settings) -> Iterator[tuple[Pipeline, Pipeline]]:
    merged, recorded = make_pipeline(settings), make_pipeline(settings)
    yield merged, recorded
    merged.provider.shutdown()
    recorded.provider.shutdown()


def node_runs(
    count: int, seed: int, places: list[dict[str, str]] = PLACES
) -> list[tuple[dict[str, str], tuple[float, float, int]]]:
    """(attributes, (duration, cpu, memory)) of ``count`` node runs, some failed, a few refused."""
    rng = random.Random(seed)
    runs = []
    for _ in range(count):
        attributes = dict(rng.choice(places))
        if rng.random() < 0.1:
            attributes[semconv.ERROR_TYPE] = rng.choice(("TimeoutError", "ValueError"))
        duration = rng.choice((0.0, 0.001, rng.random() * 10 ** rng.randint(-6, 2)))
        if rng.random() < 0.01:
            duration = rng.choice((-0.5, float("inf")))  # record refuses these
        memory = rng.choice((0, 4096, rng.randint(0, 2**33)))
        runs.append((attributes, (duration, rng.random() / 1000, memory)))
    return runs


def feed(merged: Pipeline, recorded: Pipeline, runs: list, group: Any) -> None:
    for attributes, values in runs:
        key = tuple(sorted(attributes.items()))
        group.record(group.series(key, attributes), values)
        for instrument, value in zip(recorded.instruments, values, strict=True):
            instrument.record(value, attributes)


def same_collections(
    merged: Pipeline, recorded: Pipeline, readers: tuple[str, ...] = ("cumulative", "delta")
) -> bool:
    return all(
        merged.points(getattr(merged, reader)) == recorded.points(getattr(recorded, reader))
        for reader in readers
    )


def assert_same_collections(merged: Pipeline, recorded: Pipeline) -> None:
    for reader in ("cumulative", "delta"):
        merged_points = merged.points(getattr(merged, reader))
        assert merged_points == recorded.points(getattr(recorded, reader)), reader


def collections_alike(merged: Pipeline, recorded: Pipeline, group: Any) -> list[bool]:
    """Feed both pipelines in rounds, collecting between (the delta reader alone once)."""
    alike = []
    feed(merged, recorded, node_runs(300, seed=1), group)
    group.flush()
    alike.append(same_collections(merged, recorded))
    feed(merged, recorded, node_runs(QUEUE_LIMIT + 500, seed=2), group)  # merged while queued
    group.flush()
    assert merged.delta.get_metrics_data() is not None  # only the delta reader collects now
    recorded.delta.get_metrics_data()
    feed(merged, recorded, node_runs(200, seed=3), group)
    group.flush()
    alike.append(same_collections(merged, recorded))
    alike.append(same_collections(merged, recorded))  # nothing new: cumulative repeats
    alike.append(delta_rounds_alike(merged, recorded, group))
    return alike


def delta_rounds_alike(merged: Pipeline, recorded: Pipeline, group: Any) -> bool:
    """Delta collections in a row, values between: some series skip a round, then return."""
    alike = []
    for seed, places in enumerate((PLACES[:2], PLACES, PLACES[3:], [], PLACES[1::2]), start=20):
        feed(merged, recorded, node_runs(150 if places else 0, seed, places or PLACES), group)
        group.flush()
        alike.append(same_collections(merged, recorded, ("delta",)))
    return all(alike) and same_collections(merged, recorded)


def test_merged_points_equal_recorded_points_for_both_temporalities_and_every_view(pipelines):
    """Whatever the startup check chose on this SDK (merging, or ``record``), it is exact."""
    merged, recorded = pipelines
    group = histogram_group(merged.meter, merged.instruments)
    assert isinstance(group, HistogramGroup) == sdk_supports_merging()

    assert collections_alike(merged, recorded, group) == [True, True, True, True]
    streams = merged.points(merged.cumulative)
    assert sorted(streams) == [
        semconv.METRIC_NODE_DURATION,
        "reasonflow.node.duration.by_engine",
        semconv.METRIC_NODE_MEMORY_GROWTH,
    ]
    _, by_engine = streams["reasonflow.node.duration.by_engine"]
    assert by_engine[0] == ((semconv.ENGINE, "pocketflow"),)


def test_the_startup_check_allows_merging_exactly_where_merging_is_exact(pipelines):
    """Merging forced on this SDK release: equal to ``record`` if and only if the check (a
    few values on a throwaway provider) allows it. Run at both ends of our range in CI."""
    merged, recorded = pipelines
    forced = HistogramGroup(merged.instruments, merged.meter._measurement_consumer)
    try:
        exact = all(collections_alike(merged, recorded, forced))
    except (ImportError, AttributeError, TypeError):  # internals of another shape
        exact = False

    assert exact == sdk_supports_merging()


# Past the SDK's own limit (2000 attribute sets per View, from SDK 1.45.2) and then ours.
SDK_CARDINALITY_LIMIT = 2000
WIDE_PLACES = [
    {semconv.ENGINE: "pocketflow", semconv.GEN_AI_WORKFLOW_NAME: f"Order-{number}"}
    for number in range(SDK_CARDINALITY_LIMIT + 150)
]
OUR_CARDINALITY_LIMIT = SDK_CARDINALITY_LIMIT + 101  # 2100 series of ours and our overflow


def sdk_limits_cardinality() -> bool:
    return hasattr(_ViewInstrumentMatch, "_get_or_create_aggregation")


def test_points_past_the_sdk_cardinality_limit_and_ours_are_the_recorded_points(pipelines):
    """Values of series the SDK sends to its overflow series and of our overflow series
    (the same attribute set) interleaved: merged, every point (the overflow's sum too)
    equals the points of the same capped series recorded one by one. The delta reader
    starts afresh each round, so which series overflow there follows arrival order."""
    merged, recorded = pipelines
    group = histogram_group(merged.meter, merged.instruments, OUR_CARDINALITY_LIMIT)
    assert isinstance(group, HistogramGroup) == sdk_supports_merging()
    one_by_one = RecordingGroup(recorded.instruments)
    one_by_one.limit_series(OUR_CARDINALITY_LIMIT)

    def feed_both(runs: list) -> None:
        for attributes, values in runs:
            key = tuple(sorted(attributes.items()))
            group.record(group.series(key, attributes), values)
            one_by_one.record(one_by_one.series(key, attributes), values)
        group.flush()

    for seed, places in enumerate((WIDE_PLACES, WIDE_PLACES[::-1], WIDE_PLACES[::3]), start=40):
        first_of_each = [(place, (0.5, 0.001, 1024)) for place in places]
        feed_both(first_of_each + node_runs(3000, seed, places))
        assert_same_collections(merged, recorded)
    assert_same_collections(merged, recorded)  # nothing new

    streams = merged.points(merged.cumulative)
    _, *points = streams[semconv.METRIC_NODE_DURATION]
    overflow = ((semconv.SERIES_OVERFLOW, True),)
    assert [point[0] for point in points].count(overflow) == 1
    sdk_admitted = SDK_CARDINALITY_LIMIT if sdk_limits_cardinality() else len(WIDE_PLACES)
    assert len(points) == min(sdk_admitted, OUR_CARDINALITY_LIMIT - 1) + 1


def test_the_same_group_and_hook_serve_a_meter_instrumented_again(pipelines):
    merged, recorded = pipelines
    group = histogram_group(merged.meter, merged.instruments)
    feed(merged, recorded, node_runs(50, seed=4), group)

    again = [merged.meter.create_histogram(name, unit=unit) for name, unit in NODE_HISTOGRAMS]
    assert histogram_group(merged.meter, again) is group
    feed(merged, recorded, node_runs(50, seed=5), group)
    assert_same_collections(merged, recorded)


@pytest.fixture
def older_sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An SDK of another shape: aggregations keyed by a frozenset, no ``_hash_attributes``."""

    def consume_measurement(self: Any, measurement: Any, should_sample_exemplar: bool = True):
        attributes = dict(measurement.attributes or {})
        if self._view._attribute_keys is not None:
            keys = self._view._attribute_keys
            attributes = {key: value for key, value in attributes.items() if key in keys}
        key = frozenset(attributes.items())
        with self._lock:
            if key not in self._attributes_aggregation:
                self._attributes_aggregation[key] = self._view._aggregation._create_aggregation(
                    self._instrument, attributes, self._view._exemplar_reservoir_factory, 0
                )
        self._attributes_aggregation[key].aggregate(measurement, should_sample_exemplar)

    monkeypatch.delattr(_view_instrument_match, "_hash_attributes", raising=False)
    monkeypatch.setattr(_ViewInstrumentMatch, "consume_measurement", consume_measurement)
    sdk_supports_merging.cache_clear()
    yield
    sdk_supports_merging.cache_clear()


def test_an_sdk_of_another_shape_gets_every_value_recorded_with_one_log_line(
    older_sdk, pipelines, caplog
):
    merged, recorded = pipelines
    with caplog.at_level(logging.INFO, logger="reasonflow_otel"):
        group = histogram_group(merged.meter, merged.instruments)
        histogram_group(merged.meter, merged.instruments[:1])

    assert type(group) is RecordingGroup
    [message] = [record.getMessage() for record in caplog.records]
    assert message.startswith(
        "reasonflow-otel: the OpenTelemetry SDK's metric internals are not as expected "
        "(ImportError(\"cannot import name '_hash_attributes' from "
    )
    assert message.endswith("histograms are recorded one by one (slower, same data)")
    feed(merged, recorded, node_runs(100, seed=6), group)
    assert_same_collections(merged, recorded)


class Step(pocketflow.Node):
    """Does nothing: its runs are counted."""


def three_steps() -> pocketflow.Flow:
    first, second, third = Step(), Step(), Step()
    first >> second >> third
    return pocketflow.Flow(start=first)


def test_values_queued_before_uninstrument_are_exported_after_instrumenting_again(telemetry):
    flow = three_steps()
    for _ in range(5):
        flow.run({})
    PocketFlowInstrumentor().uninstrument()
    flow.run({})  # not instrumented: not counted
    PocketFlowInstrumentor().instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        settings=Settings(),
    )
    for _ in range(2):
        flow.run({})

    [point] = telemetry.metric_points(semconv.METRIC_NODE_DURATION)
    assert point.count == 7 * 3
    [flow_point] = telemetry.metric_points(semconv.METRIC_FLOW_DURATION)
    assert flow_point.count == 7
