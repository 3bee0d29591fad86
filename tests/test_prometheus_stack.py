"""A real Prometheus scrapes a real instrumented PocketFlow app; the shipped queries get data.

tests/apps/metrics_app.py runs flows in a loop with reasonflow-otel and the OpenTelemetry
Prometheus exporter (OTEL_METRICS_EXPORTER=prometheus). Debian's ``prometheus`` scrapes it every
second with the shipped alert rules loaded. Then every Grafana dashboard query and every rule
expression over this project's metrics must return data, with the labels the app implies.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.processes import running_metrics_app
from support.prometheus import (
    PrometheusClient,
    dashboard_queries,
    free_port,
    prometheus_factory,  # noqa: F401  (a fixture, used by name)
    relax_thresholds,
    running_prometheus,
    substitute_grafana_variables,
)

TESTS = Path(__file__).resolve().parent
CONFIG_DIR = TESTS.parent / "collector-config"
RULES = CONFIG_DIR / "rules" / "reasonflow-alerts.yml"
DASHBOARD = CONFIG_DIR / "grafana" / "dashboards" / "workflows.json"
JOB = "reasonflow-metrics-app"

# (enclosing flow, node, error type) of every node run the app makes; "" = success.
NODE_SERIES = {
    ("OrderFlow", "LoadOrder", ""),
    ("OrderFlow", "CheckStock", ""),
    ("OrderFlow", "CheckStock", "StockError"),
    ("OrderFlow", "FetchPrices", ""),
    ("OrderFlow", "PricingFlow", ""),
    ("PricingFlow", "ApplyDiscount", ""),
    ("PricingFlow", "ComputeTax", ""),
    ("OrderFlow", "Ship", ""),
    ("ReportFlow", "Summarize", ""),
    ("ReportFlow", "Publish", ""),
}
FLOW_SERIES = {
    ("OrderFlow", ""),
    ("OrderFlow", "StockError"),
    ("PricingFlow", ""),
    ("ReportFlow", ""),
}
NODES = {(flow, node) for flow, node, _ in NODE_SERIES}
PROCESS_METRICS = [
    "process_cpu_time_seconds_total",
    "process_memory_usage_bytes",
    "process_thread_count",
    "process_open_file_descriptor_count",
    "cpython_gc_collections_total",
]


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def project_queries() -> list[tuple[str, str]]:
    """(panel / refId, PromQL) of the dashboard queries over this project's own metrics."""
    return [
        (f"{q.panel} / {q.ref_id}", substitute_grafana_variables(q.expr))
        for q in dashboard_queries(load_dashboard())
        if "traces_span_metrics" not in q.expr
    ]


def span_metric_queries() -> list[tuple[str, str]]:
    return [
        (f"{q.panel} / {q.ref_id}", substitute_grafana_variables(q.expr))
        for q in dashboard_queries(load_dashboard())
        if "traces_span_metrics" in q.expr
    ]


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def recording_rules() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}


def alert_rules() -> dict[str, str]:
    return {rule["alert"]: rule["expr"] for rule in rules() if "alert" in rule}


def threshold_alerts() -> dict[str, str]:
    """The alerts on a workflow ratio or duration above a threshold, with a traffic floor."""
    return {name: expr for name, expr in alert_rules().items() if "_runs:rate5m * 300 >=" in expr}


def empty_queries(prometheus: PrometheusClient, queries: list[tuple[str, str]]) -> list[str]:
    return [name for name, expr in queries if not prometheus.query(expr)]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusClient]:
    """Prometheus scraping the running metrics app, once every query has data to work on."""
    work_dir = tmp_path_factory.mktemp("prometheus-stack")
    port = free_port()
    app_log = work_dir / "metrics_app.log"
    with (
        running_metrics_app(port, app_log, service=JOB) as app,
        running_prometheus(work_dir / "prometheus", port, job=JOB, rule_files=[RULES]) as client,
    ):
        # Workflow metrics first; process metrics come in the same scrapes, and the tests
        # below say which query, if any, stays empty.
        queries = [
            (name, expr)
            for name, expr in project_queries() + list(recording_rules().items())
            if "reasonflow" in expr
        ]
        try:
            client.wait_for(
                "every workflow query and recording rule to return data",
                lambda: not empty_queries(client, queries),
                timeout=120,
            )
        except AssertionError as error:
            raise AssertionError(
                f"{error}; still empty: {empty_queries(client, queries)}\n"
                f"targets: {client.targets()}\napp log:\n{app_log.read_text()[-3000:]}"
            ) from None
        assert app.poll() is None, app_log.read_text()
        yield client


def test_prometheus_scrapes_the_app(prometheus):
    [target] = prometheus.targets()
    assert target["labels"]["job"] == JOB
    assert target["health"] == "up"


def test_node_duration_series_carry_flow_node_and_error_type_labels(prometheus):
    samples = prometheus.label_sets(
        "count by (job, reasonflow_engine, gen_ai_workflow_name, reasonflow_node_name, "
        "error_type) (reasonflow_node_duration_seconds_count)"
    )
    assert {s["job"] for s in samples} == {JOB}
    assert {s["reasonflow_engine"] for s in samples} == {"pocketflow"}
    series = {
        (s["gen_ai_workflow_name"], s["reasonflow_node_name"], s.get("error_type", ""))
        for s in samples
    }
    assert series == NODE_SERIES
    failing = {(flow, node) for flow, node, error in series if error}
    assert failing == {("OrderFlow", "CheckStock")}


def test_node_duration_histogram_has_buckets_sum_and_count(prometheus):
    selector = '{reasonflow_node_name="ComputeTax"}'
    buckets = prometheus.label_sets(f"reasonflow_node_duration_seconds_bucket{selector}")
    assert "+Inf" in {b["le"] for b in buckets}
    assert len(buckets) > 2
    [total] = prometheus.query(f"reasonflow_node_duration_seconds_count{selector}")
    [inf] = prometheus.query(f'reasonflow_node_duration_seconds_bucket{{le="+Inf", {selector[1:]}')
    assert float(total["value"][1]) == float(inf["value"][1]) > 0
    assert prometheus.query(f"reasonflow_node_duration_seconds_sum{selector} > 0")


def test_flow_duration_series_per_flow_and_outcome(prometheus):
    samples = prometheus.label_sets(
        "count by (gen_ai_workflow_name, error_type) (reasonflow_flow_duration_seconds_count)"
    )
    assert {(s["gen_ai_workflow_name"], s.get("error_type", "")) for s in samples} == FLOW_SERIES


def test_retries_and_fallbacks_are_counted_on_their_nodes(prometheus):
    retries = prometheus.label_sets("reasonflow_node_retries_total > 0")
    fallbacks = prometheus.label_sets("reasonflow_node_fallbacks_total > 0")
    assert [(r["gen_ai_workflow_name"], r["reasonflow_node_name"]) for r in retries] == [
        ("OrderFlow", "FetchPrices")
    ]
    assert [(f["gen_ai_workflow_name"], f["reasonflow_node_name"]) for f in fallbacks] == [
        ("OrderFlow", "Ship")
    ]


def test_in_flight_gauge_exists_for_every_node(prometheus):
    samples = prometheus.query("reasonflow_node_active")
    assert {
        (s["metric"]["gen_ai_workflow_name"], s["metric"]["reasonflow_node_name"]) for s in samples
    } == NODES
    assert {float(s["value"][1]) for s in samples} <= {0.0, 1.0}


def test_per_node_cpu_and_memory_histograms(prometheus):
    for metric in (
        "reasonflow_node_cpu_time_seconds_count",
        "reasonflow_node_memory_growth_bytes_count",
    ):
        samples = prometheus.label_sets(
            f"sum by (gen_ai_workflow_name, reasonflow_node_name) ({metric})"
        )
        assert {(s["gen_ai_workflow_name"], s["reasonflow_node_name"]) for s in samples} == NODES
    [compute_tax] = prometheus.query(
        'sum(reasonflow_node_cpu_time_seconds_sum{reasonflow_node_name="ComputeTax"})'
    )
    assert float(compute_tax["value"][1]) > 0


@pytest.mark.parametrize("metric", PROCESS_METRICS)
def test_process_metrics_are_scraped(prometheus, metric):
    assert {s["job"] for s in prometheus.label_sets(metric)} == {JOB}


def test_every_dashboard_query_over_project_metrics_returns_data(prometheus):
    queries = project_queries()
    assert len(queries) == 27
    assert empty_queries(prometheus, queries) == []


def test_dashboard_variables_list_the_apps_services_flows_and_nodes(prometheus):
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    values = {}
    for name in ("service", "flow", "node"):
        inner, _, label = variables[name]["definition"][len("label_values(") : -1].rpartition(", ")
        series = prometheus.label_sets(substitute_grafana_variables(inner))
        values[name] = {s[label] for s in series}
    assert values == {
        "service": {JOB},
        "flow": {"OrderFlow", "PricingFlow", "ReportFlow"},
        "node": {node for _, node in NODES},
    }


def test_span_metric_queries_are_accepted_and_empty_without_a_collector(prometheus):
    queries = span_metric_queries()
    assert len(queries) == 2
    for _, expr in queries:
        assert prometheus.query(expr) == []


def test_every_recording_rule_returns_data(prometheus):
    # The one over the Collector's own metrics (otelcol:lost_items:total) has no data here.
    recorded = {name: expr for name, expr in recording_rules().items() if "reasonflow" in name}
    assert len(recorded) == 9
    assert [name for name, expr in recorded.items() if not prometheus.query(expr)] == []
    assert [name for name in recorded if not prometheus.query(name)] == []


def test_recorded_error_ratio_of_the_failing_node_is_about_a_quarter(prometheus):
    ratios = {
        (s["metric"]["gen_ai_workflow_name"], s["metric"]["reasonflow_node_name"]): float(
            s["value"][1]
        )
        for s in prometheus.query("reasonflow:node_error_ratio:rate5m")
    }
    assert set(ratios) == NODES
    assert {node for node, ratio in ratios.items() if ratio > 0} == {("OrderFlow", "CheckStock")}
    assert 0.1 < ratios[("OrderFlow", "CheckStock")] < 0.45


def test_every_alert_expression_returns_data_with_thresholds_relaxed(prometheus):
    alerts = threshold_alerts()
    assert len(alerts) == 5
    assert [
        name for name, expr in alerts.items() if not prometheus.query(relax_thresholds(expr))
    ] == []


def test_alert_expressions_select_exactly_what_crosses_the_thresholds(prometheus):
    def selected(name: str) -> list[tuple[str, ...]]:
        return sorted(
            tuple(
                s[label]
                for label in ("job", "gen_ai_workflow_name", "reasonflow_node_name")
                if label in s
            )
            for s in prometheus.label_sets(alert_rules()[name])
        )

    # CheckStock fails ~25% of its runs (> 5%), far more than 20 runs in 5 minutes; nothing is
    # anywhere near 30 s (nodes) or 300 s (flows).
    assert selected("ReasonflowNodeErrorRatioHigh") == [(JOB, "OrderFlow", "CheckStock")]
    assert selected("ReasonflowFlowErrorRatioHigh") == [(JOB, "OrderFlow")]
    assert selected("ReasonflowNodeLatencyP95High") == []
    assert selected("ReasonflowFlowLatencyP95High") == []
    # FetchPrices retries once on every run (> 0.5 retries per run).
    assert selected("ReasonflowNodeRetriesHigh") == [(JOB, "OrderFlow", "FetchPrices")]
    # Every flow is running; no Collector is scraped.
    assert selected("ReasonflowFlowStopped") == []
    assert selected("ReasonflowCollectorDroppingData") == []


def test_loaded_rules_are_healthy_and_the_error_alerts_go_pending(prometheus):
    loaded = prometheus.rules()
    assert len(loaded) == 17
    assert [r["name"] for r in loaded if r["health"] != "ok"] == []

    def pending_alerts() -> set[tuple[str, str, str]]:
        return {
            (
                alert["labels"]["alertname"],
                alert["labels"]["gen_ai_workflow_name"],
                alert["labels"].get("reasonflow_node_name", ""),
            )
            for rule in prometheus.rules()
            if rule["type"] == "alerting"
            for alert in rule.get("alerts", [])
            if alert["state"] == "pending"
        }

    expected = {
        ("ReasonflowNodeErrorRatioHigh", "OrderFlow", "CheckStock"),
        ("ReasonflowFlowErrorRatioHigh", "OrderFlow", ""),
        ("ReasonflowNodeRetriesHigh", "OrderFlow", "FetchPrices"),
    }
    # `for: 10m` keeps them pending; the latency alerts never start.
    prometheus.wait_for(
        "the error and retry alerts to go pending", lambda: pending_alerts() == expected
    )
    assert pending_alerts() == expected


class StaticMetrics(http.server.BaseHTTPRequestHandler):
    body = b'# TYPE demo_runs_total counter\ndemo_runs_total{flow="f"} 3\n'

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_prometheus_factory_scrapes_the_given_port_every_second(request):
    start_prometheus = request.getfixturevalue("prometheus_factory")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StaticMetrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = start_prometheus(server.server_address[1], job="static")
        samples = client.wait_for("the static target", lambda: client.query("demo_runs_total"))
        assert [(s["metric"], s["value"][1]) for s in samples] == [
            (
                {
                    "__name__": "demo_runs_total",
                    "flow": "f",
                    "instance": f"127.0.0.1:{server.server_address[1]}",
                    "job": "static",
                },
                "3",
            )
        ]
        [target] = client.targets()
        assert target["scrapeInterval"] == "1s"
    finally:
        server.shutdown()
        server.server_close()
