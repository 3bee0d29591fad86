"""Running Python programs in a fresh process, as a user would, for end-to-end tests.

The OpenTelemetry global providers can be set once per process, and
``opentelemetry-instrument`` works on a whole program, so these tests run apps
as child processes with an environment free of the caller's telemetry settings.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
METRICS_APP = REPOSITORY / "tests" / "apps" / "metrics_app.py"


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without OTEL_* / REASONFLOW_OTEL_*, plus ``settings``."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "REASONFLOW_OTEL_"))
    }
    environ.update(settings)
    return environ


def run_program(
    command: Sequence[str], cwd: Path, *, input: str | None = None, **settings: str
) -> subprocess.CompletedProcess[str]:
    """Run to completion in ``cwd`` with a clean environment; fails the test on a non-zero exit.

    ``input`` is written to the program's standard input; ``settings`` are environment variables.
    """
    completed = subprocess.run(
        list(command),
        cwd=cwd,
        env=clean_environment(**settings),
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return completed


def stop_process(process: subprocess.Popen, timeout: float = 15) -> None:
    """Ask a background process to end (SIGTERM), and kill it if it does not."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@contextlib.contextmanager
def running_metrics_app(
    port: int, log_path: Path, *, service: str, seconds: float = 300
) -> Iterator[subprocess.Popen[bytes]]:
    """tests/apps/metrics_app.py serving its metrics for Prometheus on 127.0.0.1:``port``."""
    environ = clean_environment(
        OTEL_SERVICE_NAME=service,
        OTEL_METRICS_EXPORTER="prometheus",
        OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
        OTEL_EXPORTER_PROMETHEUS_PORT=str(port),
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    with log_path.open("w") as log:
        app = subprocess.Popen(
            [sys.executable, str(METRICS_APP), "--seconds", str(seconds)],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield app
    finally:
        stop_process(app)
