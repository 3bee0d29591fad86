"""Metrics over OTLP: with an endpoint set, every run's metrics reach a real receiver.

tests/apps/metrics_app.py calls ``reasonflow_otel.instrument()`` and runs its flows in a
loop; it prints how many iterations it ran, and the cumulative counts the receiver holds
after the last export (at exit) must match them exactly.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from support.otlp_receiver import OtlpReceiver, running_otlp_receiver
from support.processes import clean_environment

from reasonflow_otel import semconv
from reasonflow_otel.settings import DEFAULT_DURATION_BUCKETS

APP = Path(__file__).parent / "apps" / "metrics_app.py"


@pytest.fixture(params=["grpc", "http/protobuf"])
def receiver(request: pytest.FixtureRequest) -> Iterator[OtlpReceiver]:
    with running_otlp_receiver(request.param) as receiver:
        receiver.protocol = request.param  # type: ignore[attr-defined]
        yield receiver


def run_app(receiver: OtlpReceiver) -> tuple[int, int]:
    """Run the app against the receiver; the iterations and failed orders it reported."""
    completed = subprocess.run(
        [sys.executable, str(APP), "--seconds", "1", "--pause", "0"],
        env=clean_environment(
            OTEL_SERVICE_NAME="shop",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL=receiver.protocol,  # type: ignore[attr-defined]
            OTEL_METRIC_EXPORT_INTERVAL="300",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    [(iterations, failed)] = re.findall(
        r"metrics app done: (\d+) iterations, (\d+) failed orders", completed.stdout
    )
    return int(iterations), int(failed)


def last_points(metric: list[Metric]) -> dict[tuple[tuple[str, str], ...], object]:
    """The latest data point of each attribute set (exports are cumulative)."""
    points: dict[tuple[tuple[str, str], ...], object] = {}
    for export in metric:
        data = getattr(export, export.WhichOneof("data"))
        for point in data.data_points:
            key = tuple(sorted((a.key, a.value.string_value) for a in point.attributes))
            points[key] = point
    return points


def node_key(flow: str, node: str, error_type: str | None = None) -> tuple[tuple[str, str], ...]:
    """A node's metric attribute set, as :func:`last_points` keys it."""
    attributes = {
        semconv.ENGINE: "pocketflow",
        semconv.GEN_AI_WORKFLOW_NAME: flow,
        semconv.NODE_NAME: node,
    }
    if error_type is not None:
        attributes[semconv.ERROR_TYPE] = error_type
    return tuple(sorted(attributes.items()))


def test_every_run_is_counted_in_the_metrics_the_receiver_gets(receiver: OtlpReceiver) -> None:
    iterations, failed_orders = run_app(receiver)
    assert iterations > failed_orders > 0

    node_points = last_points(receiver.metrics(semconv.METRIC_NODE_DURATION))
    for node in ("Summarize", "Publish"):
        point = node_points[node_key("ReportFlow", node)]
        assert point.count == iterations  # type: ignore[attr-defined]
        assert list(point.explicit_bounds) == list(DEFAULT_DURATION_BUCKETS)  # type: ignore[attr-defined]
    flow_points = last_points(receiver.metrics(semconv.METRIC_FLOW_DURATION))
    report = (("gen_ai.workflow.name", "ReportFlow"), ("reasonflow.engine", "pocketflow"))
    assert flow_points[report].count == iterations  # type: ignore[attr-defined]
    # FetchPrices fails its first attempt every time it runs: in every order that did not
    # fail at CheckStock before it.
    retries = last_points(receiver.metrics(semconv.METRIC_NODE_RETRIES))
    fetch = node_key("OrderFlow", "FetchPrices", error_type="TimeoutError")
    assert list(retries) == [fetch]
    assert retries[fetch].as_int == iterations - failed_orders  # type: ignore[attr-defined]
    assert receiver.metrics(semconv.METRIC_PROCESS_CPU_TIME) != []
