"""A real OTLP trace receiver that misbehaves on demand and remembers every request.

Built on opentelemetry-proto like ``support/otlp_receiver.py``; this one is for
fault and process tests, so for each request it records who sent it (the
client's address and port: one per connection), the deadline it carried, its
spans, and how it ended:

- ``behaviour = "ok"``: stored and answered;
- ``"fail"``: answered with ``failure`` (a gRPC status code, or an HTTP status);
- ``"slow"`` (gRPC): held until the client gives up waiting, never answered.

``kill()`` stops it abruptly (in-flight calls are cut), ``start()`` brings it
back on the same port.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from support.otlp_receiver import send_protobuf

# The longest a "slow" receiver holds a request whose client is still waiting.
SLOW_HOLD_SECONDS = 60.0


@dataclass(frozen=True)
class Request:
    peer: str
    spans: tuple[Span, ...]
    deadline: float | None  # seconds the client still allowed when the call arrived
    outcome: str  # "stored", "failed" or "abandoned"


class FaultyOtlpReceiver:
    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.behaviour = "ok"
        self.failure: grpc.StatusCode | int = (
            grpc.StatusCode.UNAVAILABLE if protocol == "grpc" else 503
        )
        self.port = 0
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._stop: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        serve = self._serve_grpc if self.protocol == "grpc" else self._serve_http
        self._stop = serve()

    def kill(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def stored_spans(self) -> list[Span]:
        return [
            span
            for request in self.requests()
            if request.outcome == "stored"
            for span in request.spans
        ]

    def wait_for_spans(self, count: int, timeout: float = 30.0) -> list[Span]:
        """At least ``count`` stored spans, polling up to ``timeout`` seconds."""
        return _wait(f"{count} spans", self.stored_spans, count, timeout)

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> list[Request]:
        """At least ``count`` requests, however they ended (a held one ends with its client)."""
        return _wait(f"{count} requests", self.requests, count, timeout)

    def record(
        self, peer: str, body: ExportTraceServiceRequest, deadline: Any, outcome: str
    ) -> None:
        spans = tuple(
            span
            for resource_spans in body.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        )
        with self._lock:
            self._requests.append(Request(peer, spans, deadline, outcome))

    # --- gRPC -------------------------------------------------------------------------------

    def _serve_grpc(self) -> Any:
        server = grpc.server(ThreadPoolExecutor(max_workers=8))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        return lambda: server.stop(grace=None).wait()

    # --- HTTP -------------------------------------------------------------------------------

    def _serve_http(self) -> Any:
        server = _KillableHTTPServer(("127.0.0.1", self.port), _http_handler(self))
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()

        def stop() -> None:
            server.shutdown()
            server.server_close()
            server.drop_connections()
            thread.join(timeout=10)

        return stop


class _KillableHTTPServer(ThreadingHTTPServer):
    """Remembers its connections, so that stopping it cuts the kept-alive ones too,
    as a crashed collector would (closing the listening socket alone does not)."""

    daemon_threads = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._connections: set[socket.socket] = set()

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        self._connections.add(connection)
        return connection, address

    def drop_connections(self) -> None:
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


def _wait(what: str, read: Callable[[], list[Any]], count: int, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while len(items := read()) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}; got {items}")
        time.sleep(0.05)
    return items


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: FaultyOtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: ExportTraceServiceRequest, context: Any) -> Any:
        receiver = self._receiver
        deadline = context.time_remaining()
        if receiver.behaviour == "fail":
            receiver.record(context.peer(), request, deadline, "failed")
            context.abort(receiver.failure, "failure injected by the test")
        if receiver.behaviour == "slow":
            client_gone = threading.Event()
            context.add_callback(client_gone.set)
            client_gone.wait(SLOW_HOLD_SECONDS)
            receiver.record(context.peer(), request, deadline, "abandoned")
            return ExportTraceServiceResponse()
        receiver.record(context.peer(), request, deadline, "stored")
        return ExportTraceServiceResponse()


def _http_handler(receiver: FaultyOtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keeps connections alive, as collectors do

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            peer = "{}:{}".format(*self.client_address)
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            failing = receiver.behaviour == "fail"
            receiver.record(peer, request, None, "failed" if failing else "stored")
            send_protobuf(self, receiver.failure if failing else 200, ExportTraceServiceResponse())

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    return Handler


@contextlib.contextmanager
def running_faulty_receiver(protocol: str = "grpc") -> Iterator[FaultyOtlpReceiver]:
    """A receiver on a free loopback port, killed when the block ends."""
    receiver = FaultyOtlpReceiver(protocol)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.kill()
