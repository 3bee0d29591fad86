"""The stack that collector-config/build.sh builds and collector-config/run-local.sh runs.

``built_binary`` finds ``collector-config/bin/NAME`` (missing: the test fails in CI, where
.ci/run builds it, and skips elsewhere with the build command). ``running_stack`` starts the
whole native stack with ``run-local.sh up`` on free loopback ports and a temporary state
folder, yields where each part listens, and ends with ``run-local.sh down``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.alertmanager import INSTALL_HINT as ALERTMANAGER_HINT
from support.prometheus import PrometheusClient, find_binary, free_port
from support.scaled_tier import MissingBinary, stack_binary

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "collector-config"
RUN_LOCAL = CONFIG_DIR / "run-local.sh"

# run-local.sh's port variables: the tests give each its own free port.
PORT_VARIABLES = (
    "OTLP_GRPC_PORT",
    "OTLP_HTTP_PORT",
    "PROMETHEUS_EXPORTER_PORT",
    "HEALTH_CHECK_PORT",
    "COLLECTOR_TELEMETRY_PORT",
    "JAEGER_QUERY_PORT",
    "JAEGER_QUERY_GRPC_PORT",
    "JAEGER_OTLP_GRPC_PORT",
    "JAEGER_OTLP_HTTP_PORT",
    "JAEGER_HEALTH_PORT",
    "JAEGER_TELEMETRY_PORT",
    "PROMETHEUS_PORT",
    "ALERTMANAGER_PORT",
)


def built_binary(name: str) -> Path:
    """``collector-config/bin/NAME``; fails in CI and skips elsewhere when it is not built."""
    try:
        return stack_binary(name)
    except MissingBinary as missing:
        if os.environ.get("CI"):
            pytest.fail(str(missing), pytrace=False)
        pytest.skip(str(missing))


def validate(binary: str, *configs: Path, flag: str = "--config") -> subprocess.CompletedProcess:
    """``BINARY validate --config A --config B``: the binary's own judgement of the configs."""
    arguments = [arg for config in configs for arg in (flag, str(config))]
    return subprocess.run(
        [str(built_binary(binary)), "validate", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={key: value for key, value in os.environ.items() if not key.startswith("OTEL_")},
    )


def http_json(url: str, **params: Any) -> Any:
    """GET ``url`` with ``params`` (lists become repeated parameters); the decoded JSON."""
    if params:
        url = f"{url}?{urllib.parse.urlencode(params, doseq=True)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@dataclass(frozen=True)
class Stack:
    """Where a stack that ``run-local.sh up`` started listens, and its settings."""

    ports: Mapping[str, int]
    state_dir: Path
    environ: Mapping[str, str]

    def url(self, port_variable: str) -> str:
        return f"http://127.0.0.1:{self.ports[port_variable]}"

    @property
    def otlp_grpc(self) -> str:
        return self.url("OTLP_GRPC_PORT")

    @property
    def jaeger(self) -> str:
        return self.url("JAEGER_QUERY_PORT")

    @property
    def prometheus(self) -> PrometheusClient:
        return PrometheusClient(self.url("PROMETHEUS_PORT"))

    @property
    def alertmanager(self) -> str:
        return self.url("ALERTMANAGER_PORT")

    def run(self, *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``run-local.sh ARGUMENTS`` for this stack; the caller checks the result."""
        return subprocess.run(
            [str(RUN_LOCAL), *arguments],
            env=dict(self.environ),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def listening_ports(self) -> list[int]:
        """Those of the stack's ports that something listens on right now."""
        taken = subprocess.run(
            ["ss", "-ltnH"], capture_output=True, text=True, check=True
        ).stdout.split("\n")
        local_ports = {line.split()[3].rsplit(":", 1)[1] for line in taken if line.strip()}
        return [port for port in self.ports.values() if str(port) in local_ports]


def stack_environment(state_dir: Path, **settings: str) -> tuple[dict[str, int], dict[str, str]]:
    """Free ports for every listener, a state folder, and ``settings`` on top."""
    for name in ("otelcol-reasonflow", "jaeger"):
        built_binary(name)
    find_binary("prometheus")
    find_binary("prometheus-alertmanager", ALERTMANAGER_HINT)
    ports = {variable: free_port() for variable in PORT_VARIABLES}
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "REASONFLOW_", "TAIL_SAMPLING_"))
    }
    environ.update({variable: str(port) for variable, port in ports.items()})
    environ["REASONFLOW_STACK_DIR"] = str(state_dir)
    environ.update(settings)
    return ports, environ


@contextlib.contextmanager
def running_stack(state_dir: Path, **settings: str) -> Iterator[Stack]:
    """``run-local.sh up`` on free loopback ports with ``settings``; ``down`` at the end."""
    ports, environ = stack_environment(state_dir, **settings)
    stack = Stack(ports, state_dir, environ)
    started = stack.run("up", timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield stack
    finally:
        stopped = stack.run("down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
