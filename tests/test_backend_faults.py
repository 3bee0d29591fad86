"""A misbehaving backend costs spans, never the workflow, and every lost span is counted.

A real OTLP receiver (support/otlp_faulty_receiver.py, gRPC or HTTP) is killed
and restarted, answers slower than the exporter waits, or answers with errors.
The spans go through the real path: our DeliveryReportingSpanProcessor (the
SDK's batch processor, counting), the SDK's OTLP exporter. The in-memory exporter of the
``telemetry`` fixture sees every span produced, so for each phase of a test:

    produced == arrived + counted as lost

The batch delay is ten minutes: exports happen only when a test flushes, so each
flush is exactly one export call, finished when ``force_flush`` returns.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pocketflow
import pytest
from conftest import Telemetry
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from support.otlp_faulty_receiver import FaultyOtlpReceiver, running_faulty_receiver

from reasonflow_otel import semconv
from reasonflow_otel.sdk.delivery import CountingSpanExporter, DeliveryReportingSpanProcessor
from reasonflow_otel.sdk.dropped import observe_dropped_spans

EXPORT_TIMEOUT_SECONDS = 3
FLOWS_PER_PHASE = 5
SPANS_PER_PHASE = 2 * FLOWS_PER_PHASE  # a flow span and a node span per flow


@dataclass
class Pipeline:
    telemetry: Telemetry
    processor: DeliveryReportingSpanProcessor

    @property
    def exporter(self) -> CountingSpanExporter:
        return self.processor.exporter

    def run(self, phase: str) -> None:
        """Run the phase's flows and export them in one call."""
        for _ in range(FLOWS_PER_PHASE):
            flow = pocketflow.Flow(start=pocketflow.Node())
            flow.name = phase
            flow.run({})
        self.processor.force_flush()


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[FaultyOtlpReceiver]:
    """gRPC unless a test asks for another protocol (indirect parametrization)."""
    with running_faulty_receiver(getattr(request, "param", "grpc")) as receiver:
        yield receiver


def otlp_exporter(receiver: FaultyOtlpReceiver) -> SpanExporter:
    if receiver.protocol == "grpc":
        return GrpcSpanExporter(
            endpoint=receiver.endpoint, insecure=True, timeout=EXPORT_TIMEOUT_SECONDS
        )
    return HttpSpanExporter(
        endpoint=f"{receiver.endpoint}/v1/traces", timeout=EXPORT_TIMEOUT_SECONDS
    )


@pytest.fixture
def pipeline(make_telemetry, receiver) -> Iterator[Pipeline]:
    telemetry = make_telemetry()
    processor = DeliveryReportingSpanProcessor(
        "otlp", otlp_exporter(receiver), schedule_delay_millis=600_000
    )
    telemetry.tracer_provider.add_span_processor(processor)
    yield Pipeline(telemetry, processor)
    processor.shutdown()


def arrived(receiver: FaultyOtlpReceiver) -> Counter[str]:
    """Spans stored by the receiver, by phase (each flow span is named after its phase)."""
    return Counter(
        span.name.removeprefix("invoke_workflow ")
        for span in receiver.stored_spans()
        if span.name.startswith("invoke_workflow ")
    )


@pytest.mark.parametrize("receiver", ["grpc", "http/protobuf"], indirect=True)
def test_a_receiver_killed_mid_run_loses_only_the_spans_of_its_outage(pipeline, receiver, caplog):
    pipeline.run("before")
    receiver.kill()
    pipeline.run("outage")
    receiver.start()  # same port
    pipeline.run("after")

    assert arrived(receiver) == {"before": FLOWS_PER_PHASE, "after": FLOWS_PER_PHASE}
    assert len(receiver.stored_spans()) == 2 * SPANS_PER_PHASE
    assert pipeline.exporter.lost_spans == SPANS_PER_PHASE
    assert len(pipeline.telemetry.spans()) == 3 * SPANS_PER_PHASE
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel"):
        pipeline.processor.shutdown()
    ours = [record for record in caplog.records if record.name.startswith("reasonflow_otel")]
    assert [record.getMessage() for record in ours] == [
        "reasonflow-otel: 10 of 30 spans could not be delivered by the otlp exporter "
        "(10 in failed exports; export errors were logged when they happened)"
    ]
    assert pipeline.processor.dropped() == {"queue_full": 0, "export_failed": SPANS_PER_PHASE}


@pytest.mark.parametrize("receiver", ["grpc", "http/protobuf"], indirect=True)
def test_a_receiver_down_at_start_receives_everything_once_it_is_up(pipeline, receiver):
    receiver.kill()
    pipeline.run("down")
    receiver.start()
    pipeline.run("up")

    assert arrived(receiver) == {"up": FLOWS_PER_PHASE}
    assert pipeline.exporter.lost_spans == SPANS_PER_PHASE
    assert len(pipeline.telemetry.spans()) == 2 * SPANS_PER_PHASE


def test_a_slow_receiver_is_given_up_on_at_the_export_timeout(pipeline, receiver):
    receiver.behaviour = "slow"
    pipeline.run("slow")
    receiver.behaviour = "ok"
    pipeline.run("fast")

    [slow] = [request for request in receiver.requests() if request.outcome != "stored"]
    # The exporter sent its timeout as the call's deadline and hung up when it passed
    # (the receiver would have held the call for a minute); no retry fits after that.
    assert slow.outcome == "abandoned"
    assert 0 < slow.deadline <= EXPORT_TIMEOUT_SECONDS
    assert len(slow.spans) == SPANS_PER_PHASE
    assert arrived(receiver) == {"fast": FLOWS_PER_PHASE}
    assert pipeline.exporter.lost_spans == SPANS_PER_PHASE


@pytest.mark.parametrize(
    ("receiver", "failure", "retried"),
    [
        ("grpc", grpc.StatusCode.INVALID_ARGUMENT, False),
        ("grpc", grpc.StatusCode.UNAVAILABLE, True),
        ("http/protobuf", 400, False),
        ("http/protobuf", 503, True),
    ],
    indirect=["receiver"],
)
def test_a_receiver_answering_errors_loses_those_batches_and_recovers(
    pipeline, receiver, failure, retried
):
    receiver.behaviour, receiver.failure = "fail", failure
    pipeline.run("failing")
    receiver.behaviour = "ok"
    pipeline.run("healthy")

    failed = [request for request in receiver.requests() if request.outcome == "failed"]
    # A permanent error is not retried; a transient one is, until the timeout.
    assert (len(failed) > 1) is retried
    assert all(len(request.spans) == SPANS_PER_PHASE for request in failed)
    assert arrived(receiver) == {"healthy": FLOWS_PER_PHASE}
    assert pipeline.exporter.lost_spans == SPANS_PER_PHASE


class BlockingExporter(SpanExporter):
    """Holds its first export until released, so the queue behind it fills up."""

    def __init__(self) -> None:
        self.exporting = threading.Event()
        self.release = threading.Event()
        self.received = 0

    def export(self, spans):
        self.exporting.set()
        self.release.wait(10)
        self.received += len(spans)
        return SpanExportResult.SUCCESS


def test_spans_dropped_at_a_full_queue_are_counted_and_reported_once(caplog):
    exporter = BlockingExporter()
    processor = DeliveryReportingSpanProcessor(
        "slow", exporter, max_queue_size=2, max_export_batch_size=1, schedule_delay_millis=60_000
    )
    reader = InMemoryMetricReader()
    observe_dropped_spans(MeterProvider(metric_readers=[reader], shutdown_on_exit=False))
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    tracer.start_span("first").end()
    assert exporter.exporting.wait(10)  # the first span is out of the queue, in export
    for index in range(9):
        tracer.start_span(f"queued or dropped {index}").end()  # 2 fit in the queue
    assert dropped_spans(reader, "slow") == {"queue_full": 7, "export_failed": 0}  # live
    exporter.release.set()

    with caplog.at_level(logging.WARNING, logger="reasonflow_otel"):
        processor.shutdown()
        processor.shutdown()

    assert exporter.received == 3
    ours = [
        record.getMessage()
        for record in caplog.records
        if record.name == "reasonflow_otel.sdk.delivery"
    ]
    assert ours == [
        "reasonflow-otel: 7 of 10 spans could not be delivered by the slow exporter "
        "(7 dropped at a full queue; export errors were logged when they happened)"
    ]


def dropped_spans(reader: InMemoryMetricReader, exporter: str) -> dict[str, int]:
    """``reasonflow.spans.dropped`` of one exporter, by ``error.type``."""
    return {
        point.attributes[semconv.ERROR_TYPE]: point.value
        for resource_metrics in reader.get_metrics_data().resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == semconv.METRIC_SPANS_DROPPED
        for point in metric.data.data_points
        if point.attributes[semconv.OTEL_COMPONENT_NAME] == exporter
    }
