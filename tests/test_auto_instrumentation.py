"""Zero-code: `opentelemetry-instrument python examples/support_triage.py`, as a user runs it.

The example never imports reasonflow_otel; our distro, configurator and the
``pocketflow`` instrumentor entry point do everything. With no OTLP endpoint the
spans go to the local OTLP JSON lines file, which the tests read back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from support.processes import BIN, REPOSITORY, run_program
from support.spans import SpanLine, indented

EXAMPLE = REPOSITORY / "examples" / "support_triage.py"
INSTRUMENT = str(BIN / "opentelemetry-instrument")
STATUS_ERROR = 2

MORNING = [
    "invoke_workflow TriageFlow",
    "  LoadInbox",
    "  ClassifyTickets",
    *["    ClassifyTickets item"] * 3,
    "  RouteTickets",
    "  invoke_workflow EscalationFlow",
    "    PageOnCall",
    "    OpenIncident",
    "  DraftReplies",
    *["    DraftReplies item"] * 3,
    "  Summarize",
]
EVENING = [
    "invoke_workflow TriageFlow",
    "  LoadInbox",
    "  ClassifyTickets",
    *["    ClassifyTickets item"] * 2,
    "  RouteTickets",
    "  DraftReplies",
    *["    DraftReplies item"] * 2,
    "  Summarize",
]


def read_spans(path: Path) -> list[dict[str, Any]]:
    """Every span of an OTLP JSON lines file, as its JSON object."""
    return [
        span
        for line in path.read_text().splitlines()
        if line.strip()
        for resource_spans in json.loads(line)["resourceSpans"]
        for scope_spans in resource_spans["scopeSpans"]
        for span in scope_spans["spans"]
    ]


def attributes(span: dict[str, Any]) -> dict[str, Any]:
    """OTLP/JSON key-value list as a dict (64-bit integers stay strings, as in the file)."""
    return {item["key"]: next(iter(item["value"].values())) for item in span["attributes"]}


def span_line(span: dict[str, Any]) -> SpanLine:
    parent = span.get("parentSpanId")
    return SpanLine(
        span["name"],
        int(span["spanId"], 16),
        int(parent, 16) if parent else None,
        int(span["startTimeUnixNano"]),
        int(attributes(span).get("reasonflow.batch.index", 0)),
    )


def only(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [span for span in spans if span["name"] == name]


@pytest.fixture(scope="module")
def plain_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    return run_program([sys.executable, str(EXAMPLE)], tmp_path_factory.mktemp("plain")).stdout


@pytest.fixture(scope="module")
def instrumented(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict[str, Any]]]:
    """The example's output and exported spans under opentelemetry-instrument."""
    work_dir = tmp_path_factory.mktemp("instrumented")
    trace_file = work_dir / "out" / "traces.jsonl"
    completed = run_program(
        [INSTRUMENT, sys.executable, str(EXAMPLE)],
        work_dir,
        REASONFLOW_OTEL_TRACE_FILE=str(trace_file),
    )
    assert f"traces are written to {trace_file}" in completed.stderr
    return completed.stdout, read_spans(trace_file)


def test_the_output_is_the_same_with_and_without_instrumentation(plain_output, instrumented):
    output, _ = instrumented
    assert output == plain_output


def test_each_inbox_is_one_trace_of_flow_node_and_item_spans(instrumented):
    _, spans = instrumented

    assert indented([span_line(span) for span in spans]) == MORNING + EVENING
    roots = only(spans, "invoke_workflow TriageFlow")
    assert len({root["traceId"] for root in roots}) == 2
    for root in roots:
        trace_spans = [span for span in spans if span["traceId"] == root["traceId"]]
        assert len(trace_spans) in (len(MORNING), len(EVENING))
    assert all(span.get("status", {}).get("code") != STATUS_ERROR for span in spans)


def test_the_workflow_attributes_reach_the_file(instrumented):
    _, spans = instrumented

    [morning_root, _] = only(spans, "invoke_workflow TriageFlow")
    root = attributes(morning_root)
    assert root["gen_ai.operation.name"] == "invoke_workflow"
    assert root["gen_ai.workflow.name"] == "TriageFlow"
    assert root["reasonflow.node.kind"] == "async_flow"
    graph = json.loads(root["reasonflow.flow.graph"])
    assert [node["name"] for node in graph["nodes"]] == [
        "LoadInbox",
        "ClassifyTickets",
        "RouteTickets",
        "EscalationFlow",
        "DraftReplies",
        "Summarize",
    ]
    routes = [attributes(span) for span in only(spans, "RouteTickets")]
    assert [(r["reasonflow.node.action"], r["reasonflow.node.successor"]) for r in routes] == [
        ("escalate", "EscalationFlow"),
        ("auto_reply", "DraftReplies"),
    ]
    assert [attributes(s)["reasonflow.batch.size"] for s in only(spans, "DraftReplies")] == [
        "3",
        "2",
    ]


def test_the_pager_retry_is_an_event_on_a_successful_node(instrumented):
    _, spans = instrumented

    [page] = only(spans, "PageOnCall")
    assert attributes(page)["reasonflow.node.attempts"] == "2"
    assert attributes(page)["reasonflow.node.max_retries"] == "3"
    assert attributes(page)["reasonflow.node.fallback"] is False
    [retry] = page["events"]
    assert retry["name"] == "reasonflow.retry"
    assert attributes(retry) == {
        "reasonflow.attempt": "1",
        "error.type": "PagerTimeoutError",
        "exception.message": "pager gateway timed out",
    }


def test_disabling_the_pocketflow_instrumentation_leaves_no_pocketflow_spans(
    tmp_path, plain_output
):
    trace_file = tmp_path / "traces.jsonl"
    completed = run_program(
        [INSTRUMENT, sys.executable, str(EXAMPLE)],
        tmp_path,
        REASONFLOW_OTEL_TRACE_FILE=str(trace_file),
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="pocketflow",
    )

    assert completed.stdout == plain_output
    # Nothing was traced: no span, so no file (it is created with its first record).
    assert not trace_file.exists()
