"""The flow never waits for the backend: overhead, memory and exit time in an outage.

tests/apps/outage_app.py (the app the outage tests run) exports traces, metrics
and logs over OTLP/gRPC and OTLP/HTTP to a local endpoint:

- ``healthy``: an OTLP receiver in this process that accepts everything;
- ``refused``: a bound port nobody listens on;
- ``black hole``: a listening socket nobody reads (connections open, no answer).

For each, it reports the per-node overhead (instrumented minus bare, measured in
the app), its ratio to the healthy case, how far the resident set grew over the
runs, and how long the app took to exit once its work was done: at most the
export timeout plus half a second for all signals together, and about nothing
when the port refuses connections.

    python benchmarks/outage.py [RUNS]
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import AbstractContextManager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

OUTAGE_APP = Path(__file__).resolve().parents[1] / "tests" / "apps" / "outage_app.py"
DEFAULT_FLOW_RUNS = 30
EXPORT_TIMEOUT_SECONDS = 2


class _TraceSink(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request: Any, context: Any) -> Any:
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsSink(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request: Any, context: Any) -> Any:
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _LogsSink(logs_service_pb2_grpc.LogsServiceServicer):
    def Export(self, request: Any, context: Any) -> Any:
        return logs_service_pb2.ExportLogsServiceResponse()


class _HttpSink(BaseHTTPRequestHandler):
    """OTLP/HTTP: reads each export and answers 200 with an empty (valid) response."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per request would drown the figures."""


@contextmanager
def healthy_endpoint(protocol: str) -> Iterator[str]:
    """An OTLP receiver that accepts every export and keeps nothing."""
    if protocol == "grpc":
        with _healthy_grpc() as endpoint:
            yield endpoint
        return
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HttpSink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _healthy_grpc() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceSink(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsSink(), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsSink(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@contextmanager
def refusing_endpoint(protocol: str) -> Iterator[str]:
    """A loopback port that refuses connections: bound, never listening."""
    with socket.socket() as port:
        port.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{port.getsockname()[1]}"


@contextmanager
def black_hole_endpoint(protocol: str) -> Iterator[str]:
    """A server that accepts connections (the kernel completes them) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


PROTOCOLS = ("grpc", "http/protobuf")
CASES: dict[str, Callable[[str], AbstractContextManager[str]]] = {
    "healthy": healthy_endpoint,
    "refused": refusing_endpoint,
    "black hole": black_hole_endpoint,
}


def run_app(
    endpoint: str, protocol: str, flow_runs: int, directory: str
) -> tuple[dict[str, Any], float]:
    """The app's report, and the seconds from its work being done to its exit."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "REASONFLOW_OTEL_"))
    }
    environ.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_TIMEOUT=str(EXPORT_TIMEOUT_SECONDS),
        OTEL_LOGS_EXPORTER="otlp",
    )
    completed = subprocess.run(
        [sys.executable, str(OUTAGE_APP), str(flow_runs)],
        cwd=directory,
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    )
    exited = time.time()
    app_report = json.loads(completed.stdout)
    return app_report, exited - app_report["done_at"]


def report(flow_runs: int) -> None:
    nodes = flow_runs * 100
    print(
        f"\nbackend outage: traces, metrics and logs over OTLP, export timeout "
        f"{EXPORT_TIMEOUT_SECONDS} s, {nodes:,} node runs per case"
    )
    header = f"{'protocol':<14} {'endpoint':<12} {'overhead us':>12} {'vs healthy':>11}"
    print(f"  {header} {'RSS MB':>8} {'exit s':>8}")
    with tempfile.TemporaryDirectory() as directory:
        for protocol in PROTOCOLS:
            healthy_overhead = None
            for name, endpoint in CASES.items():
                with endpoint(protocol) as address:
                    app_report, exit_seconds = run_app(address, protocol, flow_runs, directory)
                overhead = (
                    app_report["instrumented_seconds_per_node"]
                    - app_report["bare_seconds_per_node"]
                )
                healthy_overhead = healthy_overhead or overhead
                print(
                    f"  {protocol:<14} {name:<12} {overhead * 1e6:12.2f} "
                    f"{overhead / healthy_overhead:11.2f} "
                    f"{app_report['rss_growth_bytes'] / 1e6:8.1f} {exit_seconds:8.2f}"
                )
    print(
        f"  targets: overhead within 1.10 of healthy; telemetry shutdown within "
        f"{EXPORT_TIMEOUT_SECONDS + 0.5} s, exit within 1 s when refused"
    )


if __name__ == "__main__":
    report(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_FLOW_RUNS)
