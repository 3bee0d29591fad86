"""A real Jaeger v2 for tests: the binary collector-config/build.sh builds, on free loopback
ports, with a config of its own (memory storage, OTLP over HTTP, the query API).

The binary is ``collector-config/bin/jaeger`` (or ``$REASONFLOW_JAEGER_BIN``), found as the
stack's tests find it: missing, the test fails in CI (``CI`` set: .ci/run builds it) and skips
elsewhere with the build command.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.processes import clean_environment, stop_process
from support.prometheus import free_port
from support.stack import built_binary

START_SECONDS = 60
# collector-config/jaeger/config.yaml cut to what a test needs: no health check, no metrics
# storage, no telemetry listener; every port from the environment, on loopback.
CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: traces_store
    http:
      endpoint: 127.0.0.1:${env:JAEGER_QUERY_PORT}
    grpc:
      endpoint: 127.0.0.1:${env:JAEGER_QUERY_GRPC_PORT}
  jaeger_storage:
    backends:
      traces_store:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:${env:JAEGER_OTLP_HTTP_PORT}
exporters:
  jaeger_storage_exporter:
    trace_storage: traces_store
"""


@dataclass(frozen=True)
class Jaeger:
    query_url: str  # the UI and query API (Jaeger's 16686)
    otlp_http: str  # OTLP/HTTP receiver (Jaeger's 4318)


def jaeger_binary() -> str:
    return str(built_binary("jaeger"))


@contextlib.contextmanager
def running_jaeger(directory: Path) -> Iterator[Jaeger]:
    """Jaeger with :data:`CONFIG` until the block ends; its log is ``directory/jaeger.log``."""
    binary = jaeger_binary()
    config = directory / "jaeger.yaml"
    config.write_text(CONFIG)
    ports = {
        name: str(free_port())
        for name in ("JAEGER_QUERY_PORT", "JAEGER_QUERY_GRPC_PORT", "JAEGER_OTLP_HTTP_PORT")
    }
    jaeger = Jaeger(
        query_url=f"http://127.0.0.1:{ports['JAEGER_QUERY_PORT']}",
        otlp_http=f"http://127.0.0.1:{ports['JAEGER_OTLP_HTTP_PORT']}",
    )
    log = (directory / "jaeger.log").open("w")
    process = subprocess.Popen(
        [binary, "--config", str(config)],
        env=clean_environment(**ports),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_answering(jaeger, process, directory / "jaeger.log")
        yield jaeger
    finally:
        stop_process(process)
        log.close()


def _wait_until_answering(jaeger: Jaeger, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Jaeger exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{jaeger.query_url}/api/v3/services", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    pytest.fail(f"Jaeger did not answer within {START_SECONDS} s:\n{log.read_text()[-3000:]}")
