"""A real Alertmanager (and amtool) for tests, and an HTTP server that receives its notifications.

``running_alertmanager`` starts Debian's ``prometheus-alertmanager`` on a free loopback port with
a temporary storage directory and clustering off, and yields a small client for its API.
``NotificationSink`` is the webhook (or Slack API) endpoint it delivers to. A missing binary
fails the test in CI and skips it elsewhere, with the install command.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.prometheus import find_binary, free_port, running_server

INSTALL_HINT = "apt-get install -y prometheus-alertmanager"


def run_amtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run amtool with ``args``; the caller asserts on the return code and output."""
    return subprocess.run(
        [find_binary("amtool", INSTALL_HINT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class AlertmanagerClient:
    """The one call of Alertmanager's v2 API the tests need."""

    base_url: str

    @property
    def address(self) -> str:
        """``host:port``, as Prometheus' ``alerting`` section wants it."""
        return self.base_url.removeprefix("http://")

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` with filters such as ``inhibited="true"``."""
        query = urllib.parse.urlencode(filters)
        with urllib.request.urlopen(f"{self.base_url}/api/v2/alerts?{query}", timeout=10) as r:
            return list(json.load(r))


@contextlib.contextmanager
def running_alertmanager(
    work_dir: Path, config: Path, start_timeout: float = 30.0
) -> Iterator[AlertmanagerClient]:
    """Start a real Alertmanager with ``config``; yield its client; stop it at the end."""
    binary = find_binary("prometheus-alertmanager", INSTALL_HINT)
    work_dir.mkdir(parents=True, exist_ok=True)
    client = AlertmanagerClient(f"http://127.0.0.1:{free_port()}")
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.path={work_dir / 'data'}",
        f"--web.listen-address={client.address}",
        f"--web.external-url={client.base_url}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    with running_server(command, client.base_url, work_dir / "alertmanager.log", start_timeout):
        yield client


@dataclass(frozen=True)
class Notification:
    """One POST that reached the sink."""

    path: str
    authorization: str | None
    body: Any


class NotificationSink:
    """An HTTP server on 127.0.0.1 that keeps every JSON POST it receives."""

    def __init__(self) -> None:
        self._received: list[Notification] = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                notification = Notification(self.path, self.headers["Authorization"], body)
                with sink._lock:
                    sink._received.append(notification)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def received(self, path: str) -> list[Notification]:
        """What was POSTed to ``path`` so far, oldest first."""
        with self._lock:
            return [n for n in self._received if n.path == path]

    def __enter__(self) -> NotificationSink:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
