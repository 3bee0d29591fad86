"""The Prometheus ``/metrics`` endpoint of an instrumented app, scraped over HTTP.

``OTEL_METRICS_EXPORTER=prometheus`` makes the SDK setup serve ``/metrics`` on
``OTEL_EXPORTER_PROMETHEUS_HOST:PORT``. The app runs as a child process, set up by
``reasonflow_otel.instrument()``, by ``opentelemetry-instrument`` or by both, and
every way must expose the same families and labels, with the process metrics
registered exactly once. (tests/test_prometheus_stack.py scrapes it with a real
Prometheus server.)
"""

from __future__ import annotations

import math
import selectors
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from support.processes import BIN, clean_environment
from support.prometheus import free_port

from reasonflow_otel.sdk.views import MEMORY_BUCKETS
from reasonflow_otel.settings import DEFAULT_DURATION_BUCKETS

# Three runs of Answer: Lookup times out once per run and succeeds on its retry, Cache is
# rescued by its fallback every run, Validate fails the third run with ValueError.
APP = """
import sys

if "--instrument" in sys.argv:
    import reasonflow_otel

    reasonflow_otel.instrument()

import pocketflow


class Lookup(pocketflow.Node):
    def __init__(self):
        super().__init__(max_retries=2)

    def exec(self, prep_res):
        if self.cur_retry == 0:
            raise TimeoutError("slow index")
        return "found"


class Cache(pocketflow.Node):
    def exec(self, prep_res):
        raise ConnectionError("cache down")

    def exec_fallback(self, prep_res, exc):
        return "recomputed"


class Validate(pocketflow.Node):
    def prep(self, shared):
        return shared["fail"]

    def exec(self, fail):
        if fail:
            raise ValueError("invalid answer")


class Answer(pocketflow.Flow):
    pass


flow = Answer(start=Lookup())
flow.start_node >> Cache() >> Validate()
for fail in (False, False, True):
    try:
        flow.run({"fail": fail})
    except ValueError:
        pass
print("ready", flush=True)
sys.stdin.read()  # serve /metrics until the test closes stdin
"""

SCOPE_LABELS = {"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}
OUR_LABELS = {"reasonflow_engine", "gen_ai_workflow_name", "error_type", *SCOPE_LABELS}
NODE_LABELS = {*OUR_LABELS, "reasonflow_node_name"}
SYSTEM_METRICS_SCOPE = "opentelemetry.instrumentation.system_metrics"

# Family name -> (type, label names of its samples, "le" aside).
OUR_FAMILIES = {
    "reasonflow_flow_duration_seconds": ("histogram", OUR_LABELS),
    "reasonflow_node_duration_seconds": ("histogram", NODE_LABELS),
    "reasonflow_node_cpu_time_seconds": ("histogram", NODE_LABELS),
    "reasonflow_node_memory_growth_bytes": ("histogram", NODE_LABELS),
    "reasonflow_node_retries": ("counter", NODE_LABELS),
    "reasonflow_node_fallbacks": ("counter", NODE_LABELS),
    "reasonflow_node_active": ("gauge", NODE_LABELS - {"error_type"}),
}
GC_FAMILIES = {
    "cpython_gc_collections": ("counter", {"cpython_gc_generation", *SCOPE_LABELS}),
    "cpython_gc_collected_objects": ("counter", {"cpython_gc_generation", *SCOPE_LABELS}),
    "cpython_gc_uncollectable_objects": ("counter", {"cpython_gc_generation", *SCOPE_LABELS}),
}
PROCESS_FAMILIES = {
    "process_cpu_time_seconds": ("counter", {"type", *SCOPE_LABELS}),
    "process_cpu_utilization": ("gauge", SCOPE_LABELS),
    "process_memory_usage_bytes": ("gauge", SCOPE_LABELS),
    "process_thread_count": ("gauge", SCOPE_LABELS),
    "process_open_file_descriptor_count": ("gauge", SCOPE_LABELS),
    **GC_FAMILIES,
}

INSTRUMENT = [str(BIN / "opentelemetry-instrument"), sys.executable]


@dataclass
class Scrape:
    families: dict[str, Metric]
    stderr: str

    def samples(self, sample_name: str, *labels: str) -> dict[tuple[str, ...], float]:
        """Every sample with this name: its values of ``labels`` -> its value."""
        found: dict[tuple[str, ...], float] = {}
        for family in self.families.values():
            for sample in family.samples:
                if sample.name == sample_name:
                    series = tuple(sample.labels[label] for label in labels)
                    assert series not in found, f"two {sample_name} samples for {series}"
                    found[series] = sample.value
        return found


def scrape_app(tmp_path: Path, launcher: list[str], app_args: list[str], **settings: str) -> Scrape:
    """Run the app with the Prometheus exporter, scrape /metrics once it is ready, stop it."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    port = free_port()
    environ = clean_environment(
        OTEL_METRICS_EXPORTER="prometheus",
        OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
        OTEL_EXPORTER_PROMETHEUS_PORT=str(port),
        OTEL_TRACES_EXPORTER="none",
        **settings,
    )
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [*launcher, str(app), *app_args],
            cwd=tmp_path,
            env=environ,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        wait_for_line(process, "ready", stderr_path)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        stop(process)
    families = {family.name: family for family in text_string_to_metric_families(text)}
    return Scrape(families, stderr_path.read_text())


def stop(process: subprocess.Popen[str]) -> None:
    """Close the app's stdin (it then exits); kill it if it does not."""
    try:
        process.communicate(input="", timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise


def wait_for_line(process: subprocess.Popen[str], line: str, stderr: Path) -> None:
    """Read the app's stdout until ``line``, for at most a minute; fail if it exits first."""
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=1) and process.stdout.readline().strip() == line:
                return
            assert process.poll() is None, f"the app exited early:\n{stderr.read_text()}"
    raise AssertionError(f"the app did not print {line!r} within a minute")


def families_of_scope(scrape: Scrape, scope: str) -> set[str]:
    return {
        name
        for name, family in scrape.families.items()
        if any(sample.labels.get("otel_scope_name") == scope for sample in family.samples)
    }


def label_names(family: Metric) -> set[str]:
    return {name for sample in family.samples for name in sample.labels} - {"le"}


# How the app is set up: launcher before the app's path, arguments after it.
LAUNCHES = {
    "instrument()": ([sys.executable], ["--instrument"]),
    "opentelemetry-instrument": (INSTRUMENT, []),
    "both": (INSTRUMENT, ["--instrument"]),
}


@pytest.fixture(scope="module", params=list(LAUNCHES))
def scrape(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Scrape:
    return scrape_app(tmp_path_factory.mktemp("app"), *LAUNCHES[request.param])


def test_our_families_have_exact_names_types_and_labels(scrape):
    ours = {name: scrape.families[name] for name in scrape.families if name.startswith("reason")}

    assert {name: (family.type, label_names(family)) for name, family in ours.items()} == (
        OUR_FAMILIES
    )


def test_node_duration_series_count_every_run_by_outcome(scrape):
    assert scrape.samples(
        "reasonflow_node_duration_seconds_count",
        "gen_ai_workflow_name",
        "reasonflow_node_name",
        "error_type",
    ) == {
        ("Answer", "Lookup", ""): 3,
        ("Answer", "Cache", ""): 3,
        ("Answer", "Validate", ""): 2,
        ("Answer", "Validate", "ValueError"): 1,
    }
    assert scrape.samples(
        "reasonflow_flow_duration_seconds_count", "gen_ai_workflow_name", "error_type"
    ) == {("Answer", ""): 2, ("Answer", "ValueError"): 1}


def test_histograms_have_the_views_buckets(scrape):
    for family, buckets in (
        ("reasonflow_node_duration_seconds", DEFAULT_DURATION_BUCKETS),
        ("reasonflow_node_memory_growth_bytes", MEMORY_BUCKETS),
    ):
        bounds = scrape.samples(f"{family}_bucket", "reasonflow_node_name", "error_type", "le")
        lookup = sorted(float(le) for node, _, le in bounds if node == "Lookup")
        assert lookup == [*buckets, math.inf], family
        assert bounds[("Lookup", "", "+Inf")] == 3


def test_retries_fallbacks_and_in_flight_series(scrape):
    assert scrape.samples(
        "reasonflow_node_retries_total", "reasonflow_node_name", "error_type"
    ) == {("Lookup", "TimeoutError"): 3}
    assert scrape.samples(
        "reasonflow_node_fallbacks_total", "reasonflow_node_name", "error_type"
    ) == {("Cache", "ConnectionError"): 3}
    assert scrape.samples("reasonflow_node_active", "reasonflow_node_name") == {
        ("Lookup",): 0,
        ("Cache",): 0,
        ("Validate",): 0,
    }


def test_curated_process_metrics_are_served_once(scrape):
    process = {
        name: (scrape.families[name].type, label_names(scrape.families[name]))
        for name in families_of_scope(scrape, SYSTEM_METRICS_SCOPE)
    }

    assert process == PROCESS_FAMILIES
    assert not [name for name in scrape.families if name.startswith(("system_", "process_runt"))]
    assert "already instrumented" not in scrape.stderr
    assert "has been created already" not in scrape.stderr


@pytest.mark.parametrize(
    ("settings", "process_families", "cpu_time_served"),
    [
        ({"REASONFLOW_OTEL_PROCESS_METRICS": "false"}, set(), True),
        (
            {"OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS": "process.*"},
            set(GC_FAMILIES),
            True,
        ),
        (
            {"REASONFLOW_OTEL_DROP_METRICS": "cpython.*,reasonflow.node.cpu_time"},
            set(PROCESS_FAMILIES) - set(GC_FAMILIES),
            False,
        ),
    ],
)
def test_settings_select_process_metrics(tmp_path, settings, process_families, cpu_time_served):
    scrape = scrape_app(tmp_path, INSTRUMENT, [], **settings)

    assert families_of_scope(scrape, SYSTEM_METRICS_SCOPE) == process_families
    assert ("reasonflow_node_cpu_time_seconds" in scrape.families) is cpu_time_served
    assert "reasonflow_node_duration_seconds" in scrape.families
