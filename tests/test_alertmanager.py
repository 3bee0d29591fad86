"""The shipped Alertmanager config (collector-config/alertmanager/), checked and run end to end.

Debian's ``amtool`` checks the config as shipped (every receiver off) and with every receiver
turned on as docs/alerts.md says; ``amtool config routes test`` pins the receivers each shipped
alert reaches; ``amtool template render`` renders the notification text. The end-to-end test
runs the real chain on loopback: tests/apps/metrics_app.py (OrderFlow's CheckStock node fails a
quarter of its runs) -> a real Prometheus with the shipped rules (test copy: ``for: 0s``) -> a
real Alertmanager (test copy: webhook and Slack receivers on, pointed at an HTTP server of the
test, ``group_wait: 5s``) -> the delivered notifications.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.alertmanager import (
    AlertmanagerClient,
    Notification,
    NotificationSink,
    run_amtool,
    running_alertmanager,
)
from support.config_blocks import uncommented_blocks
from support.processes import running_metrics_app
from support.prometheus import check_promql, free_port, running_prometheus, wait_for

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "collector-config"
ALERTMANAGER_DIR = CONFIG_DIR / "alertmanager"
CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"
TEMPLATES = ALERTMANAGER_DIR / "templates"
RULES = CONFIG_DIR / "rules" / "reasonflow-alerts.yml"
DATASOURCES = CONFIG_DIR / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
ALERTS_DASHBOARD = CONFIG_DIR / "grafana" / "dashboards" / "alerts.json"
DOCS = REPO / "docs" / "alerts.md"
SECRETS = "/etc/alertmanager/secrets"
JOB = "reasonflow-alerting-app"

# Who hears about what: critical alerts by email, in Slack and at the webhook; warnings in Slack
# and at the webhook.
RECEIVERS = {
    "ReasonflowFlowErrorRatioHigh": "email,slack,webhook",
    "ReasonflowFlowStopped": "email,slack,webhook",
    "ReasonflowNodeErrorRatioHigh": "slack,webhook",
    "ReasonflowNodeLatencyP95High": "slack,webhook",
    "ReasonflowFlowLatencyP95High": "slack,webhook",
    "ReasonflowNodeRetriesHigh": "slack,webhook",
    "ReasonflowCollectorDroppingData": "slack,webhook",
}
INTEGRATIONS = {"email": "email_configs", "slack": "slack_configs", "webhook": "webhook_configs"}


def load_config() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def shipped_alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def documented_integrations() -> dict[str, list[dict[str, Any]]]:
    """Each receiver's commented-out block, as the docs say to uncomment it."""
    found = {}
    for receiver, key in INTEGRATIONS.items():
        [block] = uncommented_blocks(CONFIG, f"{key}:")
        found[receiver] = block[key]
    return found


def with_receivers(integrations: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The shipped config with ``integrations`` turned on and templates found from anywhere."""
    config = load_config()
    config["templates"] = [str(TEMPLATES / "*.tmpl")]
    for receiver in config["receivers"]:
        if receiver["name"] in integrations:
            receiver[INTEGRATIONS[receiver["name"]]] = integrations[receiver["name"]]
    return config


def write_yaml(path: Path, content: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


# --- The config as shipped ------------------------------------------------------------------


def test_amtool_accepts_the_shipped_config():
    result = run_amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    for found in (" - 1 inhibit rules", " - 3 receivers", " - 1 templates"):
        assert found in result.stdout


def test_every_receiver_ships_turned_off():
    assert load_config()["receivers"] == [{"name": name} for name in INTEGRATIONS]


def test_every_receiver_turned_on_as_documented_is_accepted(tmp_path):
    config = write_yaml(tmp_path / "alertmanager.yml", with_receivers(documented_integrations()))
    result = run_amtool("check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert " - 3 receivers" in result.stdout


def test_secrets_come_from_files_and_none_is_in_the_repository():
    integrations = documented_integrations()
    [email] = integrations["email"]
    [slack] = integrations["slack"]
    [webhook] = integrations["webhook"]
    assert email["auth_password_file"] == f"{SECRETS}/smtp_password"
    assert slack["api_url_file"] == f"{SECRETS}/slack_api_url"
    assert webhook["http_config"]["authorization"]["credentials_file"] == f"{SECRETS}/webhook_token"
    text = CONFIG.read_text()
    for inline_secret in ("auth_password:", "api_url:", "credentials:", "hooks.slack.com"):
        assert inline_secret not in text
    # Compose mounts alertmanager/ at /etc/alertmanager; secrets/ holds only its .gitignore.
    assert sorted(p.name for p in (ALERTMANAGER_DIR / "secrets").iterdir()) == [".gitignore"]
    assert (ALERTMANAGER_DIR / "secrets" / ".gitignore").read_text() == "*\n!.gitignore\n"


# --- Routes and inhibition ---------------------------------------------------------------------


def routes_test(*labels: str, verify: str) -> str:
    result = run_amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={verify}",
        *labels,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_every_shipped_alert_has_its_receivers_pinned():
    assert set(RECEIVERS) == set(shipped_alerts())


@pytest.mark.parametrize("alertname", sorted(RECEIVERS))
def test_each_shipped_alert_reaches_the_receivers_of_its_severity(alertname):
    severity = shipped_alerts()[alertname]["labels"]["severity"]
    labels = [f"alertname={alertname}", f"severity={severity}", "job=shop"]
    if alertname != "ReasonflowCollectorDroppingData":
        labels.append("gen_ai_workflow_name=OrderFlow")
    expected = RECEIVERS[alertname]
    assert routes_test(*labels, verify=expected) == expected


@pytest.mark.parametrize("labels", [["alertname=Custom", "severity=info"], ["alertname=Custom"]])
def test_other_alerts_reach_only_the_webhook(labels):
    assert routes_test(*labels, verify="webhook") == "webhook"


def test_a_wrong_expectation_fails_the_routes_test():
    result = run_amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        "--verify.receivers=email,slack,webhook",
        "alertname=ReasonflowNodeErrorRatioHigh",
        "severity=warning",
    )
    assert result.returncode != 0
    assert result.stdout.strip().splitlines()[0] == "slack,webhook"


def test_notifications_are_grouped_per_service_and_flow():
    route = load_config()["route"]
    assert route["group_by"] == ["job", "gen_ai_workflow_name"]
    timing = {key: route[key] for key in ("group_wait", "group_interval", "repeat_interval")}
    assert timing == {"group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}


def matcher(text: str) -> tuple[str, str, str]:
    """``name="value"`` / ``name=~"regex"`` as (name, operator, value)."""
    match = re.fullmatch(r'(\w+)(=~|=)"(.*)"', text)
    assert match, text
    return match.group(1), match.group(2), match.group(3)


def test_a_failing_flow_inhibits_exactly_the_alerts_of_its_own_nodes():
    [rule] = load_config()["inhibit_rules"]
    [(source_label, source_op, source)] = [matcher(m) for m in rule["source_matchers"]]
    [(target_label, target_op, target)] = [matcher(m) for m in rule["target_matchers"]]
    assert (source_label, source_op, source) == ("alertname", "=", "ReasonflowFlowErrorRatioHigh")
    assert (target_label, target_op) == ("alertname", "=~")
    inhibited = {name for name in shipped_alerts() if re.fullmatch(target, name)}
    assert inhibited == {
        "ReasonflowNodeErrorRatioHigh",
        "ReasonflowNodeLatencyP95High",
        "ReasonflowNodeRetriesHigh",
    }
    # Only the same service's same flow: the labels every one of these alerts carries.
    assert rule["equal"] == ["job", "gen_ai_workflow_name"]


# --- Templates ---------------------------------------------------------------------------------


def dashboard_url(job: str, flow: str) -> str:
    return (
        "http://localhost:3000/d/reasonflow-workflows/workflows?orgId=1"
        f"&var-service={job}&var-flow={flow}"
    )


def traces_url(job: str, operation: str, tags: dict[str, str]) -> str:
    query = urllib.parse.urlencode(
        {
            "service": job,
            "operation": operation,
            "tags": json.dumps(tags, separators=(",", ":")),
            "lookback": "1h",
            "limit": "20",
        }
    )
    return f"http://localhost:16686/search?{query}"


FLOW_ALERT = {
    "status": "firing",
    "labels": {
        "alertname": "ReasonflowFlowErrorRatioHigh",
        "severity": "critical",
        "job": "shop",
        "gen_ai_workflow_name": "OrderFlow",
    },
    "annotations": {
        "summary": "Flow OrderFlow fails too often",
        "description": "25% of the runs of flow OrderFlow ended in an error.",
        "failing_nodes": "Charge (25%)",
    },
    "startsAt": "2026-12-01T03:00:00Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://localhost:9090/graph?g0.expr=x",
    "fingerprint": "1",
}
SLOW_NODE_ALERT = {
    **FLOW_ALERT,
    "status": "resolved",
    "labels": {
        "alertname": "ReasonflowNodeLatencyP95High",
        "severity": "warning",
        "job": "shop",
        "gen_ai_workflow_name": "OrderFlow",
        "reasonflow_node_name": "Plan",
    },
    "annotations": {"summary": "Node Plan of flow OrderFlow is slow", "description": "p95 58.5s"},
    "fingerprint": "2",
}


def render(tmp_path: Path, template: str, alerts: list[dict[str, Any]]) -> str:
    """``template`` rendered by amtool on the data Alertmanager would give one OrderFlow group."""
    common = {
        k: v for k, v in alerts[0]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)
    }
    data = {
        "receiver": "slack",
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "alerts": alerts,
        "groupLabels": {"job": "shop", "gen_ai_workflow_name": "OrderFlow"},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://localhost:9093",
    }
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(data))
    result = run_amtool(
        "template",
        "render",
        f"--template.glob={TEMPLATES / '*.tmpl'}",
        f"--template.data={data_file}",
        f"--template.text={template}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_title_names_status_count_flow_and_service(tmp_path):
    title = '{{ template "reasonflow.title" . }}'
    assert (
        render(tmp_path, title, [FLOW_ALERT, SLOW_NODE_ALERT]) == "[FIRING:1] flow OrderFlow (shop)"
    )
    assert render(tmp_path, title, [SLOW_NODE_ALERT]) == "[RESOLVED] flow OrderFlow (shop)"


def test_text_links_to_the_flow_dashboard_and_to_traces_in_jaeger(tmp_path):
    text = render(tmp_path, '{{ template "reasonflow.text" . }}', [FLOW_ALERT, SLOW_NODE_ALERT])
    failed_flows = traces_url(
        "shop", "invoke_workflow OrderFlow", {"error": "true", "gen_ai.workflow.name": "OrderFlow"}
    )
    node_runs = traces_url("shop", "Plan", {"gen_ai.workflow.name": "OrderFlow"})
    assert text == (
        "Firing:\n"
        "[critical] Flow OrderFlow fails too often\n"
        "25% of the runs of flow OrderFlow ended in an error.\n"
        "Failing nodes: Charge (25%)\n"
        f"Traces: {failed_flows}\n"
        "Source: http://localhost:9090/graph?g0.expr=x\n"
        "\n"
        "Resolved:\n"
        "[warning] Node Plan of flow OrderFlow is slow\n"
        "p95 58.5s\n"
        f"Traces: {node_runs}\n"
        "Source: http://localhost:9090/graph?g0.expr=x\n"
        "\n"
        f"Dashboard: {dashboard_url('shop', 'OrderFlow')}\n"
        "Silence or see all alerts: http://localhost:9093"
    )


# --- Silences, as docs/alerts.md shows them ---------------------------------------------------


def amtool_at(alertmanager: AlertmanagerClient, *args: str) -> str:
    result = run_amtool(*args, f"--alertmanager.url={alertmanager.base_url}")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_amtool_silences_a_flow_and_expires_the_silence(tmp_path):
    flow = ["job=shop", "gen_ai_workflow_name=OrderFlow"]
    config = write_yaml(tmp_path / "alertmanager.yml", with_receivers({}))
    with running_alertmanager(tmp_path / "alertmanager", config) as alertmanager:
        amtool_at(alertmanager, "alert", "add", "alertname=ReasonflowFlowErrorRatioHigh", *flow)
        silence = amtool_at(
            alertmanager, "silence", "add", "--duration=2h", "--comment=maintenance", *flow
        )
        assert amtool_at(alertmanager, "silence", "query", "--quiet") == silence

        def silenced_by() -> list[list[str]]:
            return [a["status"]["silencedBy"] for a in alertmanager.alerts()]

        assert wait_for("the alert to be silenced", lambda: silenced_by() == [[silence]])
        amtool_at(alertmanager, "silence", "expire", silence)
        assert wait_for("the silence to end", lambda: silenced_by() == [[]])


# --- Compose and Grafana -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compose", "prometheus", "mount"),
    [
        ("compose.yaml", "prometheus.yml", "./alertmanager"),
        ("scaled/compose.yaml", "scaled/prometheus.yml", "../alertmanager"),
    ],
    ids=["single", "scaled"],
)
def test_compose_runs_alertmanager_and_prometheus_sends_it_the_alerts(compose, prometheus, mount):
    services = yaml.safe_load((CONFIG_DIR / compose).read_text())["services"]
    alertmanager = services["alertmanager"]
    assert f"{mount}:/etc/alertmanager:ro" in alertmanager["volumes"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]
    assert alertmanager["ports"] == ["127.0.0.1:9093:9093"]
    assert "alertmanager" in services["prometheus"]["depends_on"]
    assert "alertmanager" in services["grafana"]["depends_on"]
    config = yaml.safe_load((CONFIG_DIR / prometheus).read_text())
    assert config["alerting"] == {
        "alertmanagers": [{"static_configs": [{"targets": ["alertmanager:9093"]}]}]
    }
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["alertmanager"]["static_configs"] == [{"targets": ["alertmanager:9093"]}]


def test_grafana_has_an_alertmanager_datasource_and_an_alerts_dashboard(tmp_path):
    datasources = {d["uid"]: d for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    assert datasources["alertmanager"]["type"] == "alertmanager"
    assert datasources["alertmanager"]["url"] == "http://alertmanager:9093"
    assert datasources["alertmanager"]["jsonData"]["implementation"] == "prometheus"
    dashboard = json.loads(ALERTS_DASHBOARD.read_text())
    panels = {panel["type"]: panel for panel in dashboard["panels"]}
    assert set(panels) == {"alertlist", "table", "timeseries"}
    assert panels["alertlist"]["options"]["stateFilter"]["firing"] is True
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert all("ALERTS" in expr for expr in expressions)
    result = check_promql(expressions, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docs_explain_receivers_routes_silences_and_every_alert():
    docs = DOCS.read_text()
    for needle in (
        "amtool check-config",
        "amtool config routes test",
        "amtool silence add",
        "smtp_password",
        "slack_api_url",
        "webhook_token",
        *(f"`{name}`" for name in shipped_alerts()),
    ):
        assert needle in docs, needle


# --- End to end: app -> Prometheus -> Alertmanager -> webhook and Slack -----------------------


@dataclass
class Delivered:
    """What the chain delivered for OrderFlow, and the Alertmanager that did it."""

    webhook: Notification
    slack: Notification
    alertmanager: AlertmanagerClient


def fast_rules(path: Path) -> Path:
    """The shipped rules with every ``for:`` at 0s, so alerts fire on the first evaluation."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"
    return write_yaml(path, rules)


def chain_config(work_dir: Path, sink: NotificationSink) -> Path:
    """The shipped config with webhook and Slack on, sending to ``sink``, and a short wait."""
    (work_dir / "slack_api_url").write_text(sink.url("/slack"))
    (work_dir / "webhook_token").write_text("test-token")
    integrations = documented_integrations()
    [slack] = integrations["slack"]
    [webhook] = integrations["webhook"]
    slack["api_url_file"] = str(work_dir / "slack_api_url")
    webhook["url"] = sink.url("/webhook")
    webhook["http_config"]["authorization"]["credentials_file"] = str(work_dir / "webhook_token")
    config = with_receivers({"slack": [slack], "webhook": [webhook]})
    # group_wait leaves a few scrapes and evaluations for the flow alert to join its node alerts
    # (series appear one scrape apart) before the first notification.
    config["route"].update(group_wait="5s", group_interval="5s", repeat_interval="1h")
    return write_yaml(work_dir / "alertmanager.yml", config)


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Delivered]:
    work_dir = tmp_path_factory.mktemp("alerting")
    app_port = free_port()
    with (
        NotificationSink() as sink,
        running_alertmanager(work_dir / "alertmanager", chain_config(work_dir, sink)) as alerts,
        running_metrics_app(app_port, work_dir / "app.log", service=JOB),
        running_prometheus(
            work_dir / "prometheus",
            app_port,
            job=JOB,
            rule_files=[fast_rules(work_dir / "rules.yml")],
            alertmanager=alerts.address,
        ),
    ):
        wait_for(
            "a notification at the webhook and in Slack",
            lambda: sink.received("/webhook") and sink.received("/slack"),
            timeout=60,
        )
        yield Delivered(sink.received("/webhook")[0], sink.received("/slack")[0], alerts)


def test_the_webhook_receives_the_failing_flow_naming_the_failing_node(delivered):
    body = delivered.webhook.body
    assert delivered.webhook.authorization == "Bearer test-token"
    assert body["receiver"] == "webhook"
    assert body["status"] == "firing"
    assert body["groupLabels"] == {"job": JOB, "gen_ai_workflow_name": "OrderFlow"}
    [alert] = body["alerts"]
    assert alert["labels"] == {
        "alertname": "ReasonflowFlowErrorRatioHigh",
        "severity": "critical",
        "job": JOB,
        "gen_ai_workflow_name": "OrderFlow",
    }
    # CheckStock is the one node of OrderFlow that fails (a quarter of its runs).
    assert re.fullmatch(r"CheckStock \(\d+(\.\d+)?%\)", alert["annotations"]["failing_nodes"])
    assert alert["annotations"]["summary"] == "Flow OrderFlow fails too often"


def test_the_failing_flow_silences_its_nodes_alerts(delivered):
    flow_alert = delivered.webhook.body["alerts"][0]["fingerprint"]

    def inhibited() -> set[tuple[str, str]]:
        alerts = delivered.alertmanager.alerts(active="false", silenced="false", inhibited="true")
        return {
            (a["labels"]["alertname"], a["labels"]["reasonflow_node_name"])
            for a in alerts
            if a["status"]["inhibitedBy"] == [flow_alert]
        }

    expected = {
        ("ReasonflowNodeErrorRatioHigh", "CheckStock"),
        ("ReasonflowNodeRetriesHigh", "FetchPrices"),
    }
    assert wait_for("the node alerts to be inhibited", lambda: inhibited() == expected)


def test_slack_gets_the_rendered_message_with_dashboard_and_trace_links(delivered):
    body = delivered.slack.body
    assert body["channel"] == "#workflow-alerts"
    [attachment] = body["attachments"]
    assert attachment["title"] == f"[FIRING:1] flow OrderFlow ({JOB})"
    assert attachment["title_link"] == dashboard_url(JOB, "OrderFlow")
    assert attachment["color"] == "danger"
    failed_runs = traces_url(
        JOB, "invoke_workflow OrderFlow", {"error": "true", "gen_ai.workflow.name": "OrderFlow"}
    )
    lines = attachment["text"].splitlines()
    assert lines[:2] == ["Firing:", "[critical] Flow OrderFlow fails too often"]
    assert re.fullmatch(
        rf"\d+(\.\d+)?% of the runs of flow OrderFlow \(service {JOB}\) .*", lines[2]
    )
    assert re.fullmatch(r"Failing nodes: CheckStock \(\d+(\.\d+)?%\)", lines[3])
    assert lines[4] == f"Traces: {failed_runs}"
    assert lines[-2] == f"Dashboard: {dashboard_url(JOB, 'OrderFlow')}"
    assert lines[-1] == f"Silence or see all alerts: {delivered.alertmanager.base_url}"
