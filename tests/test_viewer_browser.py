"""The viewer in a real headless Chromium: the runs page, one run, the workflows page.

The server is ``reasonflow-otel ui`` itself, over a trace file from real instrumented
PocketFlow runs, or from the examples run as the README says. Each test saves a screenshot
in its temporary directory; the docs' pictures of the viewer are these screenshots of the
examples' runs (``UPDATE_DOCS_SCREENSHOTS=1 pytest tests/test_viewer_browser.py`` writes
them to docs/images).
"""

from __future__ import annotations

from pathlib import Path

import pocketflow
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from support.browser import headless_chromium, screenshot
from support.otlp_files import otlp_json
from support.viewer import (
    get_indexed,
    record_example,
    record_runs,
    running_viewer,
    viewer_process,
)

from reasonflow_otel.local.trace_file import TraceFileExporter

WAIT_SECONDS = 30


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory) -> Path:
    return record_runs(tmp_path_factory.mktemp("viewer-browser"))


@pytest.fixture(scope="module")
def viewer_url(trace_file, tmp_path_factory):
    with viewer_process("--file", str(trace_file), cwd=tmp_path_factory.mktemp("cwd")) as url:
        get_indexed(url + "api/traces")
        yield url


@pytest.fixture(scope="module")
def examples_file(tmp_path_factory) -> Path:
    """Both examples, run as the README says, into one trace file (no service name set)."""
    directory = tmp_path_factory.mktemp("examples")
    record_example(directory, "support_triage.py")
    return record_example(directory, "burr_research_assistant.py")


@pytest.fixture(scope="module")
def examples_viewer(examples_file, tmp_path_factory):
    with viewer_process("--file", str(examples_file), cwd=tmp_path_factory.mktemp("cwd")) as url:
        get_indexed(url + "api/traces")
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def wait_for(driver, selector: str, count: int | None = None) -> list:
    """The elements matching a CSS selector, once there are some (or exactly ``count``)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(_):
        elements = driver.find_elements(By.CSS_SELECTOR, selector)
        if count is None:
            return elements or False
        return elements if len(elements) == count else False

    return WebDriverWait(driver, WAIT_SECONDS).until(found)


def console_errors(driver) -> list[str]:
    """What the page logged as errors (a script error, a blocked request, a CSP violation)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def roots_newest_first(trace_file: Path) -> list[dict]:
    return sorted(
        (span for span in otlp_json(trace_file, "spans") if "parentSpanId" not in span),
        key=lambda span: -int(span["startTimeUnixNano"]),
    )


def review_trace_id(trace_file: Path) -> str:
    return next(
        span["traceId"] for span in otlp_json(trace_file, "spans") if span["name"] == "Review"
    )


def test_the_runs_page_lists_every_trace(browser, viewer_url, trace_file, tmp_path):
    browser.get(viewer_url)

    rows = wait_for(browser, "tr[data-trace-id]", count=4)

    roots = roots_newest_first(trace_file)
    assert [row.get_attribute("data-trace-id") for row in rows] == [r["traceId"] for r in roots]
    cells = [row.find_elements("css selector", "td") for row in rows]
    assert [[cell.text for cell in row[1:5]] for row in cells] == [
        [root["traceId"][:16], "ReportFlow", "report-service", status]
        for root, status in zip(roots, ["error", "ok", "ok", "ok"], strict=True)
    ]
    assert browser.find_element("id", "file-state").text.startswith("4 traces · ")
    screenshot(browser, "runs.png", tmp_path)
    assert console_errors(browser) == []

    from selenium.webdriver.common.keys import Keys

    search = browser.find_element("css selector", "input[name=q]")
    search.send_keys("xyz")
    [problem] = wait_for(browser, "#runs-results .error-box")
    assert problem.text == "'xyz' is not a trace id (1 to 32 hex digits)"
    search.clear()
    search.send_keys(roots[2]["traceId"][:6])
    [found] = wait_for(browser, "tr[data-trace-id]", count=1)
    assert found.get_attribute("data-trace-id") == roots[2]["traceId"]
    search.send_keys(Keys.BACKSPACE * 6)  # as a person deletes it
    wait_for(browser, "tr[data-trace-id]", count=4)

    status = browser.find_element("css selector", "select[name=status]")
    status.find_element("css selector", "option[value=error]").click()
    [failed] = wait_for(browser, "tr[data-trace-id]", count=1)
    assert failed.get_attribute("data-trace-id") == roots[0]["traceId"]
    assert browser.current_url.endswith("#/runs?status=error")
    assert console_errors(browser) == [  # the one bad search, answered with a 400
        f"{viewer_url}api/traces?q=xyz - Failed to load resource: "
        "the server responded with a status of 400 (Bad Request)"
    ]


def test_clicking_a_run_shows_its_waterfall_and_the_path_it_took(
    browser, viewer_url, trace_file, tmp_path
):
    trace_id = review_trace_id(trace_file)
    browser.get(viewer_url)
    wait_for(browser, "tr[data-trace-id]", count=4)

    browser.find_element("css selector", f'tr[data-trace-id="{trace_id}"]').click()

    rows = wait_for(browser, ".wf-row[data-span-id]", count=9)
    assert browser.current_url.endswith(f"#/run/{trace_id}")
    assert [(row.get_attribute("data-depth"), row.get_attribute("data-name")) for row in rows] == [
        ("0", "invoke_workflow ReportFlow"),
        ("1", "Fetch"),
        ("1", "Score"),
        ("2", "Score item"),
        ("2", "Score item"),
        ("2", "Score item"),
        ("1", "Analyze"),
        ("1", "Decide"),
        ("1", "Review"),
    ]
    paddings = [
        row.find_element("css selector", ".wf-name").value_of_css_property("padding-left")
        for row in rows
    ]
    assert paddings[:4] == ["8px", "24px", "24px", "40px"]
    bars = [row.find_element("css selector", ".wf-bar").size["width"] for row in rows]
    assert bars[0] == max(bars)  # the flow spans the whole run
    assert bars[6] > bars[1] and bars[6] > bars[8]  # Analyze is the slow step

    nodes = wait_for(browser, "svg.flow-graph g.graph-node", count=6)
    assert {n.get_attribute("data-name"): n.get_attribute("data-taken") for n in nodes} == {
        "Fetch": "true",
        "Score": "true",
        "Analyze": "true",
        "Decide": "true",
        "Publish": "false",
        "Review": "true",
    }
    edges = browser.find_elements("css selector", "svg.flow-graph g.graph-edge")
    assert {e.get_attribute("data-action"): e.get_attribute("data-taken") for e in edges} == {
        "default": "true",
        "publish": "false",
        "review": "true",
    }
    assert "not run" in next(n for n in nodes if n.get_attribute("data-name") == "Publish").text

    rows[-1].click()
    panel = browser.find_element("id", "span-panel")
    assert panel.find_element("css selector", "h2").text == "Review"
    assert "review fell back to a manual review" in panel.text
    assert "manual review" in panel.find_element("css selector", ".kv-table.payloads").text
    screenshot(browser, "run.png", tmp_path)
    assert console_errors(browser) == []


def test_the_workflows_page_shows_the_bottleneck(browser, viewer_url, tmp_path):
    browser.get(viewer_url + "#/workflows")

    bottlenecks = wait_for(browser, '.workflow[data-workflow="ReportFlow"] .bottleneck')

    assert bottlenecks[0].get_attribute("data-step") == "Analyze"
    assert len(bottlenecks) == 5
    card = browser.find_element("css selector", '.workflow[data-workflow="ReportFlow"]')
    assert "Next run: likely about" in card.text
    assert "the p50 and p95 of the last 20 runs" in card.text
    assert len(card.find_elements("css selector", ".trend rect.trend-bar")) == 4
    assert len(card.find_elements("css selector", ".trend rect.trend-bar.error")) == 1
    assert browser.find_element("css selector", 'tr[data-error-type="RuntimeError"]').text
    screenshot(browser, "workflows.png", tmp_path)
    assert console_errors(browser) == []


def test_a_run_that_just_finished_shows_up_without_a_reload(browser, trace_file, tmp_path):
    path = tmp_path / ".reasonflow-otel" / "traces.jsonl"
    path.parent.mkdir()
    path.write_bytes(trace_file.read_bytes())

    with running_viewer(path) as url:
        browser.get(url)
        wait_for(browser, "tr[data-trace-id]", count=4)
        record_runs(tmp_path)  # another program appends four runs

        rows = wait_for(browser, "tr[data-trace-id]", count=8)

    newest = roots_newest_first(path)[0]["traceId"]
    assert rows[0].get_attribute("data-trace-id") == newest
    assert browser.find_element("id", "file-state").text.startswith("8 traces · ")
    assert console_errors(browser) == []


class Enrich(pocketflow.BatchNode):
    """Fifteen items; item 9 fails its first attempt and is retried."""

    def __init__(self) -> None:
        super().__init__(max_retries=2)
        self.failed_once = False

    def prep(self, shared):
        return list(range(15))

    def exec(self, item):
        if item == 9 and not self.failed_once:
            self.failed_once = True
            raise ConnectionError("enrichment service reset the connection")
        return item


class EnrichFlow(pocketflow.Flow):
    """Enrich every item."""


def test_a_large_batch_is_folded_but_keeps_its_eventful_items(browser, make_telemetry, tmp_path):
    path = tmp_path / "traces.jsonl"
    telemetry = make_telemetry()
    telemetry.tracer_provider.add_span_processor(
        SimpleSpanProcessor(TraceFileExporter(path, max_bytes=10**9, backups=0))
    )
    EnrichFlow(start=Enrich()).run({})
    trace_id = otlp_json(path, "spans")[0]["traceId"]

    with running_viewer(path) as url:
        browser.get(f"{url}#/run/{trace_id}")
        rows = wait_for(browser, ".wf-row[data-span-id], .wf-row.wf-more", count=9)
        names = [row.find_element("css selector", ".wf-name").text for row in rows]
        assert names == [
            "invoke_workflow EnrichFlow",
            "Enrich",
            "Enrich item #0",
            "Enrich item #1",
            "Enrich item #2",
            "Enrich item #3",
            "Enrich item #4",
            "… 9 more items (show)",
            "Enrich item #9 1 retry",
        ]
        rows[7].click()
        expanded = wait_for(browser, ".wf-row[data-span-id]", count=17)
        assert not browser.find_elements("css selector", ".wf-more")
        assert [row.get_attribute("data-name") for row in expanded[2:]] == ["Enrich item"] * 15
        screenshot(browser, "batch.png", tmp_path)
        assert console_errors(browser) == []


def fan_out_trace_id(trace_file: Path) -> str:
    """The Burr example's run that looked three queries up, one sub-application each."""
    return next(
        span["traceId"]
        for span in otlp_json(trace_file, "spans")
        if span["name"] == "invoke_workflow lookup"
    )


def test_a_sub_flow_run_three_times_is_one_graph_with_its_visit_count(
    browser, examples_viewer, examples_file, tmp_path
):
    browser.get(f"{examples_viewer}#/run/{fan_out_trace_id(examples_file)}")

    wait_for(browser, 'figure.graph-box[data-workflow="lookup"]')
    panels = wait_for(browser, "figure.graph-box", count=2)

    assert [panel.get_attribute("data-workflow") for panel in panels] == ["plan", "lookup"]
    plan, lookup = panels
    assert lookup.get_attribute("data-runs") == "3"
    assert lookup.find_element("css selector", "figcaption").text == (
        "lookup · ran 3 times in this run (counts are totals)"
    )
    [node] = lookup.find_elements("css selector", "g.graph-node")
    assert node.get_attribute("data-runs") == "3"
    assert node.text.splitlines()[1].startswith("×3 · ")
    research = plan.find_element("css selector", 'g.graph-edge[data-action="default"]')
    assert research.get_attribute("data-taken") == "true"
    assert research.text == "×1"
    assert _dashes(research) == "none"
    screenshot(browser, "viewer.png", tmp_path)
    assert console_errors(browser) == []


def test_an_edge_that_never_ran_is_dashed_even_when_the_engine_would_take_it_next(
    browser, examples_viewer, examples_file
):
    """The "hello" run halted before draft: answer_directly's edge to it never ran."""
    direct = next(
        span for span in otlp_json(examples_file, "spans") if span["name"] == "answer_directly"
    )
    browser.get(f"{examples_viewer}#/run/{direct['traceId']}")

    wait_for(browser, f'.wf-row[data-span-id="{direct["spanId"]}"]')  # this run's page
    edges = wait_for(browser, "svg.flow-graph g.graph-edge", count=5)

    drawn = {
        (e.get_attribute("data-source"), e.get_attribute("data-action")): (
            e.get_attribute("data-taken"),
            _dashes(e),
        )
        for e in edges
    }
    taken, not_taken = ("true", "none"), ("false", "4px, 3px")
    assert drawn == {
        ("0", "len(queries) == 0"): taken,  # plan -> answer_directly
        ("0", "default"): not_taken,  # plan -> research: the default, not what ran
        ("1", "default"): not_taken,
        ("2", "default"): not_taken,
        ("3", "default"): not_taken,  # answer_directly -> draft: draft ran in another trace
    }
    nodes = browser.find_elements("css selector", "svg.flow-graph g.graph-node")
    assert {n.get_attribute("data-name"): n.get_attribute("data-taken") for n in nodes} == {
        "plan": "true",
        "research": "false",
        "cite": "false",
        "answer_directly": "true",
        "draft": "false",
    }
    assert console_errors(browser) == []


def _dashes(edge) -> str:
    """The drawn dash pattern of an edge's line: ``none`` for a solid line."""
    return edge.find_element("css selector", "path").value_of_css_property("stroke-dasharray")


def test_the_docs_pictures_of_the_runs_and_workflows_pages(browser, examples_viewer, tmp_path):
    browser.get(examples_viewer)
    rows = wait_for(browser, "tr[data-trace-id]", count=7)
    services = {row.find_elements("css selector", "td")[3].text for row in rows}
    assert services == {"support_triage", "burr_research_assistant"}
    screenshot(browser, "viewer-runs.png", tmp_path)

    browser.get(examples_viewer + "#/workflows")
    [plan] = wait_for(browser, '.workflow[data-workflow="plan"]')
    assert len(plan.find_elements("css selector", ".trend rect.trend-bar")) == 5
    browser.execute_script("arguments[0].scrollIntoView()", plan)
    screenshot(browser, "viewer-workflows.png", tmp_path)
    assert console_errors(browser) == []


def test_an_edge_label_wider_than_the_default_gap_is_not_hidden_under_a_box(
    browser, examples_viewer, examples_file
):
    """support_triage's "escalate ×1" needs more room than the default gap between columns."""
    escalated = next(
        span["traceId"]
        for span in otlp_json(examples_file, "spans")
        if span["name"] == "invoke_workflow EscalationFlow"
    )
    browser.get(f"{examples_viewer}#/run/{escalated}")
    [label] = wait_for(browser, 'g.graph-edge[data-action="escalate"] text')
    assert label.text == "escalate ×1"
    boxes = browser.find_elements("css selector", "svg.flow-graph g.graph-node rect")
    assert boxes
    overlapping = [box for box in boxes if _overlap(browser, label, box)]
    assert overlapping == []


def _overlap(driver, first, second) -> bool:
    return driver.execute_script(
        "const [a, b] = [arguments[0], arguments[1]].map((e) => e.getBoundingClientRect());"
        "return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;",
        first,
        second,
    )
