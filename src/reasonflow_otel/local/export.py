"""``reasonflow-otel export``: send recorded spans to an OTLP endpoint, e.g. Jaeger's.

Each line of the trace file already is an ``ExportTraceServiceRequest``, in OTLP/JSON. It
becomes the protobuf message through protobuf's own JSON parser, once the one difference
between OTLP/JSON and protobuf's JSON mapping is undone (ids are hex, not base64). Nothing is
lost on the way (resources, scopes, links, flags, dropped counts), which rebuilding SDK span
objects for the upstream exporters could not promise. The messages are then sent as the OTLP
specification says: a protobuf POST to ``/v1/traces``, or the ``TraceService/Export`` call.
"""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_HEADERS,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
)
from opentelemetry.util.re import parse_env_headers

from reasonflow_otel.local.store import Warn, read_lines

PROTOCOLS = ("grpc", "http/protobuf")
MAX_SPANS_PER_REQUEST = 1000
MAX_REQUEST_BYTES = 3_000_000  # below the 4 MiB a gRPC server accepts by default
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


class ExportError(Exception):
    """The endpoint could not be reached or refused a request."""


@dataclass
class ExportResult:
    spans: int = 0
    requests: int = 0
    rejected: int = 0
    error: str | None = None


def export_file(
    path: Path,
    endpoint: str,
    protocol: str,
    headers: Mapping[str, str],
    timeout: float,
    warn: Warn,
) -> ExportResult:
    """Send every readable span of the file; stops at the first request that fails."""
    requests = read_lines(path, "traces", lambda line: [request_from_json(line)], warn)
    sender = make_sender(endpoint, protocol, headers, timeout)
    result = ExportResult()
    try:
        for batch in batches(requests):
            response = sender.send(batch)
            result.requests += 1
            result.spans += span_count(batch)
            result.rejected += response.partial_success.rejected_spans
    except ExportError as error:
        result.error = str(error)
    finally:
        sender.close()
    return result


# --- OTLP/JSON to protobuf ----------------------------------------------------------------------


def request_from_json(request: dict[str, Any]) -> ExportTraceServiceRequest:
    """One parsed OTLP/JSON line (its ids converted in place) as the protobuf request.

    Raises ``ValueError`` for data that does not fit the message.
    """
    for span in _json_spans(request):
        _hex_ids_to_base64(span)
        for link in span.get("links") or ():
            _hex_ids_to_base64(link)
    try:
        return json_format.ParseDict(
            request, ExportTraceServiceRequest(), ignore_unknown_fields=True
        )
    except json_format.ParseError as error:
        raise ValueError(str(error)) from None


def _json_spans(request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for resource_spans in request["resourceSpans"]:
        for scope_spans in resource_spans.get("scopeSpans") or ():
            yield from scope_spans.get("spans") or ()


def _hex_ids_to_base64(item: dict[str, Any]) -> None:
    for key in _ID_FIELDS:
        if item.get(key):
            item[key] = base64.b64encode(bytes.fromhex(item[key])).decode("ascii")


def span_count(request: ExportTraceServiceRequest) -> int:
    return sum(
        len(scope_spans.spans)
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
    )


def batches(requests: Iterable[ExportTraceServiceRequest]) -> Iterator[ExportTraceServiceRequest]:
    """Lines merged into requests of at most about 1,000 spans and 3 MB."""
    batch, spans, size = ExportTraceServiceRequest(), 0, 0
    for request in requests:
        count, request_size = span_count(request), request.ByteSize()
        full = spans + count > MAX_SPANS_PER_REQUEST or size + request_size > MAX_REQUEST_BYTES
        if spans and full:
            yield batch
            batch, spans, size = ExportTraceServiceRequest(), 0, 0
        batch.MergeFrom(request)  # repeated fields append: resource_spans accumulate
        spans, size = spans + count, size + request_size
    if spans:
        yield batch


# --- Transports ---------------------------------------------------------------------------------


class Sender(Protocol):
    def send(self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse: ...

    def close(self) -> None: ...


def make_sender(endpoint: str, protocol: str, headers: Mapping[str, str], timeout: float) -> Sender:
    if "://" not in endpoint:
        endpoint = f"http://{endpoint}"
    if protocol == "grpc":
        return GrpcSender(endpoint, headers, timeout)
    return HttpSender(http_traces_url(endpoint), headers, timeout)


def http_traces_url(endpoint: str) -> str:
    """A base URL gets the signal path, as with ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    if urllib.parse.urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


class HttpSender:
    """OTLP/HTTP with a binary protobuf body."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout: float) -> None:
        self.url = url
        self._headers = {**headers, "Content-Type": "application/x-protobuf"}
        self._timeout = timeout

    def send(self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
        http_request = urllib.request.Request(
            self.url, data=request.SerializeToString(), headers=self._headers, method="POST"
        )
        try:
            with urllib.request.urlopen(http_request, timeout=self._timeout) as response:
                body = response.read()
                content_type = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            detail = error.read()[:200].decode("utf-8", "replace")
            raise ExportError(f"{self.url} answered HTTP {error.code}: {detail}") from None
        except OSError as error:
            reason = getattr(error, "reason", error)
            raise ExportError(f"cannot reach {self.url}: {reason}") from None
        if "protobuf" not in content_type:
            return ExportTraceServiceResponse()
        return ExportTraceServiceResponse.FromString(body)

    def close(self) -> None:
        pass


class GrpcSender:
    """OTLP/gRPC; TLS when the endpoint's scheme is ``https``."""

    def __init__(self, endpoint: str, headers: Mapping[str, str], timeout: float) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        self.target = parts.netloc
        self._channel = (
            grpc.secure_channel(self.target, grpc.ssl_channel_credentials())
            if parts.scheme == "https"
            else grpc.insecure_channel(self.target)
        )
        self._stub = TraceServiceStub(self._channel)
        self._metadata = tuple((key.lower(), value) for key, value in headers.items())
        self._timeout = timeout

    def send(self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
        try:
            return self._stub.Export(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            code, details = error.code(), error.details()  # type: ignore[attr-defined]
            raise ExportError(f"{self.target} answered {code.name}: {details}") from None

    def close(self) -> None:
        self._channel.close()


# --- Defaults from the environment --------------------------------------------------------------


def default_protocol(environ: Mapping[str, str] = os.environ) -> str:
    """``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``, else gRPC as in the Python OTLP exporter."""
    configured = environ.get(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) or environ.get(
        OTEL_EXPORTER_OTLP_PROTOCOL, ""
    )
    return configured.strip() if configured.strip() in PROTOCOLS else "grpc"


def environment_headers(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS`` then ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``."""
    headers: dict[str, str] = {}
    for variable in (OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_TRACES_HEADERS):
        headers.update(parse_env_headers(environ.get(variable, ""), liberal=True))
    return headers
