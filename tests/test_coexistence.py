"""Living beside other instrumentation: HTTP clients and LLM-client spans join our traces.

A node's ``requests`` and ``httpx`` calls to a local server, and an LLM-client span opened in a
node, are children of the node span, whether the app runs under ``opentelemetry-instrument``
(the clients' contrib instrumentations found by their entry points) or calls ``instrument()``.
"""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterator

import pytest
from support.processes import BIN, REPOSITORY, run_program

from reasonflow_otel.local.store import SpanRecord, read_spans

APP = REPOSITORY / "tests" / "apps" / "http_client_app.py"


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


COMMANDS = {
    "auto": [str(BIN / "opentelemetry-instrument"), sys.executable, str(APP)],
    "instrument": [sys.executable, str(APP)],
}


def parents(spans: list[SpanRecord]) -> dict[str, str | None]:
    """Each span's name (an HTTP span's: its URL) -> its parent's name."""
    names = {span.span_id: span.name for span in spans}
    return {_label(span): names.get(span.parent_id) for span in spans}


def _label(span: SpanRecord) -> str:
    url = span.attributes.get("url.full") or span.attributes.get("http.url")
    return f"{span.name} {url}" if url else span.name


@pytest.mark.parametrize("mode", COMMANDS)
def test_http_and_llm_client_spans_are_children_of_the_node_that_made_them(
    mode, server_url, tmp_path
):
    trace_file = tmp_path / "traces.jsonl"
    command = [*COMMANDS[mode], server_url, mode]
    completed = run_program(command, cwd=tmp_path, REASONFLOW_OTEL_TRACE_FILE=str(trace_file))
    assert completed.stdout == "done\n"

    spans = list(read_spans(trace_file))
    assert len({span.trace_id for span in spans}) == 1
    assert parents(spans) == {
        "invoke_workflow Orders": None,
        "FetchOrder": "invoke_workflow Orders",
        f"GET {server_url}/requests": "FetchOrder",
        "FetchCustomer": "invoke_workflow Orders",
        f"GET {server_url}/httpx": "FetchCustomer",
        "Draft": "invoke_workflow Orders",
        "chat stand-in-model": "Draft",
    }
