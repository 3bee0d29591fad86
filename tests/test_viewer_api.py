"""The viewer's JSON API over a trace file written by real instrumented PocketFlow runs.

Expected documents are worked out here from the OTLP file itself (ids, times, durations,
attributes as written), so every figure the API gives is checked against the source.
"""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from support.otlp_files import otlp_json
from support.processes import BIN, REPOSITORY, run_program
from support.viewer import (
    SERVICE,
    get,
    get_indexed,
    record_runs,
    running_viewer,
    viewer_process,
)

from reasonflow_otel.local.viewer.analytics import PREDICTION_BASIS
from reasonflow_otel.local.viewer.server import is_loopback

CLI = str(BIN / "reasonflow-otel")
STEPS = ("Fetch", "Score", "Analyze", "Decide", "Publish", "Review")


# --- The OTLP file, read here without our reader ----------------------------------------------


def value(span: dict[str, Any], key: str) -> Any:
    for item in span.get("attributes", []):
        if item["key"] == key:
            (kind, raw), *_ = item["value"].items()
            return int(raw) if kind == "intValue" else raw
    return None


def duration(span: dict[str, Any]) -> float:
    return (int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])) / 1e9


def iso(time_ns: int) -> str:
    moment = datetime.fromtimestamp(time_ns // 1000 / 1e6, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def failed(span: dict[str, Any]) -> bool:
    return span.get("status", {}).get("code") == 2


class Recorded:
    """The spans of the recorded file, grouped the way the assertions need them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.spans = otlp_json(path, "spans")
        self.roots = sorted(
            (span for span in self.spans if "parentSpanId" not in span),
            key=lambda span: -int(span["startTimeUnixNano"]),
        )

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [span for span in self.spans if span["traceId"] == trace_id]

    def root_routed(self, action: str) -> dict[str, Any]:
        """The run whose Decide node took ``action``."""
        decide = next(
            span
            for span in self.spans
            if span["name"] == "Decide" and value(span, "reasonflow.node.action") == action
        )
        return next(root for root in self.roots if root["traceId"] == decide["traceId"])

    def summary(self, root: dict[str, Any]) -> dict[str, Any]:
        spans = self.of_trace(root["traceId"])
        start = min(int(span["startTimeUnixNano"]) for span in spans)
        end = max(int(span["endTimeUnixNano"]) for span in spans)
        return {
            "trace_id": root["traceId"],
            "root": "ReportFlow",
            "service": SERVICE,
            "workflows": ["ReportFlow"],
            "status": "error" if any(failed(span) for span in spans) else "ok",
            "start": iso(start),
            "duration_s": (end - start) / 1e9,
            "spans": len(spans),
        }

    def durations(self, name: str) -> list[float]:
        return [duration(span) for span in self.spans if span["name"] == name]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Recorded:
    return Recorded(record_runs(tmp_path_factory.mktemp("viewer-runs")))


@pytest.fixture(scope="module")
def viewer(recorded) -> str:
    with running_viewer(recorded.path) as url:
        get_indexed(url + "api/traces")
        yield url


def file_state(path: Path, spans: int, traces: int, skipped: int = 0, why: str = "") -> dict:
    return {
        "source": "file",
        "path": str(path.absolute()),
        "exists": True,
        "spans": spans,
        "traces": traces,
        "skipped_lines": skipped,
        "first_skipped": why,
        "indexing": False,
        "indexed_bytes": path.stat().st_size,
        "size_bytes": path.stat().st_size,
        "error": "",
    }


# --- /api/traces --------------------------------------------------------------------------------


def test_traces_lists_every_run_newest_first(recorded, viewer):
    status, body = get(viewer + "api/traces")

    assert status == 200
    assert body == {
        "traces": [recorded.summary(root) for root in recorded.roots],
        "matched": 4,
        "workflows": ["ReportFlow"],
        "file": file_state(recorded.path, spans=len(recorded.spans), traces=4),
    }
    assert [trace["status"] for trace in body["traces"]] == ["error", "ok", "ok", "ok"]
    assert [trace["spans"] for trace in body["traces"]] == [9, 8, 9, 9]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=error", [0]),
        ("status=ok", [1, 2, 3]),
        ("workflow=ReportFlow&limit=2", [0, 1]),
        ("workflow=OtherFlow", []),
        ("until=2000-01-01T00:00:00Z", []),
        ("since=2000-01-01T00:00:00", [0, 1, 2, 3]),
    ],
)
def test_traces_filters(recorded, viewer, query, expected):
    status, body = get(f"{viewer}api/traces?{query}")

    assert status == 200
    assert [trace["trace_id"] for trace in body["traces"]] == [
        recorded.roots[index]["traceId"] for index in expected
    ]


def test_traces_filter_by_time_and_trace_id_prefix(recorded, viewer):
    second = recorded.roots[1]
    start = int(second["startTimeUnixNano"])
    window = f"since={iso(start - 1000)}&until={iso(start + 1000)}"

    by_time = get(f"{viewer}api/traces?{window}")[1]
    by_prefix = get(f"{viewer}api/traces?q={second['traceId'][:12].upper()}")[1]

    assert [trace["trace_id"] for trace in by_time["traces"]] == [second["traceId"]]
    assert by_prefix["traces"] == [recorded.summary(second)]
    assert by_prefix["matched"] == 1


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("status=maybe", "status must be ok or error, not 'maybe'"),
        ("limit=0", "limit must be a whole number from 1 to 10000, not '0'"),
        ("limit=ten", "limit must be a whole number from 1 to 10000, not 'ten'"),
        ("since=yesterday", "since must be an ISO 8601 time, not 'yesterday'"),
        ("q=xyz", "'xyz' is not a trace id (1 to 32 hex digits)"),
        ("status=ok&status=error", "status is given 2 times"),
        (
            "path=/etc/passwd",
            "unknown parameter 'path' (known: workflow, status, since, until, q, limit)",
        ),
    ],
)
def test_bad_parameters_are_a_400_with_the_reason(viewer, query, error):
    assert get(f"{viewer}api/traces?{query}") == (400, {"error": error})


# --- /api/traces/{trace_id} ---------------------------------------------------------------------


def test_one_trace_in_waterfall_order_with_graph_logs_and_payloads(recorded, viewer):
    root = recorded.root_routed("review")
    spans = {span["name"]: span for span in recorded.of_trace(root["traceId"])}
    logs = [
        log
        for log in otlp_json(recorded.path.with_name("traces.logs.jsonl"), "logs")
        if log.get("traceId") == root["traceId"]
    ]

    status, trace = get(f"{viewer}api/traces/{root['traceId'][:10]}")

    assert status == 200
    assert {key: trace[key] for key in recorded.summary(root)} == recorded.summary(root)
    rows = [(s["depth"], s["name"], s["kind"], s["status"]) for s in trace["span_list"]]
    assert rows == [
        (0, "invoke_workflow ReportFlow", "flow", "ok"),
        (1, "Fetch", "node", "ok"),
        (1, "Score", "node", "ok"),
        (2, "Score item", "item", "ok"),
        (2, "Score item", "item", "ok"),
        (2, "Score item", "item", "ok"),
        (1, "Analyze", "node", "ok"),
        (1, "Decide", "node", "ok"),
        (1, "Review", "node", "ok"),
    ]
    review = trace["span_list"][-1]
    assert review["fallback"] is True
    assert review["payloads"] == {
        "reasonflow.node.exec.result": "manual review",
        "reasonflow.node.post.result": "null",
    }
    assert [event["name"] for event in review["events"]] == ["reasonflow.fallback"]
    assert review["events"][0]["attributes"]["error.type"] == "ValueError"
    assert review["duration_s"] == duration(spans["Review"])
    assert (
        review["start_offset_s"]
        == (int(spans["Review"]["startTimeUnixNano"]) - int(root["startTimeUnixNano"])) / 1e9
    )
    assert "reasonflow.node.exec.result" not in review["attributes"]
    assert review["attributes"]["reasonflow.node.name"] == "Review"
    assert trace["logs"] == [
        {
            "span_id": log["spanId"],
            "time": iso(int(log["timeUnixNano"])),
            "severity": log["severityText"],
            "body": log["body"]["stringValue"],
        }
        for log in logs
    ]
    assert [(log["severity"], log["body"]) for log in trace["logs"]] == [
        ("WARN", "fetched 3 rows"),
        ("ERROR", "review fell back to a manual review"),
    ]
    assert trace["logs"][1]["span_id"] == spans["Review"]["spanId"]


def test_the_graph_shows_the_path_the_run_took_with_each_node_timing(recorded, viewer):
    root = recorded.root_routed("review")
    spans = {span["name"]: span for span in recorded.of_trace(root["traceId"])}

    [graph] = get(f"{viewer}api/traces/{root['traceId']}")[1]["graphs"]

    ran = ("Fetch", "Score", "Analyze", "Decide", "Review")
    assert graph == {
        "span_id": root["spanId"],
        "span_ids": [root["spanId"]],
        "runs": 1,
        "workflow": "ReportFlow",
        "truncated": False,
        "nodes": [
            {
                "id": str(index),
                "name": name,
                "class": name,
                "runs": 1 if name in ran else 0,
                "duration_s": duration(spans[name]) if name in ran else 0,
                "status": "ok" if name in ran else "not_run",
                "span_ids": [spans[name]["spanId"]] if name in ran else [],
            }
            for index, name in enumerate(STEPS)
        ],
        "edges": [
            {"source": "0", "target": "1", "action": "default", "runs": 1, "taken": True},
            {"source": "1", "target": "2", "action": "default", "runs": 1, "taken": True},
            {"source": "2", "target": "3", "action": "default", "runs": 1, "taken": True},
            {"source": "3", "target": "4", "action": "publish", "runs": 0, "taken": False},
            {"source": "3", "target": "5", "action": "review", "runs": 1, "taken": True},
        ],
        "routing_misses": [],
    }


def test_a_failed_run_has_its_exception_and_a_routing_miss_is_flagged(recorded, viewer):
    failed_root = recorded.roots[0]
    missed_root = recorded.root_routed("archive")

    failed_trace = get(f"{viewer}api/traces/{failed_root['traceId']}")[1]
    missed_trace = get(f"{viewer}api/traces/{missed_root['traceId']}")[1]

    publish = next(s for s in failed_trace["span_list"] if s["name"] == "Publish")
    assert (publish["status"], publish["error"]) == ("error", "RuntimeError: publisher offline")
    assert publish["exception"]["type"] == "RuntimeError"
    assert publish["exception"]["message"] == "publisher offline"
    assert publish["exception"]["stacktrace"].startswith("Traceback (most recent call last):")
    assert [n["status"] for n in failed_trace["graphs"][0]["nodes"]] == [
        "ok",
        "ok",
        "ok",
        "ok",
        "error",
        "not_run",
    ]
    decide = next(s for s in missed_trace["span_list"] if s["name"] == "Decide")
    miss = {
        "node": "Decide",
        "span_id": decide["span_id"],
        "action": "archive",
        "expected": ["publish", "review"],
    }
    assert decide["routing_miss"] == miss
    assert missed_trace["graphs"][0]["routing_misses"] == [{**miss, "node_id": "3"}]
    assert [e["taken"] for e in missed_trace["graphs"][0]["edges"]] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_a_retry_is_an_event_on_its_node(recorded, viewer):
    retried = next(
        root
        for root in recorded.roots
        if any(
            event["name"] == "reasonflow.retry"
            for span in recorded.of_trace(root["traceId"])
            for event in span.get("events", [])
        )
    )

    trace = get(f"{viewer}api/traces/{retried['traceId']}")[1]

    fetch = next(s for s in trace["span_list"] if s["name"] == "Fetch")
    assert fetch["retries"] == 1
    [event] = fetch["events"]
    assert event["name"] == "reasonflow.retry"
    assert {k: event["attributes"][k] for k in ("error.type", "exception.message")} == {
        "error.type": "SourceTimeoutError",
        "exception.message": "source did not answer",
    }


@pytest.mark.parametrize(
    ("trace_id", "status", "error"),
    [
        ("0" * 32, 404, f"no trace id starts with {'0' * 32}"),
        ("not-hex", 400, "'not-hex' is not a trace id (1 to 32 hex digits)"),
    ],
)
def test_unknown_or_bad_trace_ids(viewer, trace_id, status, error):
    assert get(f"{viewer}api/traces/{trace_id}") == (status, {"error": error})


def test_a_prefix_of_several_trace_ids_is_a_400(recorded, tmp_path):
    text = recorded.path.read_text()
    ids = [root["traceId"] for root in recorded.roots]
    for old, prefix in zip(ids, ("abc", "abd", "e01", "e02"), strict=True):
        text = text.replace(old, prefix + old[3:])
    first, second = ids[:2]
    path = tmp_path / "traces.jsonl"
    path.write_text(text)

    with running_viewer(path) as url:
        get_indexed(url + "api/traces")
        ambiguous = get(url + "api/traces/AB")
        unique = get(url + "api/traces/abd")

    assert ambiguous == (
        400,
        {"error": f"ab matches 2 traces (abc{first[3:]}, abd{second[3:]}, ...)"},
    )
    assert unique[0] == 200 and unique[1]["trace_id"] == "abd" + second[3:]


def test_unknown_paths_are_404_and_nothing_can_be_written(recorded, viewer):
    before = recorded.path.read_bytes()

    assert get(viewer + "api/nothing") == (404, {"error": "no endpoint /api/nothing"})
    assert get(viewer + "etc/passwd") == (404, {"error": "no page at /etc/passwd"})
    assert get(viewer + "static/../../setup.py")[0] == 404
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        request = urllib.request.Request(viewer + "api/traces", data=b"{}", method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 501
    assert recorded.path.read_bytes() == before


def test_a_foreign_host_name_is_refused_on_loopback(viewer):
    assert get(viewer + "api/traces", Host="attacker.example:7241") == (
        403,
        {"error": "this viewer answers to localhost only"},
    )
    assert get(viewer + "api/stats", Host="localhost:7241")[0] == 200


# --- /api/stats ---------------------------------------------------------------------------------


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def test_stats_per_workflow_and_step(recorded, viewer):
    stats = get(viewer + "api/stats")[1]

    flow_runs = recorded.durations("invoke_workflow ReportFlow")
    workflow = stats["workflows"]["ReportFlow"]
    assert set(stats) == {
        "spans",
        "flows",
        "nodes",
        "bottlenecks",
        "routing_misses",
        "failures",
        "workflows",
        "file",
    }
    assert stats["routing_misses"] == {"Decide -> 'archive'": 1}
    assert stats["file"] == file_state(recorded.path, spans=len(recorded.spans), traces=4)
    assert {key: workflow[key] for key in ("kind", "runs", "errors", "error_rate")} == {
        "kind": "flow",
        "runs": 4,
        "errors": 1,
        "error_rate": 0.25,
    }
    assert workflow["total_s"] == pytest.approx(sum(flow_runs), abs=1e-12)
    assert (workflow["min_s"], workflow["max_s"]) == (min(flow_runs), max(flow_runs))
    assert workflow["p95_s"] == pytest.approx(nearest_rank(flow_runs, 0.95), rel=0.01)
    assert (workflow["retries"], workflow["fallbacks"], workflow["routing_misses"]) == (1, 1, 1)
    steps = workflow["steps"]
    assert {
        name: (s["kind"], s["runs"], s["errors"], s["retries"], s["fallbacks"], s["routing_misses"])
        for name, s in steps.items()
    } == {
        "Analyze": ("node", 4, 0, 0, 0, 0),
        "Decide": ("node", 4, 0, 0, 0, 1),
        "Fetch": ("node", 4, 0, 1, 0, 0),
        "Publish": ("node", 2, 1, 0, 0, 0),
        "Review": ("node", 1, 0, 0, 1, 0),
        "Score": ("node", 4, 0, 0, 0, 0),
    }
    node_cpu = [
        value(s, "reasonflow.node.cpu_time")
        for s in recorded.spans
        if value(s, "reasonflow.node.kind") and not s["name"].startswith("invoke")
    ]
    assert workflow["cpu_s"] == pytest.approx(sum(node_cpu), abs=1e-9)
    assert steps["Analyze"]["max_s"] == max(recorded.durations("Analyze"))
    assert steps["Analyze"]["p50_s"] == pytest.approx(
        nearest_rank(recorded.durations("Analyze"), 0.5), rel=0.01
    )


def test_stats_bottlenecks_slow_steps_prediction_and_trend(recorded, viewer):
    workflow = get(viewer + "api/stats")[1]["workflows"]["ReportFlow"]

    flow_total = sum(recorded.durations("invoke_workflow ReportFlow"))
    totals = {name: sum(recorded.durations(name)) for name in STEPS}
    ranked = sorted(STEPS, key=lambda name: -totals[name])
    assert [b["step"] for b in workflow["bottlenecks"]] == ranked[:5]
    assert ranked[0] == "Analyze"
    for entry in workflow["bottlenecks"]:
        assert entry["total_s"] == pytest.approx(totals[entry["step"]], abs=1e-12)
        assert entry["share"] == pytest.approx(totals[entry["step"]] / flow_total)
    assert workflow["bottlenecks"][0]["share"] > 0.5

    flow_runs = sorted(recorded.durations("invoke_workflow ReportFlow"))
    assert workflow["prediction"] == {
        "basis": PREDICTION_BASIS,
        "runs": 4,
        "p50_s": nearest_rank(flow_runs, 0.5),
        "p95_s": nearest_rank(flow_runs, 0.95),
    }
    roots = sorted(recorded.roots, key=lambda root: int(root["startTimeUnixNano"]))
    assert [(p["start"], p["duration_s"], p["status"]) for p in workflow["trend"]] == [
        (iso(int(r["startTimeUnixNano"])), duration(r), "error" if failed(r) else "ok")
        for r in roots
    ]
    assert all(point["cpu_s"] > 0 for point in workflow["trend"])

    slower = {row["step"]: row for row in workflow["slower_than_usual"]}
    assert set(slower) <= {"Fetch", "Score", "Analyze", "Decide", "Publish"}  # 2 runs or more
    latest_publish = max(
        (s for s in recorded.spans if s["name"] == "Publish"),
        key=lambda s: int(s["startTimeUnixNano"]),
    )
    if "Publish" in slower:
        assert slower["Publish"]["latest_s"] == duration(latest_publish)
    ratios = [row["ratio"] for row in workflow["slower_than_usual"]]
    assert ratios == sorted(ratios, reverse=True)


def test_stats_failures_by_type_and_node(viewer):
    failures = get(viewer + "api/stats")[1]["failures"]

    assert failures == {
        "RuntimeError": {
            "failed_runs": 1,
            "retried_attempts": 0,
            "where": {"Publish": 1},
            "example": "publisher offline",
        },
        "SourceTimeoutError": {
            "failed_runs": 0,
            "retried_attempts": 1,
            "where": {"Fetch": 1},
            "example": "source did not answer",
        },
    }


# --- Files that are not clean -------------------------------------------------------------------


def test_corrupt_lines_are_skipped_and_counted(recorded, tmp_path):
    path = tmp_path / "traces.jsonl"
    real = recorded.path.read_text()
    path.write_text('{"resourceSpans": [\n' + real + "not json at all\n" + '{"other": 1}\n')

    with running_viewer(path) as url:
        body = get_indexed(url + "api/traces")

    assert [trace["trace_id"] for trace in body["traces"]] == [r["traceId"] for r in recorded.roots]
    assert body["file"] == file_state(
        path,
        spans=len(recorded.spans),
        traces=4,
        skipped=3,
        why="line 1 is not valid JSON (Expecting value at character 21)",
    )


def test_a_growing_file_is_picked_up_while_the_server_runs(recorded, tmp_path):
    path = tmp_path / ".reasonflow-otel" / "traces.jsonl"
    path.parent.mkdir()
    path.write_bytes(recorded.path.read_bytes())

    with running_viewer(path) as url:
        assert get_indexed(url + "api/traces")["matched"] == 4
        record_runs(tmp_path)  # four more runs appended by a second program
        after_run = get(url + "api/traces")[1]
        newest = get(url + "api/traces/" + after_run["traces"][0]["trace_id"])[1]
        line = json.dumps(json.loads(recorded.path.read_text().splitlines()[0])) + "\n"
        with path.open("a") as file:  # a line still being written is left for later
            file.write(line[:100])
        half_written = get(url + "api/traces")[1]
        with path.open("a") as file:
            file.write(line[100:])
        whole = get(url + "api/traces")[1]
        stats = get(url + "api/stats")[1]

    assert after_run["matched"] == 8
    assert [log["body"] for log in newest["logs"]] == ["fetched 3 rows"]  # the log file grew too
    assert after_run["traces"][4:] == [recorded.summary(root) for root in recorded.roots]
    assert (half_written["matched"], half_written["file"]["skipped_lines"]) == (8, 0)
    assert half_written["file"]["indexed_bytes"] == path.stat().st_size - len(line)
    assert (whole["matched"], whole["file"]["skipped_lines"]) == (8, 0)  # same traces again
    appended = sum(
        len(scope["spans"]) for r in json.loads(line)["resourceSpans"] for scope in r["scopeSpans"]
    )
    assert whole["file"]["spans"] == 2 * len(recorded.spans) + appended
    assert stats["workflows"]["ReportFlow"]["runs"] == 12


def test_a_missing_file_is_waited_for(tmp_path):
    path = tmp_path / "traces.jsonl"
    with running_viewer(path) as url:
        empty = get(url + "api/traces")[1]
        path.write_text("")
        created = get(url + "api/stats")[1]

    assert empty["traces"] == [] and empty["file"]["exists"] is False
    assert created["file"]["exists"] is True and created["workflows"] == {}


def test_a_file_that_cannot_be_read_is_said_so(tmp_path):
    path = tmp_path / "traces.jsonl"
    path.mkdir()

    with running_viewer(path) as url:
        body = get_indexed(url + "api/traces")

    assert body["traces"] == []
    assert body["file"]["error"] == f"cannot read {path}: Is a directory"


# --- The page -----------------------------------------------------------------------------------


def test_the_page_loads_nothing_from_elsewhere(viewer):
    """Offline by construction: no URL in the assets but the SVG namespace."""
    for asset in ("", "static/viewer.js", "static/viewer.css", "favicon.svg"):
        with urllib.request.urlopen(viewer + asset, timeout=10) as response:
            text = response.read().decode()
            policy = response.headers["Content-Security-Policy"]
        urls = re.findall(r"https?://[^\s\"'`)]+", text)
        assert set(urls) <= {"http://www.w3.org/2000/svg"}, asset
        assert policy.startswith("default-src 'self'")


# --- The command ----------------------------------------------------------------------------------


def test_ui_prints_its_url_and_serves_the_page_and_api(recorded, tmp_path):
    with viewer_process("--file", str(recorded.path), cwd=tmp_path) as url:
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        script = urllib.request.urlopen(url + "static/viewer.js", timeout=10)
        listed = get_indexed(url + "api/traces")

    assert url.startswith("http://127.0.0.1:") and not url.endswith(":7241/")
    assert '<script src="/static/viewer.js"></script>' in page
    assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert listed["matched"] == 4


def test_ui_on_a_port_in_use_says_so(recorded, tmp_path):
    with running_viewer(recorded.path) as url:
        port = url.rsplit(":", 1)[1].strip("/")
        completed = subprocess.run(
            [CLI, "ui", "--file", str(recorded.path), "--port", port, "--no-browser"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert completed.returncode == 1
    assert completed.stderr == (
        f"reasonflow-otel: error: cannot serve on 127.0.0.1:{port}: Address already in use "
        "(pass --port 0 for any free port)\n"
    )


def test_ui_on_another_interface_warns_that_traces_may_be_sensitive(recorded):
    """192.0.2.1 is a documentation address no machine has: the bind fails, after the warning."""
    completed = subprocess.run(
        [CLI, "ui", "--file", str(recorded.path), "--host", "192.0.2.1", "--no-browser"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 1
    assert completed.stderr.splitlines() == [
        "reasonflow-otel: warning: serving on 192.0.2.1: anyone who can reach it can read these "
        "traces, which may hold sensitive data (parameters, captured payloads, log messages)",
        "reasonflow-otel: error: cannot serve on 192.0.2.1:7241: Cannot assign requested address "
        "(pass --port 0 for any free port)",
    ]


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ui_serves_on_ipv6_loopback(recorded, tmp_path):
    with viewer_process("--file", str(recorded.path), "--host", "::1", cwd=tmp_path) as url:
        listed = get_indexed(url + "api/traces")

    assert url.startswith("http://[::1]:")
    assert listed["matched"] == 4


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_which_hosts_count_as_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_the_startup_benchmark_runs_and_prints_every_figure(tmp_path):
    benchmark = REPOSITORY / "benchmarks" / "viewer_startup.py"

    output = run_program([sys.executable, str(benchmark), "--spans", "2000"], tmp_path).stdout

    names = [line.rsplit(": ", 1)[0] for line in output.splitlines()]
    assert names == [
        "file",
        "process start to URL printed, s",
        "start to first /api/traces answer, s",
        "  that answer, s",
        "start to whole file indexed (background), s",
        "/api/traces once indexed, s",
        "one trace, s",
        "/api/stats, s",
        "peak resident memory, MiB",
        "reasonflow-otel traces (CLI, whole process), s",
        "whole file indexed / CLI traces",
    ]
    assert output.startswith("file: 2,000 spans, 160 traces, ")
    assert all(float(line.rsplit(": ", 1)[1]) > 0 for line in output.splitlines()[1:])
