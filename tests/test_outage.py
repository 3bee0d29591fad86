"""The workflow never waits for a telemetry backend that is down.

An instrumented app (tests/apps/outage_app.py) exports over OTLP to a loopback
port that refuses connections, or to a server that accepts them and never
answers. The app must run its flows to the right result, raise nothing, and exit
within the export timeout plus a second: without the exit deadline the SDK
would spend the timeout on each queued batch in turn, several times longer.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.processes import REPOSITORY, run_program

OUTAGE_APP = REPOSITORY / "tests" / "apps" / "outage_app.py"
EXPORT_TIMEOUT_SECONDS = 3
# The bound the exit deadline keeps (timeout + 1 s), plus slack for a loaded machine;
# the SDK alone takes the timeout per queued batch (five batches or more here).
EXIT_BOUND_SECONDS = EXPORT_TIMEOUT_SECONDS + 1 + 3
# 3,000 spans: more than the span queue holds, so the outage also drops spans.
FLOW_RUNS = 30


@pytest.fixture
def refusing_endpoint() -> Iterator[str]:
    """A loopback port that refuses connections: bound, never listening."""
    with socket.socket() as port:
        port.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{port.getsockname()[1]}"


@pytest.fixture
def black_hole_endpoint() -> Iterator[str]:
    """A server that accepts connections (the kernel completes them) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def run_against(endpoint: str, protocol: str, cwd: Path) -> tuple[dict[str, Any], float, str]:
    """Run the outage app; its report, the seconds its exit took, and its stderr."""
    completed = run_program(
        [sys.executable, str(OUTAGE_APP), str(FLOW_RUNS)],
        cwd,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_TIMEOUT=str(EXPORT_TIMEOUT_SECONDS),
    )
    exited = time.time()
    report = json.loads(completed.stdout)
    return report, exited - report["done_at"], completed.stderr


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("endpoint", ["refusing_endpoint", "black_hole_endpoint"])
def test_backend_outage_neither_fails_the_flow_nor_holds_the_exit(
    endpoint: str, protocol: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    report, exit_seconds, stderr = run_against(
        request.getfixturevalue(endpoint), protocol, tmp_path
    )

    assert "PocketFlowInstrumentor" in report["engines"]
    assert report["total"] == 100  # every node of the last run added its 1
    assert "Traceback" not in stderr
    assert "internal error" not in stderr
    assert exit_seconds < EXIT_BOUND_SECONDS, stderr
