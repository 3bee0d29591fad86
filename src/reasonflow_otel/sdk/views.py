"""Metric Views: workflow-sized buckets, attribute allow-lists, tidy GC metrics.

Every instrument gets at most one View, because an instrument matched by two
Views is exported twice: a name matched by ``REASONFLOW_OTEL_DROP_METRICS``
(glob patterns, as in View matching) gets its drop View and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from opentelemetry.sdk.metrics.view import (
    Aggregation,
    DropAggregation,
    ExplicitBucketHistogramAggregation,
    View,
)

from reasonflow_otel import semconv
from reasonflow_otel.settings import Settings

# Memory growth in bytes: 0, then every power of 4 from 4 KiB to 4 GiB.
MEMORY_BUCKETS = (0.0, *(float(4**power) for power in range(6, 17)))

_GC_METRICS = (
    semconv.METRIC_GC_COLLECTIONS,
    semconv.METRIC_GC_COLLECTED_OBJECTS,
    semconv.METRIC_GC_UNCOLLECTABLE_OBJECTS,
)


def build_views(settings: Settings) -> list[View]:
    """A drop View per dropped pattern, then one View per instrument we shape."""
    views = [
        View(instrument_name=pattern, aggregation=DropAggregation())
        for pattern in settings.drop_metrics
    ]
    views += [
        View(instrument_name=name, aggregation=aggregation, attribute_keys=attribute_keys)
        for name, (aggregation, attribute_keys) in _shapes(settings).items()
        if not is_dropped(name, settings.drop_metrics)
    ]
    return views + _gen_ai_views(settings)


def is_dropped(name: str, patterns: Iterable[str]) -> bool:
    """Whether a drop pattern matches ``name`` the way a View's instrument_name does."""
    return any(fnmatchcase(name, pattern.lower()) for pattern in patterns)


def _shapes(settings: Settings) -> dict[str, tuple[Aggregation | None, set[str]]]:
    """Instrument name -> (aggregation, or None for the default; attributes kept)."""
    durations = ExplicitBucketHistogramAggregation(boundaries=settings.duration_buckets)
    memory = ExplicitBucketHistogramAggregation(boundaries=MEMORY_BUCKETS)
    ours = set(semconv.METRIC_ATTRIBUTES)
    shapes: dict[str, tuple[Aggregation | None, set[str]]] = {
        semconv.METRIC_FLOW_DURATION: (durations, ours),
        semconv.METRIC_NODE_DURATION: (durations, ours),
        semconv.METRIC_NODE_CPU_TIME: (durations, ours),
        semconv.METRIC_NODE_MEMORY_GROWTH: (memory, ours),
        semconv.METRIC_NODE_RETRIES: (None, ours),
        semconv.METRIC_NODE_FALLBACKS: (None, ours),
        semconv.METRIC_NODE_ACTIVE: (None, ours),
    }
    for name in _GC_METRICS:  # without the contrib's deprecated `generation` copy
        shapes[name] = (None, {semconv.CPYTHON_GC_GENERATION})
    return shapes


def _gen_ai_views(settings: Settings) -> list[View]:
    """With ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``, the flow duration
    is also streamed under the GenAI convention's name: a second View on the instrument,
    exported as a second metric with the convention's attributes only."""
    name = semconv.METRIC_GEN_AI_INVOKE_WORKFLOW_DURATION
    if not semconv.gen_ai_latest_experimental() or is_dropped(name, settings.drop_metrics):
        return []
    durations = ExplicitBucketHistogramAggregation(boundaries=settings.duration_buckets)
    return [
        View(
            instrument_name=semconv.METRIC_FLOW_DURATION,
            name=name,
            description="Duration of workflow invocations (GenAI semantic conventions).",
            aggregation=durations,
            attribute_keys={
                semconv.GEN_AI_OPERATION_NAME,
                semconv.GEN_AI_WORKFLOW_NAME,
                semconv.ERROR_TYPE,
                semconv.SERIES_OVERFLOW,
            },
        )
    ]
