"""The workflow never waits for a telemetry backend that is down.

An instrumented app (tests/apps/outage_app.py) exports traces, metrics and logs
over OTLP to a loopback port that refuses connections, or to a server that
accepts them and never answers. The app must run its flows to the right result
and raise nothing. Its exit is bounded: against a refusing port it does not wait
out retries at all; against a silent server all three signals share one deadline,
the export timeout (the SDK alone would spend the timeout on each queued batch,
then again for metrics). Ctrl-C or SIGTERM while exit waits ends it at once.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.processes import REPOSITORY, clean_environment, run_program

from reasonflow_otel.sdk.exit import refuses_connections

OUTAGE_APP = REPOSITORY / "tests" / "apps" / "outage_app.py"
EXPORT_TIMEOUT_SECONDS = 3
# Generous bounds for a loaded machine: the exit takes about 0.3 s against a refusing
# port and the timeout plus 0.1 s against a silent server (measured by benchmarks/outage.py).
REFUSED_EXIT_BOUND_SECONDS = 2
BLACK_HOLE_EXIT_BOUND_SECONDS = EXPORT_TIMEOUT_SECONDS + 2
# 3,000 spans: more than the span queue holds, so the outage also drops spans.
FLOW_RUNS = 30
PROTOCOLS = ["grpc", "http/protobuf"]


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


def outage_settings(endpoint: str, protocol: str, timeout: float) -> dict[str, str]:
    """All three signals over OTLP to ``endpoint``."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_TIMEOUT": str(timeout),
        "OTEL_LOGS_EXPORTER": "otlp",
    }


def run_against(endpoint: str, protocol: str, cwd: Path) -> tuple[dict[str, Any], float, str]:
    """Run the outage app; its report, the seconds its exit took, and its stderr."""
    completed = run_program(
        [sys.executable, str(OUTAGE_APP), str(FLOW_RUNS)],
        cwd,
        **outage_settings(endpoint, protocol, EXPORT_TIMEOUT_SECONDS),
    )
    exited = time.time()
    report = json.loads(completed.stdout)
    return report, exited - report["done_at"], completed.stderr


def lost_reports(stderr: str, unit: str) -> list[tuple[int, int]]:
    pattern = rf"reasonflow-otel: (\d+) of (\d+) {unit} could not be delivered by the otlp_proto_"
    return [(int(lost), int(total)) for lost, total in re.findall(pattern, stderr)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("endpoint", "exit_bound_seconds"),
    [
        ("refusing_endpoint", REFUSED_EXIT_BOUND_SECONDS),  # no waiting out retries
        ("black_hole_endpoint", BLACK_HOLE_EXIT_BOUND_SECONDS),  # one timeout for all signals
    ],
)
def test_a_dead_backend_neither_fails_the_flow_nor_holds_the_exit(
    endpoint: str,
    exit_bound_seconds: float,
    protocol: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    report, exit_seconds, stderr = run_against(
        request.getfixturevalue(endpoint), protocol, tmp_path
    )

    assert "PocketFlowInstrumentor" in report["engines"]
    assert report["total"] == 100  # every node of the last run added its 1
    assert "Traceback" not in stderr
    assert "internal error" not in stderr
    assert exit_seconds < exit_bound_seconds, f"exit took {exit_seconds:.2f} s\n{stderr}"


def test_what_could_not_be_delivered_is_reported_once_per_signal(
    refusing_endpoint: str, tmp_path: Path
) -> None:
    _, _, stderr = run_against(refusing_endpoint, "grpc", tmp_path)

    [(lost_points, points)] = lost_reports(stderr, "metric points")
    assert lost_points == points > 0
    [(lost_records, records)] = lost_reports(stderr, "log records")
    assert lost_records == records >= 1  # the app's warning (and the exporters' own)
    [(lost_spans, spans)] = lost_reports(stderr, "spans")
    assert lost_spans == spans > 0


@pytest.mark.parametrize(
    ("signum", "name"), [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")]
)
def test_a_signal_during_the_exit_wait_ends_it_at_once_and_quietly(
    black_hole_endpoint: str, signum: int, name: str, tmp_path: Path
) -> None:
    """The export timeout is a minute: only the signal can end the exit in time."""
    app = subprocess.Popen(
        [sys.executable, str(OUTAGE_APP), "3"],
        cwd=tmp_path,
        env=clean_environment(**outage_settings(black_hole_endpoint, "grpc", 60)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout is not None
        json.loads(app.stdout.readline())  # the work is done; exit begins
        time.sleep(1)  # well into the exit's wait on the silent backend
        app.send_signal(signum)
        signalled = time.monotonic()
        _, stderr = app.communicate(timeout=30)
        ended_after = time.monotonic() - signalled
    finally:
        app.kill()

    assert app.returncode == -signum, stderr  # what the signal does without us
    assert "Traceback" not in stderr
    assert "Exception ignored" not in stderr
    assert ended_after < 5, f"{name} took {ended_after:.1f} s"


def test_refused_and_unresolvable_endpoints_are_told_from_slow_ones(
    refusing_endpoint: str, black_hole_endpoint: str
) -> None:
    """What lets the exit stop waiting at once: retrying cannot help these."""
    assert refuses_connections(refusing_endpoint, 2) is True
    assert refuses_connections("http://collector.invalid:4317", 2) is True  # DNS failure
    assert refuses_connections(black_hole_endpoint.removeprefix("http://"), 2) is False
