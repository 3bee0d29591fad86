"""The viewer's HTTP server: the standard library's, serving the JSON API and the page.

No web framework: a handful of read-only GET routes do not need one, and the core install
stays as it is. The page is plain HTML, CSS and JavaScript shipped in the package (no build
step, nothing fetched from the internet).
"""

from __future__ import annotations

import ipaddress
import json
import math
import socket
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from reasonflow_otel.guard import report_internal_error
from reasonflow_otel.local.viewer import api
from reasonflow_otel.local.viewer.index import TraceIndex, TraceSource

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7241
# Route -> (file under static/, content type). Nothing else on disk is ever served.
STATIC_FILES: Mapping[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/viewer.css": ("viewer.css", "text/css; charset=utf-8"),
    "/static/viewer.js": ("viewer.js", "text/javascript; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ViewerServer(ThreadingHTTPServer):
    """Serves one trace file's viewer; ``url`` is where to point a browser."""

    daemon_threads = True

    def __init__(
        self, source: Path | TraceSource, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
    ):
        """Serve a trace file (a path) or another source, such as Jaeger."""
        self.index = TraceIndex(source) if isinstance(source, Path) else source
        self.loopback_only = is_loopback(host)
        self.static = {
            route: ((resources.files(__package__) / "static" / name).read_bytes(), kind)
            for route, (name, kind) in STATIC_FILES.items()
        }
        if ":" in host:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__((host, port), ViewerRequestHandler)
        self.index.refresh_in_background()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def serve_in_thread(self) -> threading.Thread:
        """Serve until :meth:`shutdown`, on a daemon thread (for tests and benchmarks)."""
        thread = threading.Thread(target=self.serve_forever, name="reasonflow-viewer", daemon=True)
        thread.start()
        return thread


class ViewerRequestHandler(BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "reasonflow-otel-viewer"

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        try:
            if not self._host_allowed():
                raise api.ApiError(HTTPStatus.FORBIDDEN, "this viewer answers to localhost only")
            if url.path.startswith("/api/"):
                self._send_json(HTTPStatus.OK, self._api(url))
            elif url.path in self.server.static:
                body, kind = self.server.static[url.path]
                self._send(HTTPStatus.OK, body, kind)
            else:
                raise api.ApiError(HTTPStatus.NOT_FOUND, f"no page at {url.path}")
        except api.ApiError as error:
            self._send_json(error.status, {"error": str(error)})
        except Exception as error:  # a bug must not take the viewer down
            report_internal_error("answering a viewer request", error)
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    def _api(self, url: urllib.parse.SplitResult) -> dict[str, Any]:
        index = self.server.index
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        routes: dict[str, Callable[[], dict[str, Any]]] = {
            "/api/traces": lambda: api.list_traces(index, query),
            "/api/stats": lambda: api.get_stats(index),
        }
        route = routes.get(url.path.rstrip("/"))
        if route is not None:
            return route()
        trace_id = url.path.removeprefix("/api/traces/")
        if trace_id != url.path and trace_id and "/" not in trace_id:
            return api.get_trace(index, urllib.parse.unquote(trace_id))
        raise api.ApiError(HTTPStatus.NOT_FOUND, f"no endpoint {url.path}")

    def _host_allowed(self) -> bool:
        """On loopback, only a loopback Host: a web page elsewhere cannot rebind its name here."""
        if not self.server.loopback_only:
            return True
        host = urllib.parse.urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        return is_loopback(host)

    def _send_json(self, status: int, document: Mapping[str, Any]) -> None:
        try:
            text = json.dumps(document, allow_nan=False, default=str)
        except ValueError:  # NaN or Infinity in an attribute: not JSON, so sent as text
            text = json.dumps(_finite(document), default=str)
        self._send(status, text.encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a request log would bury the URL the user needs."""


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by its name."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
