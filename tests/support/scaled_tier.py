"""The scaled tier as native processes on loopback: agent -> gateway-1, gateway-2 -> Jaeger.

The Collectors run the shipped configs (collector-config/scaled/otel-agent.yaml and
otel-gateway.yaml) on the binaries collector-config/build.sh builds; every port is a free one,
passed through the configs' environment variables, and every state directory is under the
caller's temporary directory. Jaeger keeps traces in memory and does not trace itself.

Used by tests/test_scaled_tier.py and benchmarks/stack_throughput.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.prometheus import free_port

REPOSITORY = Path(__file__).resolve().parents[2]
SCALED = REPOSITORY / "collector-config" / "scaled"
AGENT_CONFIG = SCALED / "otel-agent.yaml"
GATEWAY_CONFIG = SCALED / "otel-gateway.yaml"
TLS_OVERRIDES = {
    "agent": SCALED / "otel-agent.tls.yaml",
    "gateway": SCALED / "otel-gateway.tls.yaml",
}
BIN = REPOSITORY / "collector-config" / "bin"
LOAD_APP = REPOSITORY / "tests" / "apps" / "scaled_load.py"
BUILD_HINT = "build them with `collector-config/build.sh`"
GATEWAYS = ("gateway-1", "gateway-2")


class MissingBinary(RuntimeError):
    """A stack binary is not built; the message says how to build it."""


def stack_binary(name: str) -> Path:
    """collector-config/bin/NAME, or the path in $REASONFLOW_<NAME>_BIN (a prebuilt copy)."""
    variable = "REASONFLOW_" + name.upper().replace("-", "_") + "_BIN"
    path = Path(os.environ.get(variable) or BIN / name)
    if not os.access(path, os.X_OK):
        raise MissingBinary(f"{path} is missing: {BUILD_HINT} (or set {variable})")
    return path


def require_stack_binaries() -> None:
    """Skips the test with a hint when the binaries are not built; fails it in CI (CI set)."""
    try:
        stack_binary("otelcol-reasonflow")
        stack_binary("jaeger")
    except MissingBinary as missing:
        if os.environ.get("CI"):
            pytest.fail(str(missing), pytrace=False)
        pytest.skip(str(missing))


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    """Status and body; (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


def scrape(port: int) -> dict[str, float]:
    """A Prometheus endpoint's samples, summed by name over their labels (empty if down)."""
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    totals: dict[str, float] = {}
    if status != 200:
        return totals
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


@dataclass
class Process:
    """One native process of the tier, restartable, its output appended to one log."""

    name: str
    command: list[str]
    environ: dict[str, str]
    log: Path
    health_url: str
    telemetry_port: int
    popen: subprocess.Popen[bytes] | None = None
    cpu_seconds: float = 0.0  # of the instances that have ended
    peak_rss: int = 0
    ended_metrics: dict[str, float] = field(default_factory=dict)  # last scrape of each

    def start(self, timeout: float = 60) -> None:
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                self.command, env=self.environ, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for(self.healthy, timeout, f"{self.name} to be healthy (log: {self.log})")

    def healthy(self) -> bool:
        assert self.popen is not None
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
        return http_get(self.health_url, timeout=1)[0] == 200

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 90) -> int:
        """Ends the process with ``sig`` and returns its exit status."""
        assert self.popen is not None
        self.sample()
        self.cpu_seconds += self._cpu_now()
        for name, value in scrape(self.telemetry_port).items():
            self.ended_metrics[name] = self.ended_metrics.get(name, 0.0) + value
        self.popen.send_signal(sig)
        status = self.popen.wait(timeout=timeout)
        self.popen = None
        return status

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def _cpu_now(self) -> float:
        assert self.popen is not None
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sample(self) -> None:
        """Records the peak resident set so far (VmHWM) of the running instance."""
        if not self.running():
            return
        assert self.popen is not None
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)

    def total_cpu_seconds(self) -> float:
        return self.cpu_seconds + (self._cpu_now() if self.running() else 0.0)

    def metrics(self) -> dict[str, float]:
        """The running instance's own otelcol_* metrics, summed over labels."""
        return scrape(self.telemetry_port) if self.running() else {}

    def counter(self, name: str) -> float:
        """A counter over every instance so far (the ended ones as last scraped before the end)."""
        return self.ended_metrics.get(name, 0.0) + self.metrics().get(name, 0.0)


def collector_environ(name: str, work: Path, telemetry_port: int, **settings: str) -> dict:
    """What every Collector of the tier gets: own telemetry port, own queue dir, no OTEL_*."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.update(
        COLLECTOR_TELEMETRY_PORT=str(telemetry_port),
        QUEUE_DIRECTORY=str(work / name / "queue"),
        MEMORY_LIMIT_MIB="256",
        MEMORY_SPIKE_LIMIT_MIB="64",
    )
    environ.update(settings)
    return environ


def jaeger_config(otlp_port: int, http_port: int, grpc_port: int, telemetry_port: int) -> dict:
    """Jaeger v2 in memory on loopback, with its own API calls not traced."""
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "exporters": ["jaeger_storage_exporter"]}
            },
            "telemetry": {
                "metrics": {
                    "level": "basic",
                    "readers": [
                        {
                            "pull": {
                                "exporter": {
                                    "prometheus": {"host": "127.0.0.1", "port": telemetry_port}
                                }
                            }
                        }
                    ],
                }
            },
        },
        "extensions": {
            "jaeger_query": {
                "storage": {"traces": "store"},
                "enable_tracing": False,
                "http": {"endpoint": f"127.0.0.1:{http_port}"},
                "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
            },
            "jaeger_storage": {"backends": {"store": {"memory": {"max_traces": 200000}}}},
        },
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{otlp_port}"}}}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "store"}},
    }


@dataclass
class ScaledTier:
    """The running tier: processes by name, the agent's OTLP endpoint, Jaeger's API."""

    work: Path
    token: str
    processes: dict[str, Process]
    agent_otlp: str
    agent_exporter_port: int
    jaeger_api: str
    gateway_otlp: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Process:
        return self.processes[name]

    def collectors(self) -> list[Process]:
        return [self.processes[name] for name in ("agent", *GATEWAYS)]

    def jaeger_trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans Jaeger's API returns for a trace, each with its process ([] if none)."""
        status, body = http_get(f"{self.jaeger_api}/api/traces/{trace_id}")
        if status != 200:
            return []
        data = json.loads(body)["data"]
        if not data:
            return []
        processes = data[0]["processes"]
        return [{**span, "process": processes[span["processID"]]} for span in data[0]["spans"]]

    def drained(self) -> bool:
        """Nothing left in any Collector's queue (the agent's, the gateways' to Jaeger)."""
        return all(
            process.metrics().get("otelcol_exporter_queue_size", 1) == 0
            for process in self.collectors()
            if process.running()
        )

    def send(self, manifest: Path, traces: int, rate: float, **options: str) -> dict[str, Any]:
        """Runs tests/apps/scaled_load.py to the end; returns its manifest."""
        start_load(self.agent_otlp, manifest, traces, rate, **options).wait(timeout=600)
        return json.loads(manifest.read_text())


def start_load(
    agent: str, manifest: Path, traces: int, rate: float, payload: int = 0, **environ: str
) -> subprocess.Popen[bytes]:
    """tests/apps/scaled_load.py sending to ``agent`` (host:port), in the background."""
    settings = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    settings.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{agent}",
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_METRIC_EXPORT_INTERVAL="1000",
        OTEL_LOGS_EXPORTER="none",
    )
    settings.update(environ)
    command = [sys.executable, str(LOAD_APP), "--traces", str(traces), "--rate", str(rate)]
    command += ["--payload", str(payload), "--manifest", str(manifest)]
    log = (manifest.parent / (manifest.stem + ".log")).open("ab")
    return subprocess.Popen(command, env=settings, stdout=log, stderr=subprocess.STDOUT)


def make_certificates(directory: Path) -> dict[str, str]:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it (openssl), as the TLS
    overrides' settings."""
    if shutil.which("openssl") is None:
        message = "`openssl` is not installed: `apt-get install -y openssl` (Debian)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=test-ca",
        "req -newkey rsa:2048 -nodes -keyout gateway.key -out gateway.csr -subj /CN=127.0.0.1",
        "x509 -req -in gateway.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out gateway.crt"
        " -days 1 -extfile san.cnf",
    ):
        subprocess.run(
            ["openssl", *command.split()], cwd=directory, capture_output=True, check=True
        )
    return {
        "GATEWAY_TLS_CA_FILE": str(directory / "ca.crt"),
        "GATEWAY_TLS_CERT_FILE": str(directory / "gateway.crt"),
        "GATEWAY_TLS_KEY_FILE": str(directory / "gateway.key"),
    }


@contextmanager
def running_scaled_tier(
    work: Path,
    gateway: Mapping[str, str] | None = None,
    agent: Mapping[str, str] | None = None,
    tls: bool = False,
) -> Iterator[ScaledTier]:
    """Starts Jaeger, both gateways and the agent (in that order); stops them all at the end.

    ``gateway`` and ``agent`` are extra environment settings of those Collectors; ``tls`` adds
    the TLS overrides, with a throwaway CA, on the hop from the agent to the gateways.
    """
    otelcol, jaeger = stack_binary("otelcol-reasonflow"), stack_binary("jaeger")
    work.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    certificates = make_certificates(work / "tls") if tls else {}

    def command(role: str, config: Path) -> list[str]:
        configs = [config, TLS_OVERRIDES[role]] if tls else [config]
        return [str(otelcol), *(f"--config={path}" for path in configs)]

    ports = {name: free_port() for name in ("otlp", "http", "grpc", "telemetry")}
    jaeger_file = work / "jaeger.json"
    jaeger_file.write_text(
        json.dumps(jaeger_config(ports["otlp"], ports["http"], ports["grpc"], ports["telemetry"]))
    )
    processes = {
        "jaeger": Process(
            "jaeger",
            [str(jaeger), "--config", str(jaeger_file)],
            collector_environ("jaeger", work, ports["telemetry"]),
            work / "jaeger.log",
            f"http://127.0.0.1:{ports['http']}/api/services",
            ports["telemetry"],
        )
    }
    gateway_otlp = {}
    for name in GATEWAYS:
        otlp, health, telemetry = free_port(), free_port(), free_port()
        gateway_otlp[name] = f"127.0.0.1:{otlp}"
        environ = collector_environ(
            name,
            work,
            telemetry,
            OTLP_GRPC_ENDPOINT=gateway_otlp[name],
            HEALTH_CHECK_ENDPOINT=f"127.0.0.1:{health}",
            JAEGER_OTLP_ENDPOINT=f"127.0.0.1:{ports['otlp']}",
            GATEWAY_BEARER_TOKEN=token,
            GATEWAY_NAME=name,
            **certificates,
            **(gateway or {}),
        )
        processes[name] = Process(
            name,
            command("gateway", GATEWAY_CONFIG),
            environ,
            work / f"{name}.log",
            f"http://127.0.0.1:{health}/",
            telemetry,
        )
    agent_otlp, health, telemetry, exporter = (free_port() for _ in range(4))
    environ = collector_environ(
        "agent",
        work,
        telemetry,
        OTLP_GRPC_ENDPOINT=f"127.0.0.1:{agent_otlp}",
        OTLP_HTTP_ENDPOINT=f"127.0.0.1:{free_port()}",
        HEALTH_CHECK_ENDPOINT=f"127.0.0.1:{health}",
        PROMETHEUS_EXPORTER_ENDPOINT=f"127.0.0.1:{exporter}",
        GATEWAY_ENDPOINTS="[" + ", ".join(gateway_otlp.values()) + "]",
        GATEWAY_BEARER_TOKEN=token,
        **certificates,
        **(agent or {}),
    )
    processes["agent"] = Process(
        "agent",
        command("agent", AGENT_CONFIG),
        environ,
        work / "agent.log",
        f"http://127.0.0.1:{health}/",
        telemetry,
    )
    tier = ScaledTier(
        work,
        token,
        processes,
        f"127.0.0.1:{agent_otlp}",
        exporter,
        f"http://127.0.0.1:{ports['http']}",
        gateway_otlp,
    )
    try:
        for process in processes.values():
            process.start()
        yield tier
    finally:
        for process in reversed(processes.values()):
            if process.running():
                process.stop(signal.SIGTERM, timeout=60)


def copy_logs(tier: ScaledTier, destination: Path) -> None:
    """Keeps the processes' logs next to a failed test's output."""
    for process in tier.processes.values():
        shutil.copy(process.log, destination / process.log.name)
