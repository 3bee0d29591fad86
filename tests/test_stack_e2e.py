"""The native stack end to end: ``run-local.sh up``, an instrumented app, and what each part shows.

The stack runs on free loopback ports in a temporary state folder, with tail sampling keeping
only error and slow traces (``TAIL_SAMPLING_PERCENTAGE=0``, slow = at least 1 s), span metrics
flushed and scraped every second, the shipped alert rules with every ``for:`` at 0 s, and an
Alertmanager delivering to a webhook of the test. tests/apps/stack_app.py runs
tests/apps/metrics_app.py's flows (a node failing one run in four, a node retrying, a node
falling back) and a slow flow, over OTLP, and keeps every span in memory as the reference.
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.alertmanager import NotificationSink
from support.processes import REPOSITORY, clean_environment, run_program, stop_process
from support.prometheus import (
    GRAFANA_TEST_VARIABLES,
    PromQLError,
    dashboard_queries,
    substitute_grafana_variables,
    wait_for,
)
from support.stack import Stack, http_json, running_stack
from test_alertmanager import chain_config, fast_rules

STACK_APP = REPOSITORY / "tests" / "apps" / "stack_app.py"
DASHBOARDS = REPOSITORY / "collector-config" / "grafana" / "dashboards"
SERVICE = "e2e-shop"
SLOW_MS = 1000
# About 10 s of OrderFlow and ReportFlow runs, then two SlowFlow runs of 1.5 s.
APP_RUNS = ("--iterations", "80", "--pause", "0.1", "--slow", "2", "--slow-seconds", "1.5")
KEPT_ATTRIBUTES = re.compile(r"^(reasonflow\.|gen_ai\.|error\.type$)")
STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR", "STATUS_CODE_ERROR": "ERROR"}


# --- The reference: what the app made --------------------------------------------------------


def by_trace(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    traces: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for span in spans:
        traces[span["trace_id"]].append(span)
    return dict(traces)


def kept_by_tail_sampling(spans: list[dict[str, Any]]) -> bool:
    """The Collector's policies with TAIL_SAMPLING_PERCENTAGE=0: an error, or slow."""
    duration_ms = (max(s["end_ns"] for s in spans) - min(s["start_ns"] for s in spans)) / 1e6
    return any(s["status"]["code"] == "ERROR" for s in spans) or duration_ms >= SLOW_MS


def node_runs(spans: list[dict[str, Any]]) -> collections.Counter[tuple[str, str]]:
    """Node runs per (enclosing flow, node), as reasonflow.node.duration counts them."""
    flows = {s["span_id"]: s["attributes"].get("gen_ai.workflow.name") for s in spans}
    return collections.Counter(
        (flows[s["parent_span_id"]], s["attributes"]["reasonflow.node.name"])
        for s in spans
        if s["parent_span_id"] in flows and "reasonflow.node.name" in s["attributes"]
    )


def comparable(span: dict[str, Any]) -> dict[str, Any]:
    """A reference span as Jaeger should give it back."""
    return {
        "span_id": span["span_id"],
        "parent_span_id": span["parent_span_id"],
        "name": span["name"],
        "kind": span["kind"],
        "attributes": {k: v for k, v in span["attributes"].items() if KEPT_ATTRIBUTES.match(k)},
        "events": span["events"],
        "status": span["status"],
    }


# --- Jaeger's HTTP API ------------------------------------------------------------------------


def any_value(value: dict[str, Any]) -> Any:
    """An OTLP JSON AnyValue as the plain Python value the SDK had."""
    [(kind, inner)] = value.items()
    if kind == "intValue":
        return int(inner)
    if kind == "arrayValue":
        return [any_value(item) for item in inner.get("values", [])]
    return inner


def attributes(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    return {pair["key"]: any_value(pair["value"]) for pair in pairs}


def jaeger_spans(stack: Stack, trace_id: str) -> list[dict[str, Any]]:
    """The trace from Jaeger's API v3 (OTLP JSON), in the reference's form."""
    result = http_json(f"{stack.jaeger}/api/v3/traces/{trace_id}")["result"]
    spans = []
    for resource_spans in result["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                status = span.get("status", {})
                spans.append(
                    {
                        "span_id": span["spanId"],
                        "parent_span_id": span.get("parentSpanId") or None,
                        "name": span["name"],
                        "kind": "INTERNAL" if span["kind"] in (1, "SPAN_KIND_INTERNAL") else "?",
                        "attributes": {
                            k: v
                            for k, v in attributes(span.get("attributes", [])).items()
                            if KEPT_ATTRIBUTES.match(k)
                        },
                        "events": [
                            {"name": e["name"], "attributes": attributes(e.get("attributes", []))}
                            for e in span.get("events", [])
                        ],
                        "status": {
                            "code": STATUS_CODES[status.get("code", 0)],
                            "message": status.get("message"),
                        },
                    }
                )
    return spans


def jaeger_traces(stack: Stack) -> list[dict[str, Any]]:
    """Every trace of the service Jaeger has (its API v1 search)."""
    found = http_json(f"{stack.jaeger}/api/traces", service=SERVICE, limit=10000, lookback="1h")
    return list(found["data"])


def jaeger_trace_ids(stack: Stack) -> set[str]:
    return {trace["traceID"] for trace in jaeger_traces(stack)}


def jaeger_span_ids(stack: Stack) -> set[str]:
    return {span["spanID"] for trace in jaeger_traces(stack) for span in trace["spans"]}


# --- The stack and one run of the app ----------------------------------------------------------


@dataclass
class Run:
    stack: Stack
    spans: list[dict[str, Any]]
    sink: NotificationSink

    @property
    def traces(self) -> dict[str, list[dict[str, Any]]]:
        return by_trace(self.spans)


def run_stack_app(stack: Stack, work_dir: Path, *arguments: str) -> list[dict[str, Any]]:
    """tests/apps/stack_app.py sending to ``stack``; its spans (the reference)."""
    reference = work_dir / "reference.json"
    run_program(
        [sys.executable, str(STACK_APP), "--reference", str(reference), *arguments],
        work_dir,
        OTEL_SERVICE_NAME=SERVICE,
        OTEL_EXPORTER_OTLP_ENDPOINT=stack.otlp_grpc,
        OTEL_METRIC_EXPORT_INTERVAL="1000",
    )
    return json.loads(reference.read_text())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    work_dir = tmp_path_factory.mktemp("stack-e2e")
    with NotificationSink() as sink:
        for folder in ("rules", "alertmanager"):
            (work_dir / folder).mkdir()
        rules = fast_rules(work_dir / "rules" / "reasonflow-alerts.yml")
        settings = {
            "TAIL_SAMPLING_PERCENTAGE": "0",
            "TAIL_SAMPLING_LATENCY_THRESHOLD_MS": str(SLOW_MS),
            "TAIL_SAMPLING_DECISION_WAIT": "2s",
            "SPAN_METRICS_FLUSH_INTERVAL": "1s",
            "PROMETHEUS_SCRAPE_INTERVAL": "1s",
            "PROMETHEUS_RULES": str(rules.parent / "*.yml"),
            "ALERTMANAGER_CONFIG": str(chain_config(work_dir / "alertmanager", sink)),
        }
        with running_stack(work_dir / "state", **settings) as stack:
            spans = run_stack_app(stack, work_dir, *APP_RUNS)
            yield Run(stack, spans, sink)


# --- Prometheus: every run counted, every panel answered ----------------------------------------


def panel_queries() -> list[tuple[str, str]]:
    found = []
    for dashboard in sorted(DASHBOARDS.glob("*.json")):
        for query in dashboard_queries(json.loads(dashboard.read_text())):
            found.append((f"{dashboard.stem}: {query.panel}", query.expr))
    return found


def test_every_grafana_panel_query_runs_and_returns_data(run):
    variables = {**GRAFANA_TEST_VARIABLES, "service": SERVICE}
    queries = [
        (panel, substitute_grafana_variables(expr, variables)) for panel, expr in panel_queries()
    ]
    assert len(queries) > 30
    prometheus = run.stack.prometheus

    def empty() -> list[str]:
        """The queries without data yet; a query Prometheus rejects fails the test."""
        found = []
        for panel, expr in queries:
            try:
                if not prometheus.query(expr):
                    found.append(f"{panel}: {expr}")
            except PromQLError as error:
                pytest.fail(f"{panel}: {error}")
        return found

    try:
        wait_for("data for every panel query", lambda: not empty(), timeout=60)
    except AssertionError:
        assert empty() == []


def test_node_duration_counts_equal_the_apps_node_runs_including_dropped_traces(run):
    expected = node_runs(run.spans)
    query = (
        "sum by (gen_ai_workflow_name, reasonflow_node_name) "
        f'(reasonflow_node_duration_seconds_count{{job="{SERVICE}"}})'
    )

    def counted() -> dict[tuple[str, str], int]:
        return {
            (s["metric"]["gen_ai_workflow_name"], s["metric"]["reasonflow_node_name"]): int(
                float(s["value"][1])
            )
            for s in run.stack.prometheus.query(query)
        }

    wait_for("every node run in Prometheus", lambda: counted() == expected, timeout=60)
    dropped = set(run.traces) - jaeger_trace_ids(run.stack)
    assert dropped, "tail sampling was expected to drop the ordinary traces"


def test_the_lost_items_rule_reads_the_collectors_own_counters(run):
    """ReasonflowCollectorDroppingData's input: the Collector's ``*_total`` counters, at 0."""
    prometheus = run.stack.prometheus
    wait_for(
        "otelcol:lost_items:total over the Collector",
        lambda: prometheus.query('otelcol:lost_items:total{job="otel-collector"}'),
        timeout=60,
    )
    assert prometheus.query("sum(otelcol:lost_items:total) > 0") == []


def test_span_metrics_count_every_span_before_sampling(run):
    expected = collections.Counter(span["name"] for span in run.spans)
    query = f'sum by (span_name) (traces_span_metrics_calls_total{{service_name="{SERVICE}"}})'

    def counted() -> dict[str, int]:
        return {
            s["metric"]["span_name"]: int(float(s["value"][1]))
            for s in run.stack.prometheus.query(query)
        }

    wait_for("every span in the span metrics", lambda: counted() == expected, timeout=60)


# --- Jaeger: the kept traces, exactly as the app made them --------------------------------------


def test_tail_sampling_keeps_the_error_and_slow_traces_only(run):
    kept = {trace_id for trace_id, spans in run.traces.items() if kept_by_tail_sampling(spans)}
    slow = {t for t in kept if all(s["status"]["code"] != "ERROR" for s in run.traces[t])}
    assert len(slow) == 2 and len(kept) > len(slow)
    assert len(kept) < len(run.traces)
    wait_for("the kept traces in Jaeger", lambda: jaeger_trace_ids(run.stack) == kept, timeout=60)


def test_traces_in_jaeger_have_the_apps_spans(run):
    kept = [t for t, spans in run.traces.items() if kept_by_tail_sampling(spans)]
    wait_for("the kept traces in Jaeger", lambda: set(kept) <= jaeger_trace_ids(run.stack))
    for trace_id in kept:
        expected = sorted((comparable(s) for s in run.traces[trace_id]), key=str)
        stored = sorted(jaeger_spans(run.stack, trace_id), key=str)
        assert stored == expected, trace_id


def test_jaeger_does_not_trace_itself(run):
    assert http_json(f"{run.stack.jaeger}/api/services")["data"] == [SERVICE]


def spm(stack: Stack, kind: str) -> float:
    """The newest value of Jaeger's Monitor (SPM) metric ``kind`` for the service."""
    family = http_json(
        f"{stack.jaeger}/api/metrics/{kind}",
        service=SERVICE,
        spanKind="internal",
        quantile="0.95",
        lookback="600000",
        step="1000",
        ratePer="60000",
    )
    [series] = family["metrics"]
    return float(series["metricPoints"][-1]["gaugeValue"]["doubleValue"])


def spm_numbers(stack: Stack) -> dict[str, float] | None:
    """Call rate, error rate and latency, once none of them is NaN."""
    values = {kind: spm(stack, kind) for kind in ("calls", "errors", "latencies")}
    return None if any(math.isnan(value) for value in values.values()) else values


def test_jaeger_monitor_gives_call_rate_error_rate_and_latency(run):
    """The app ran for several span-metrics flushes and scrapes: Prometheus saw increases."""
    values = wait_for("numbers from Jaeger's Monitor API", lambda: spm_numbers(run.stack))
    assert values["calls"] > 0
    assert 0 < values["errors"] < 1
    assert 0 < values["latencies"] < 60


# --- Alertmanager ---------------------------------------------------------------------------


def test_an_alert_fires_into_alertmanager_and_reaches_the_webhook(run):
    [notification, *_] = wait_for(
        "a notification at the webhook", lambda: run.sink.received("/webhook"), timeout=60
    )
    alerts = notification.body["alerts"]
    assert {a["labels"]["job"] for a in alerts} == {SERVICE}
    assert {a["labels"]["gen_ai_workflow_name"] for a in alerts} == {"OrderFlow"}
    assert notification.body["status"] == "firing"
    assert http_json(f"{run.stack.alertmanager}/api/v2/alerts")


# --- The local file, replayed -------------------------------------------------------------------


def test_export_replays_a_local_trace_file_into_jaeger(run, tmp_path):
    """Runs recorded with no backend, sent later: the slow one is then in Jaeger as recorded."""
    reference = tmp_path / "reference.json"
    command = [sys.executable, str(STACK_APP), "--reference", str(reference)]
    slow_run = ["--iterations", "0", "--slow", "1", "--slow-seconds", "1.2"]
    run_program([*command, *slow_run], tmp_path, OTEL_SERVICE_NAME=SERVICE)
    recorded = json.loads(reference.read_text())
    [trace_id] = by_trace(recorded)
    assert trace_id in (tmp_path / ".reasonflow-otel" / "traces.jsonl").read_text()
    assert trace_id not in jaeger_trace_ids(run.stack)

    cli = Path(sys.executable).parent / "reasonflow-otel"
    run_program([str(cli), "export", "--endpoint", run.stack.otlp_grpc], tmp_path)

    wait_for("the replayed trace in Jaeger", lambda: trace_id in jaeger_trace_ids(run.stack))
    assert sorted(jaeger_spans(run.stack, trace_id), key=str) == sorted(
        (comparable(s) for s in recorded), key=str
    )


def test_jaeger_keeps_its_traces_across_a_restart(run):
    before = jaeger_trace_ids(run.stack)
    for command in (("stop", "jaeger"), ("start", "jaeger")):
        result = run.stack.run(*command)
        assert result.returncode == 0, result.stdout + result.stderr
    assert before and jaeger_trace_ids(run.stack) == before


# --- Stopping and starting ---------------------------------------------------------------------


LOSS_WARNING = re.compile(r"(\d+) of (\d+) spans could not be delivered")
DECISION_WAIT_S = 1


@dataclass
class Outage:
    """When the Collector was stopped and started again, in the app's clock (ns since epoch)."""

    stopping: int
    stopped: int
    starting: int


def run_through_a_collector_outage(stack: Stack, work_dir: Path) -> tuple[Outage, str]:
    """The app runs about 20 s; the Collector is down for 6 s in the middle. Its log."""
    log = work_dir / "app.log"
    environ = clean_environment(
        OTEL_SERVICE_NAME=SERVICE,
        OTEL_EXPORTER_OTLP_ENDPOINT=stack.otlp_grpc,
        OTEL_METRICS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="500",
    )
    command = [sys.executable, str(STACK_APP), "--reference", str(work_dir / "reference.json")]
    with log.open("w") as output:
        app = subprocess.Popen(
            [*command, "--iterations", "150", "--pause", "0.1", "--slow", "0"],
            cwd=work_dir,
            env=environ,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(4)
        stopping = time.time_ns()
        assert stack.run("stop", "collector").returncode == 0
        stopped = time.time_ns()
        time.sleep(6)
        starting = time.time_ns()
        started = stack.run("start", "collector")
        assert started.returncode == 0, started.stdout + started.stderr
        assert app.wait(timeout=120) == 0, log.read_text()
    finally:
        if app.poll() is None:
            stop_process(app)
    return Outage(stopping, stopped, starting), log.read_text()


def test_collector_restart_mid_run_delivers_what_was_made_while_it_was_down(tmp_path):
    """The app runs on and exits normally; the SDK retries through the outage.

    Spans made while the Collector is down reach Jaeger after it is back, or, when a batch's
    retries run out (OTEL_EXPORTER_OTLP_TIMEOUT), are counted in the SDK's one warning at exit.
    What the Collector held when it was stopped (the traces waiting for their tail-sampling
    decision) is gone with it, after it had acknowledged them to the SDK: those are the only
    spans missing that nothing counted.
    """
    settings = {"TAIL_SAMPLING_DECISION_WAIT": f"{DECISION_WAIT_S}s"}
    with running_stack(tmp_path / "state", **settings) as stack:
        outage, log = run_through_a_collector_outage(stack, tmp_path)
        spans = json.loads((tmp_path / "reference.json").read_text())
        warning = LOSS_WARNING.search(log)
        reported_lost = int(warning.group(1)) if warning else 0
        wait_for("the last traces in Jaeger", lambda: len(jaeger_span_ids(stack)) > 0)
        time.sleep(DECISION_WAIT_S + 3)
        stored = jaeger_span_ids(stack)

    while_down = [s for s in spans if outage.stopped <= s["start_ns"] <= outage.starting]
    missing = [s for s in spans if s["span_id"] not in stored]
    trace_start = {t: min(s["start_ns"] for s in ss) for t, ss in by_trace(spans).items()}
    held_since = outage.stopping - (DECISION_WAIT_S + 2) * 1_000_000_000
    held = [s for s in missing if held_since <= trace_start[s["trace_id"]] <= outage.stopped]
    print(
        f"Collector outage: {len(spans)} spans made, {len(while_down)} while it was down "
        f"({sum(s['span_id'] in stored for s in while_down)} of them in Jaeger later), "
        f"{len(stored)} in Jaeger, {len(missing)} missing: {reported_lost} counted in the SDK's "
        f"warning, {len(held)} in traces the Collector held for its decision when stopped"
    )
    assert while_down and any(s["span_id"] in stored for s in while_down)
    assert len(missing) - len(held) <= reported_lost


def test_down_leaves_no_process_and_no_listener(tmp_path):
    with running_stack(tmp_path / "state") as stack:
        pids = [int(p.read_text()) for p in stack.state_dir.glob("*.pid")]
        assert len(pids) == 4 and stack.listening_ports()
    assert stack.listening_ports() == []
    assert list(stack.state_dir.glob("*.pid")) == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), pid


def test_up_names_the_process_holding_a_taken_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(AssertionError) as failure,
            running_stack(tmp_path / "state", OTLP_GRPC_PORT=str(port)),
        ):
            pass
    message = str(failure.value)
    assert f"port {port} (OTLP_GRPC_PORT) is taken by " in message
    assert f"(pid {os.getpid()})" in message
