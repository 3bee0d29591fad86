"""The viewer under test: trace files from real instrumented runs, and servers on free ports."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reasonflow_otel.local.viewer.server import ViewerServer
from support.processes import BIN, REPOSITORY, clean_environment, run_program, stop_process

VIEWER_APP = REPOSITORY / "tests" / "apps" / "viewer_app.py"
EXAMPLES = REPOSITORY / "examples"
SERVICE = "report-service"
URL = re.compile(r"http://\S+/")


def record_runs(directory: Path) -> Path:
    """Run the viewer app under opentelemetry-instrument (exec and post payloads captured).

    Each call appends four traces to ``directory``'s trace file; returns its path.
    """
    run_program(
        [str(BIN / "opentelemetry-instrument"), sys.executable, str(VIEWER_APP)],
        directory,
        OTEL_SERVICE_NAME=SERVICE,
        REASONFLOW_OTEL_CAPTURE="exec,post",
    )
    return directory / ".reasonflow-otel" / "traces.jsonl"


def record_example(directory: Path, example: str) -> Path:
    """Run ``examples/EXAMPLE`` under opentelemetry-instrument in ``directory``, as the
    README says (no service name set); returns the trace file it wrote."""
    run_program(
        [str(BIN / "opentelemetry-instrument"), sys.executable, str(EXAMPLES / example)],
        directory,
    )
    return directory / ".reasonflow-otel" / "traces.jsonl"


def get(url: str, **headers: str) -> tuple[int, Any]:
    """Status and parsed JSON body of a GET, whatever the status."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def get_indexed(url: str, timeout: float = 30.0) -> Any:
    """A 200 answer given once the file is fully read (``file.indexing`` false)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = get(url)
        assert status == 200, body
        if not body["file"]["indexing"] or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


@contextlib.contextmanager
def running_viewer(trace_file: Path) -> Iterator[str]:
    """An in-process viewer of ``trace_file`` on a free loopback port; yields its base URL."""
    server = ViewerServer(trace_file, "127.0.0.1", 0)
    thread = server.serve_in_thread()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def viewer_process(*arguments: str, cwd: Path) -> Iterator[str]:
    """``reasonflow-otel ui --port 0 --no-browser ARGUMENTS`` in a process; yields its URL."""
    process = subprocess.Popen(
        [str(BIN / "reasonflow-otel"), "ui", "--port", "0", "--no-browser", *arguments],
        cwd=cwd,
        env=clean_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        match = URL.search(first_line)
        assert match, f"no URL in {first_line!r}"
        yield match.group()
    finally:
        stop_process(process)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
