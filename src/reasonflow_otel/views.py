"""Metric Views: workflow-sized duration buckets and an attribute allow-list."""

from __future__ import annotations

from opentelemetry.sdk.metrics.view import DropAggregation, ExplicitBucketHistogramAggregation, View

from reasonflow_otel import semconv
from reasonflow_otel.settings import Settings

_DURATION_HISTOGRAMS = (
    semconv.METRIC_FLOW_DURATION,
    semconv.METRIC_NODE_DURATION,
    semconv.METRIC_NODE_CPU_TIME,
)


def build_views(settings: Settings) -> list[View]:
    """Views for our instruments; dropped names win over everything else."""
    views = [
        View(instrument_name=name, aggregation=DropAggregation()) for name in settings.drop_metrics
    ]
    buckets = ExplicitBucketHistogramAggregation(boundaries=settings.duration_buckets)
    views += [
        View(
            instrument_name=name,
            aggregation=buckets,
            attribute_keys=set(semconv.METRIC_ATTRIBUTES),
        )
        for name in _DURATION_HISTOGRAMS
        if name not in settings.drop_metrics
    ]
    return views
