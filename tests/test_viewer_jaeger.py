"""``reasonflow-otel ui --jaeger URL`` against a real Jaeger v2.

The examples run under ``opentelemetry-instrument`` and send their spans over OTLP to a Jaeger
this test starts (on free loopback ports), and write the local trace file at the same time.
The viewer over Jaeger must answer ``/api/traces``, ``/api/traces/{id}`` and ``/api/stats``
as the viewer over that file does: the same runs, spans, graphs and figures.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from support.browser import headless_chromium, screenshot
from support.jaeger import running_jaeger
from support.otlp_files import otlp_json
from support.processes import BIN, run_program
from support.prometheus import free_port
from support.viewer import EXAMPLES, get, get_indexed, viewer_process

EXAMPLE_TRACES = {"support_triage.py": 2, "burr_research_assistant.py": 5}
WAIT_SECONDS = 30


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory):
    with running_jaeger(tmp_path_factory.mktemp("jaeger")) as jaeger:
        yield jaeger


@pytest.fixture(scope="module")
def trace_file(jaeger, tmp_path_factory) -> Path:
    """The examples' spans, sent to Jaeger and written to the local file too (the reference)."""
    directory = tmp_path_factory.mktemp("apps")
    for example in EXAMPLE_TRACES:
        run_program(
            [str(BIN / "opentelemetry-instrument"), sys.executable, str(EXAMPLES / example)],
            directory,
            OTEL_TRACES_EXPORTER="otlp,otlp_json_file",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_ENDPOINT=jaeger.otlp_http,
            OTEL_METRICS_EXPORTER="none",
        )
    return directory / ".reasonflow-otel" / "traces.jsonl"


@pytest.fixture(scope="module")
def viewers(jaeger, trace_file, tmp_path_factory):
    """(the viewer over the file, the viewer over Jaeger), once Jaeger has every trace."""
    cwd = tmp_path_factory.mktemp("cwd")
    with (
        viewer_process("--file", str(trace_file), cwd=cwd) as over_file,
        viewer_process("--jaeger", jaeger.query_url, cwd=cwd) as over_jaeger,
    ):
        get_indexed(over_file + "api/traces")
        _wait_for_traces(over_jaeger, sum(EXAMPLE_TRACES.values()))
        yield over_file, over_jaeger


def _wait_for_traces(viewer: str, count: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        status, body = get(viewer + "api/traces")
        assert status == 200, body
        if body["file"]["traces"] >= count or time.monotonic() > deadline:
            assert body["file"]["traces"] == count, body["file"]
            return
        time.sleep(0.5)


def without_file(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != "file"}


def rounded(value: Any) -> Any:
    """Floats to 9 significant digits: sums over spans taken in another order differ in the
    last bits."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def test_the_runs_listed_from_jaeger_are_the_runs_the_apps_made(viewers, jaeger):
    over_file, over_jaeger = viewers

    from_file = get(over_file + "api/traces")[1]
    from_jaeger = get(over_jaeger + "api/traces")[1]

    assert without_file(from_jaeger) == without_file(from_file)
    assert {trace["service"] for trace in from_jaeger["traces"]} == {
        "support_triage",
        "burr_research_assistant",
    }
    assert from_jaeger["file"] == {
        "source": "jaeger",
        "path": jaeger.query_url,
        "exists": True,
        "spans": from_file["file"]["spans"],
        "traces": 7,
        "skipped_lines": 0,
        "first_skipped": "",
        "indexing": False,
        "indexed_bytes": 0,
        "size_bytes": 0,
        "error": "",
    }
    filtered = get(over_jaeger + "api/traces?workflow=lookup&status=error")[1]
    assert without_file(filtered) == without_file(
        get(over_file + "api/traces?workflow=lookup&status=error")[1]
    )
    assert filtered["matched"] == 1


def test_each_run_read_from_jaeger_has_the_spans_and_graphs_of_the_file(viewers):
    over_file, over_jaeger = viewers
    listed = get(over_file + "api/traces")[1]["traces"]

    for trace in listed:
        status, from_jaeger = get(f"{over_jaeger}api/traces/{trace['trace_id']}")
        assert status == 200, from_jaeger
        from_file = get(f"{over_file}api/traces/{trace['trace_id']}")[1]
        assert from_jaeger == from_file, trace["root"]
    escalation = next(t for t in listed if "EscalationFlow" in t["workflows"])
    graphs = get(f"{over_jaeger}api/traces/{escalation['trace_id'][:12]}")[1]["graphs"]
    assert [graph["workflow"] for graph in graphs] == ["TriageFlow", "EscalationFlow"]


def test_the_workflow_analytics_from_jaeger_are_those_of_the_file(viewers):
    over_file, over_jaeger = viewers

    from_file = get(over_file + "api/stats")[1]
    from_jaeger = get(over_jaeger + "api/stats")[1]

    assert rounded(without_file(from_jaeger)) == rounded(without_file(from_file))
    assert set(from_jaeger["workflows"]) == {"TriageFlow", "EscalationFlow", "plan", "lookup"}


def test_a_trace_jaeger_does_not_have_is_a_404(viewers):
    _, over_jaeger = viewers

    status, body = get(f"{over_jaeger}api/traces/{'ab' * 16}")

    assert status == 404
    assert body == {"error": f"no trace id starts with {'ab' * 16}"}


def test_an_unreachable_jaeger_is_said_in_every_answer(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"

    with viewer_process("--jaeger", closed, cwd=tmp_path) as viewer:
        body = get_indexed(viewer + "api/traces")  # once the first query has failed

    assert body["traces"] == []
    assert body["file"]["exists"] is False
    assert body["file"]["error"].startswith(f"cannot reach Jaeger at {closed}: ")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--jaeger", "localhost:16686"], "expected an http:// or https:// URL"),
        (["--jaeger", "http://localhost:16686", "--file", "t.jsonl"], "give --file or --jaeger"),
    ],
)
def test_the_jaeger_option_is_checked(tmp_path, arguments, message):
    completed = subprocess.run(
        [str(BIN / "reasonflow-otel"), "ui", "--no-browser", "--port", "0", *arguments],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 2 if "URL" in message else 1
    assert message in completed.stderr


def test_a_run_from_jaeger_in_the_browser(viewers, trace_file, tmp_path):
    _, over_jaeger = viewers
    fan_out = next(
        span["traceId"]
        for span in otlp_json(trace_file, "spans")
        if span["name"] == "invoke_workflow lookup"
    )

    def found(selector: str):
        return WebDriverWait(browser, WAIT_SECONDS).until(
            lambda driver: driver.find_elements(By.CSS_SELECTOR, selector)
        )

    with headless_chromium(tmp_path / "profile") as browser:
        browser.get(over_jaeger)
        assert len(found("tr[data-trace-id]")) == 7
        spans = len(otlp_json(trace_file, "spans"))
        state = browser.find_element(By.ID, "file-state").text
        assert state == f"7 traces · {spans} spans · from Jaeger"
        screenshot(browser, "jaeger-runs.png", tmp_path)
        browser.find_element(By.CSS_SELECTOR, f'tr[data-trace-id="{fan_out}"]').click()

        panels = found("figure.graph-box")
        assert [panel.get_attribute("data-runs") for panel in panels] == ["1", "3"]
        screenshot(browser, "jaeger-run.png", tmp_path)
