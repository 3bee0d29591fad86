"""A real Prometheus (and promtool) for tests, plus the PromQL of the shipped Grafana dashboard.

``running_prometheus`` starts Debian's ``prometheus`` binary on a free loopback port with a
temporary storage directory, scraping one localhost port every second, and yields a small
client for the HTTP API. A missing binary fails the test with the install command: these tests
never skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from support.processes import stop_process

INSTALL_HINT = "apt-get install -y prometheus"

# What the tests put in place of the dashboard's Grafana variables: every service, flow and
# node ("All" is the regex .*), and windows long enough for a run of a few tens of seconds.
GRAFANA_TEST_VARIABLES: Mapping[str, str] = {
    "service": ".*",
    "flow": ".*",
    "node": ".*",
    "__rate_interval": "1m",
    "__range": "5m",
    "__interval": "15s",
}


def find_binary(name: str, install_hint: str = INSTALL_HINT) -> str:
    """The path of ``name`` on PATH.

    Missing, it fails the test in CI (``CI`` set: .ci/run installs it) and skips it
    elsewhere, so the suite still runs on a machine that has only Python.
    """
    path = shutil.which(name)
    if path is None:
        unavailable(f"`{name}` is not installed. Install it with `{install_hint}` (Debian).")
    return path


def unavailable(message: str) -> NoReturn:
    """A binary the test needs is missing: a failure in CI (``CI`` set), else a skip."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool with ``args``; the caller asserts on the return code and output."""
    return subprocess.run(
        [find_binary("promtool"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def check_promql(expressions: Sequence[str], work_dir: Path) -> subprocess.CompletedProcess[str]:
    """Parse every expression with promtool, as recording rules of a throwaway rule file."""
    rules = [
        {"record": f"check:expression_{i}", "expr": expr} for i, expr in enumerate(expressions)
    ]
    rule_file = work_dir / "promql-check.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    return run_promtool("check", "rules", str(rule_file))


def relax_thresholds(expr: str) -> str:
    """An alert expression with every ``> N`` / ``>= N`` comparison turned into ``>= 0``.

    Evaluated on real data it shows that every selector of the alert matches series, even when
    the data is far from the thresholds.
    """
    return re.sub(r">=? [0-9.]+", ">= 0", expr)


# --- The Grafana dashboard's queries ----------------------------------------------------------


@dataclass(frozen=True)
class DashboardQuery:
    panel: str
    ref_id: str
    expr: str
    exemplar: bool


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[DashboardQuery]:
    """Every Prometheus query of every panel (rows included), in dashboard order."""
    queries = []

    def visit(panels: Sequence[Mapping[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                queries.append(
                    DashboardQuery(
                        panel=panel["title"],
                        ref_id=target["refId"],
                        expr=target["expr"],
                        exemplar=bool(target.get("exemplar", False)),
                    )
                )
            visit(panel.get("panels", []))

    visit(dashboard["panels"])
    return queries


def substitute_grafana_variables(
    expr: str, values: Mapping[str, str] = GRAFANA_TEST_VARIABLES
) -> str:
    """Replace ``$name`` and ``${name}`` the way Grafana does; unknown variables raise."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no test value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)


# --- A running Prometheus ---------------------------------------------------------------------


class PromQLError(AssertionError):
    """Prometheus rejected a query (bad syntax, bad types, ...)."""


# Below Linux's ephemeral range (32768-60999): a port the kernel hands out for port 0 can be
# taken again by any outgoing connection while a test restarts the process listening on it.
_LISTEN_PORTS = range(20000, 32768)
_ports_given: set[int] = set()
_port_choice = random.Random()  # our own generator: the global one is the tests' to seed


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, outside the ephemeral range, not given before."""
    while True:
        port = _port_choice.choice(_LISTEN_PORTS)
        if port in _ports_given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port


@dataclass
class PrometheusClient:
    """The few calls of the Prometheus HTTP API the tests need."""

    base_url: str

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base_url}{path}"
        if params:
            url = f"{url}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query at the current time; the result vector (or scalar as one sample)."""
        data = self.get("/api/v1/query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def label_sets(self, expr: str) -> list[dict[str, str]]:
        return [sample["metric"] for sample in self.query(expr)]

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def targets(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/targets")["activeTargets"])

    def wait_for(self, description: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
        return wait_for(description, check, timeout)


def wait_for(description: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {description}")
        time.sleep(0.5)


def write_config(
    directory: Path,
    target_port: int,
    *,
    job: str,
    rule_files: Sequence[Path] = (),
    scrape_interval: str = "1s",
    alertmanager: str | None = None,
) -> Path:
    """A Prometheus config scraping 127.0.0.1:``target_port`` every ``scrape_interval``.

    With ``alertmanager`` (``host:port``), firing alerts are sent there.
    """
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextlib.contextmanager
def running_prometheus(
    work_dir: Path,
    target_port: int,
    *,
    job: str = "reasonflow-app",
    rule_files: Sequence[Path] = (),
    scrape_interval: str = "1s",
    start_timeout: float = 60.0,
    alertmanager: str | None = None,
) -> Iterator[PrometheusClient]:
    """Start a real Prometheus scraping ``target_port``; yield its client; stop it at the end."""
    binary = find_binary("prometheus")
    work_dir.mkdir(parents=True, exist_ok=True)
    config = write_config(
        work_dir,
        target_port,
        job=job,
        rule_files=rule_files,
        scrape_interval=scrape_interval,
        alertmanager=alertmanager,
    )
    port = free_port()
    client = PrometheusClient(f"http://127.0.0.1:{port}")
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={work_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--enable-feature=exemplar-storage",
        "--log.level=warn",
    ]
    with running_server(command, client.base_url, work_dir / "prometheus.log", start_timeout):
        yield client


@contextlib.contextmanager
def running_server(
    command: Sequence[str], base_url: str, log_path: Path, start_timeout: float
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a Prometheus-family server until its ``/-/ready`` answers 200; stop it at the end."""
    with log_path.open("w") as log:
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(base_url, process, log_path, start_timeout)
        yield process
    finally:
        stop_process(process)


def _wait_ready(
    base_url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float
) -> None:
    name = Path(str(process.args[0])).name
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(
                f"{name} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{base_url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{name} not ready after {timeout}s:\n{log_path.read_text()[-3000:]}"
            )
        time.sleep(0.2)


@pytest.fixture
def prometheus_factory(
    tmp_path: Path,
) -> Iterator[Callable[..., PrometheusClient]]:
    """``start(target_port, **options)`` starts a Prometheus for this test (stopped after it).

    Import it into a test module to use it: ``from support.prometheus import prometheus_factory``.
    """
    with contextlib.ExitStack() as stack:

        def start(target_port: int, **options: Any) -> PrometheusClient:
            work_dir = tmp_path / f"prometheus-{target_port}"
            return stack.enter_context(running_prometheus(work_dir, target_port, **options))

        yield start
