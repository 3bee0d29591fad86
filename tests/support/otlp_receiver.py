"""A real OTLP receiver for tests, built on opentelemetry-proto: traces, metrics and logs,
gRPC or HTTP.

    with running_otlp_receiver("grpc") as receiver:       # or "http/protobuf"
        ...send to receiver.endpoint (http://127.0.0.1:PORT)...
        spans = receiver.wait_for_spans(12)

gRPC serves the ``Export`` of ``TraceService``, ``MetricsService`` and ``LogsService``; HTTP
serves protobuf POSTs to ``/v1/traces``, ``/v1/metrics`` and ``/v1/logs`` (gzip bodies too).
Everything received is kept as the protobuf messages it arrived as.
"""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

PROTOCOLS = ("grpc", "http/protobuf")


class OtlpReceiver:
    """What one receiver got, safe to read while requests arrive."""

    def __init__(self) -> None:
        self.endpoint = ""
        self._lock = threading.Lock()
        self._trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._log_requests: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self._metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []

    def add_traces(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self._lock:
            self._trace_requests.append(request)

    def add_logs(self, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
        with self._lock:
            self._log_requests.append(request)

    def add_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        with self._lock:
            self._metric_requests.append(request)

    @property
    def trace_request_count(self) -> int:
        with self._lock:
            return len(self._trace_requests)

    def spans(self) -> list[Span]:
        with self._lock:
            requests = list(self._trace_requests)
        return [
            span
            for request in requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def log_records(self) -> list[LogRecord]:
        with self._lock:
            requests = list(self._log_requests)
        return [
            record
            for request in requests
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]

    def metrics(self, name: str) -> list[Metric]:
        """Every export of the metric ``name``, in arrival order."""
        with self._lock:
            requests = list(self._metric_requests)
        return [
            metric
            for request in requests
            for resource_metrics in request.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
            if metric.name == name
        ]

    def wait_for_spans(self, count: int, timeout: float = 30.0) -> list[Span]:
        """At least ``count`` spans, polling up to ``timeout`` seconds."""
        return _wait(f"{count} spans", lambda: self.spans(), count, timeout)

    def wait_for_log_records(self, count: int, timeout: float = 30.0) -> list[LogRecord]:
        return _wait(f"{count} log records", lambda: self.log_records(), count, timeout)


def _wait(what: str, read: Callable[[], list[Any]], count: int, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        items = read()
        if len(items) >= count:
            return items
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}; got {len(items)}")
        time.sleep(0.1)


@contextlib.contextmanager
def running_otlp_receiver(protocol: str) -> Iterator[OtlpReceiver]:
    """A receiver on a free loopback port for the block's duration."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    receiver = OtlpReceiver()
    serve = _serve_grpc if protocol == "grpc" else _serve_http
    with serve(receiver):
        yield receiver


# --- gRPC -----------------------------------------------------------------------------------------


def _servicer(base: type, response: type, add: Callable[[Any], None]) -> Any:
    """A gRPC servicer whose ``Export`` hands each request to ``add``, as a collector accepts."""

    class Servicer(base):  # type: ignore[misc, valid-type]
        def Export(self, request: Any, context: Any) -> Any:
            add(request)
            return response()

    return Servicer()


@contextlib.contextmanager
def _serve_grpc(receiver: OtlpReceiver) -> Iterator[None]:
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
        _servicer(
            trace_service_pb2_grpc.TraceServiceServicer,
            trace_service_pb2.ExportTraceServiceResponse,
            receiver.add_traces,
        ),
        server,
    )
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
        _servicer(
            metrics_service_pb2_grpc.MetricsServiceServicer,
            metrics_service_pb2.ExportMetricsServiceResponse,
            receiver.add_metrics,
        ),
        server,
    )
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(
        _servicer(
            logs_service_pb2_grpc.LogsServiceServicer,
            logs_service_pb2.ExportLogsServiceResponse,
            receiver.add_logs,
        ),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    receiver.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield
    finally:
        server.stop(grace=None).wait()


# --- HTTP -----------------------------------------------------------------------------------------

_HTTP_ROUTES: dict[str, tuple[type, type, str]] = {
    "/v1/traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        "add_traces",
    ),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        "add_metrics",
    ),
    "/v1/logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        "add_logs",
    ),
}


def _http_handler(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keeps connections alive, as collectors do

        def do_POST(self) -> None:
            route = _HTTP_ROUTES.get(self.path)
            if route is None:
                self.send_error(404)
                return
            request_type, response_type, add = route
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            getattr(receiver, add)(request_type.FromString(body))
            send_protobuf(self, 200, response_type())

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    return Handler


def send_protobuf(handler: BaseHTTPRequestHandler, status: int, message: Message) -> None:
    """Answer an OTLP/HTTP request with a protobuf body, as a collector does."""
    answer = message.SerializeToString()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/x-protobuf")
    handler.send_header("Content-Length", str(len(answer)))
    handler.end_headers()
    handler.wfile.write(answer)


@contextlib.contextmanager
def _serve_http(receiver: OtlpReceiver) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(receiver))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
