"""The ``reasonflow-otel`` command: the quickstart end to end, each command's output and exit
status, export to a real OTLP receiver, and ``stats`` over a million spans in flat memory."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from support.otlp_files import otlp_json
from support.otlp_receiver import running_otlp_receiver
from support.processes import BIN, REPOSITORY, clean_environment

from reasonflow_otel import semconv
from reasonflow_otel.local.cli import main

CLI = str(BIN / "reasonflow-otel")
EXAMPLE = REPOSITORY / "examples" / "support_triage.py"
DURATION = re.compile(r"\d+(\.\d+)? (ms|s)\b")
COMMANDS = ("traces", "show", "stats", "export", "doctor", "state")


def run(cwd: Path, *command: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """A command in a fresh process with a clean environment; the caller checks the status."""
    return subprocess.run(
        list(command),
        cwd=cwd,
        env=clean_environment(**settings),
        capture_output=True,
        text=True,
        timeout=300,
    )


def file_spans(path: Path) -> list[dict[str, Any]]:
    """Every span of an OTLP JSON lines file, as written."""
    return otlp_json(path, "spans")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The README's quickstart: the example under opentelemetry-instrument, nothing listening."""
    directory = tmp_path_factory.mktemp("quickstart")
    completed = run(
        directory,
        str(BIN / "opentelemetry-instrument"),
        sys.executable,
        str(EXAMPLE),
        REASONFLOW_OTEL_CONSOLE="true",
    )
    assert completed.returncode == 0, completed.stderr
    return directory, completed


# --- The quickstart, end to end -----------------------------------------------------------------


def test_the_quickstart_says_where_traces_went_and_prints_each_tree(quickstart):
    directory, completed = quickstart
    trace_file = directory / ".reasonflow-otel" / "traces.jsonl"

    stderr = DURATION.sub("<t>", completed.stderr).splitlines()
    assert stderr[0] == (
        f"reasonflow-otel: traces are written to {trace_file} "
        "(no backend needed; list them with `reasonflow-otel traces`)"
    )
    assert stderr.count("invoke_workflow TriageFlow ✓ <t> → default") == 2
    assert "│  ├─ PageOnCall ✓ <t> → default · 1 retry" in stderr
    assert "TriageFlow: <t> total, 8 nodes run, 0 failed" in stderr
    assert "TriageFlow: <t> total, 5 nodes run, 0 failed" in stderr
    assert len(file_spans(trace_file)) == 25


def test_traces_lists_the_quickstart_runs_newest_first(quickstart):
    directory, _ = quickstart
    spans = file_spans(directory / ".reasonflow-otel" / "traces.jsonl")
    roots = sorted(
        (span for span in spans if "parentSpanId" not in span),
        key=lambda span: -int(span["startTimeUnixNano"]),
    )

    listed = run(directory, CLI, "traces")

    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "TIME", "TRACE", "ID", "SERVICE", "ROOT", "STATUS", "DURATION", "SPANS"
    ]  # fmt: skip
    assert [row.split()[3:7] for row in rows] == [
        [root["traceId"], "support_triage", "TriageFlow", "ok"] for root in roots
    ]
    local_zone = time.strftime("%z")  # times are local, with their UTC offset
    assert [row.split()[2] for row in rows] == [local_zone, local_zone]
    assert [row.split()[-1] for row in rows] == ["10", "15"]


def test_show_prints_the_tree_of_a_trace_from_an_id_prefix(quickstart):
    directory, _ = quickstart
    spans = file_spans(directory / ".reasonflow-otel" / "traces.jsonl")
    escalation = next(s for s in spans if s["name"] == "invoke_workflow EscalationFlow")
    trace_id = escalation["traceId"]

    shown = run(directory, CLI, "show", trace_id[:8].upper())

    assert shown.returncode == 0, shown.stderr
    assert DURATION.sub("<t>", shown.stdout).splitlines() == [
        f"trace {trace_id}",
        "invoke_workflow TriageFlow ✓ <t> → default",
        "├─ LoadInbox ✓ <t> → default",
        "├─ ClassifyTickets ✓ <t> → default",
        "│  ├─ ClassifyTickets item #0 ✓ <t>",
        "│  ├─ ClassifyTickets item #1 ✓ <t>",
        "│  └─ ClassifyTickets item #2 ✓ <t>",
        "├─ RouteTickets ✓ <t> → escalate",
        "├─ invoke_workflow EscalationFlow ✓ <t> → default",
        "│  ├─ PageOnCall ✓ <t> → default · 1 retry",
        "│  │    attempt 1 failed: PagerTimeoutError: pager gateway timed out",
        "│  └─ OpenIncident ✓ <t> → default",
        "├─ DraftReplies ✓ <t> → default",
        "│  ├─ DraftReplies item #0 ✓ <t>",
        "│  ├─ DraftReplies item #1 ✓ <t>",
        "│  └─ DraftReplies item #2 ✓ <t>",
        "└─ Summarize ✓ <t> → default",
        "TriageFlow: <t> total, 8 nodes run, 0 failed",
    ]


def test_stats_of_the_quickstart(quickstart):
    directory, _ = quickstart

    text = run(directory, CLI, "stats")
    machine = run(directory, CLI, "stats", "--json")

    assert text.returncode == machine.returncode == 0
    report = json.loads(machine.stdout)
    assert report["spans"] == 25
    assert {name: f["runs"] for name, f in report["flows"].items()} == {
        "EscalationFlow": 1,
        "TriageFlow": 2,
    }
    assert {name: (f["runs"], f["errors"]) for name, f in report["nodes"].items()} == {
        "ClassifyTickets": (2, 0),
        "DraftReplies": (2, 0),
        "LoadInbox": (2, 0),
        "OpenIncident": (1, 0),
        "PageOnCall": (1, 0),
        "RouteTickets": (2, 0),
        "Summarize": (2, 0),
    }
    assert all(f["cpu_s"] > 0 for f in report["nodes"].values())
    assert report["failures"] == {
        "PagerTimeoutError": {
            "failed_runs": 0,
            "retried_attempts": 1,
            "where": {"PageOnCall": 1},
            "example": "pager gateway timed out",
        }
    }
    lines = text.stdout.splitlines()
    assert lines[0] == "25 spans"
    assert "Bottlenecks (nodes by total time)" in lines
    assert (
        "  PagerTimeoutError: 0 failed runs, 1 retried attempt  in PageOnCall (1)  "
        '"pager gateway timed out"'
    ) in lines
    assert [line.split()[0] for line in lines[lines.index("") + 1 :][:3]] == [
        "Flows",
        "EscalationFlow",
        "TriageFlow",
    ]


# --- export -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_export_sends_every_recorded_span_with_ids_and_parents_intact(quickstart, protocol):
    directory, _ = quickstart
    written = file_spans(directory / ".reasonflow-otel" / "traces.jsonl")

    with running_otlp_receiver(protocol) as receiver:
        exported = run(
            directory, CLI, "export", "--endpoint", receiver.endpoint, "--protocol", protocol
        )
        received = receiver.spans()

    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == f"Sent 25 spans in 1 request to {receiver.endpoint}.\n"
    assert sorted(
        (s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name) for s in received
    ) == sorted((s["traceId"], s["spanId"], s.get("parentSpanId", ""), s["name"]) for s in written)
    page = next(span for span in received if span.name == "PageOnCall")
    assert [event.name for event in page.events] == [semconv.EVENT_RETRY]
    attributes = {a.key: a.value for a in page.attributes}
    assert attributes[semconv.NODE_MAX_RETRIES].int_value == 3
    assert attributes[semconv.NODE_ACTION].string_value == "default"


def test_export_batches_a_large_file_into_requests_of_at_most_1000_spans(tmp_path):
    path = tmp_path / "traces.jsonl"
    write_generated_file(path, lines=8, traces_per_line=30)  # 8 lines of 300 spans

    with running_otlp_receiver("http/protobuf") as receiver:
        exported = run(
            tmp_path,
            CLI,
            "export",
            "--file",
            str(path),
            "--endpoint",
            receiver.endpoint,
            "--protocol",
            "http/protobuf",
        )
        received, requests = receiver.spans(), receiver.trace_request_count

    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == f"Sent 2,400 spans in 3 requests to {receiver.endpoint}.\n"
    assert requests == 3
    assert len({(s.trace_id, s.span_id) for s in received}) == 2400


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_export_to_an_endpoint_nobody_answers_fails_in_one_line(quickstart, protocol):
    directory, _ = quickstart
    endpoint = f"http://127.0.0.1:{closed_port()}"

    exported = run(
        directory, CLI, "export", "--endpoint", endpoint, "--protocol", protocol, "--timeout", "5"
    )

    assert exported.returncode == 1
    assert exported.stdout == f"Sent 0 spans in 0 requests to {endpoint}.\n"
    assert exported.stderr.startswith("reasonflow-otel: error: export stopped: ")
    assert exported.stderr.count("\n") == 1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- doctor -------------------------------------------------------------------------------------


def test_doctor_reports_an_endpoint_that_does_not_answer(tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"

    report = run(tmp_path, CLI, "doctor", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)

    assert report.returncode == 1
    facts = dict(
        re.split(r"\s{2,}", line, maxsplit=1)
        for line in report.stdout.split("\n\n")[0].splitlines()
    )
    assert facts["traces exporters"] == "otlp_proto_grpc"
    assert facts["metrics exporters"] == "otlp_proto_grpc"
    assert facts["logs exporters"] == "none"
    assert facts["traces endpoint"] == f"{endpoint} (Connection refused)"
    assert facts["engines"] == (
        "pocketflow 0.0.3 (will be instrumented), burr 0.43.0 (will be instrumented), "
        "langgraph 1.2.22 (will be instrumented)"
    )
    assert facts["propagators"] == "tracecontext,baggage"
    assert "local trace file" not in facts  # nothing is written there
    problems = report.stdout.split("What to fix:\n")[1].splitlines()
    assert problems == [
        f"  1. Nothing answers at {endpoint} (Connection refused): start the Collector or "
        "backend, or fix OTEL_EXPORTER_OTLP_ENDPOINT; until then traces and metrics are dropped."
    ]


def test_doctor_finds_nothing_to_fix_in_a_good_setup(tmp_path):
    with running_otlp_receiver("grpc") as receiver:
        report = run(
            tmp_path,
            CLI,
            "doctor",
            OTEL_SERVICE_NAME="triage",
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.endpoint,
        )

    assert report.returncode == 0, report.stdout
    assert report.stdout.endswith("\nNothing to fix.\n")
    assert f"traces endpoint    {receiver.endpoint} (answers)" in report.stdout
    assert "service name       triage" in report.stdout


def test_doctor_gives_advice_without_failing(tmp_path):
    """The Quickstart's own defaults: no service name is advice, not a problem."""
    report = run(tmp_path, CLI, "doctor")

    assert report.returncode == 0, report.stdout
    assert report.stdout.endswith(
        "\nAdvice:\n"
        "  - Set OTEL_SERVICE_NAME to name the service; without it, `python app.py` is `app`.\n"
        "\nNothing to fix.\n"
    )


def test_doctor_lists_every_standard_value_the_preflight_repairs(tmp_path):
    report = run(
        tmp_path,
        CLI,
        "doctor",
        OTEL_SERVICE_NAME="triage",
        OTEL_TRACES_SAMPLER="bogus",
        OTEL_BSP_MAX_QUEUE_SIZE="100",
    )

    assert report.returncode == 1
    problems = report.stdout.split("What to fix:\n")[1].splitlines()
    assert problems[0].startswith("  1. ignoring OTEL_TRACES_SAMPLER='bogus' (expected one of ")
    assert problems[0].endswith("; using the default parentbased_traceidratio")
    assert problems[1:] == [
        "  2. OTEL_BSP_MAX_EXPORT_BATCH_SIZE=512 is above OTEL_BSP_MAX_QUEUE_SIZE=100, "
        "which the SDK refuses; using 100"
    ]


def test_doctor_shows_the_local_store_and_bad_settings(tmp_path):
    report = run(
        tmp_path, CLI, "doctor", OTEL_SERVICE_NAME="triage", REASONFLOW_OTEL_CONSOLE="maybe"
    )

    assert report.returncode == 1
    trace_file = tmp_path / ".reasonflow-otel" / "traces.jsonl"
    assert f"local trace file   {trace_file} (not created yet)" in report.stdout
    assert "traces exporters   otlp_json_file" in report.stdout
    assert report.stdout.split("What to fix:\n")[1] == (
        "  1. ignoring REASONFLOW_OTEL_CONSOLE='maybe' (expected true or false); "
        "using the default false\n"
    )


# --- Commands on chosen files (in this process) -------------------------------------------------


def otlp_span(
    trace_id: str,
    span_id: str,
    parent_id: str,
    name: str,
    start_ms: int,
    attributes: dict[str, Any],
    failed: bool = False,
) -> dict[str, Any]:
    """One span as the OTLP JSON file exporter writes it."""
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(1_700_000_000_000_000_000 + start_ms * 1_000_000),
        "endTimeUnixNano": str(1_700_000_000_000_000_000 + (start_ms + 5) * 1_000_000),
        "attributes": [
            {"key": key, "value": {"stringValue": value}} for key, value in attributes.items()
        ],
        "status": {"code": 2, "message": "boom"} if failed else {},
    }
    if parent_id:
        span["parentSpanId"] = parent_id
    return span


def flow(trace_id: str, span_id: str, parent_id: str, name: str, start_ms: int, failed=False):
    attributes = {
        semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_INVOKE_WORKFLOW,
        semconv.GEN_AI_WORKFLOW_NAME: name,
        semconv.NODE_KIND: "flow",
    }
    return otlp_span(
        trace_id, span_id, parent_id, f"invoke_workflow {name}", start_ms, attributes, failed
    )


def write_lines(path: Path, lines: Iterable[list[dict[str, Any]]]) -> None:
    with path.open("w") as file:
        for spans in lines:
            resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]}
            request = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}
            file.write(json.dumps(request) + "\n")


ALPHA, BETA, REQUEST = "aaaa" + "0" * 27 + "1", "aaaa" + "0" * 27 + "2", "bbbb" + "0" * 28


@pytest.fixture
def three_traces(tmp_path) -> Path:
    """Alpha (ok), then Beta (a node failed), then a request span around another Alpha."""
    path = tmp_path / "traces.jsonl"
    node = {semconv.NODE_KIND: "node"}
    write_lines(
        path,
        [
            [
                otlp_span(ALPHA, "0" * 15 + "2", "0" * 15 + "1", "Load", 1, node),
                flow(ALPHA, "0" * 15 + "1", "", "Alpha", 0),
            ],
            [
                otlp_span(BETA, "0" * 15 + "4", "0" * 15 + "3", "Fail", 11, node, failed=True),
                flow(BETA, "0" * 15 + "3", "", "Beta", 10, failed=True),
            ],
            [
                flow(REQUEST, "0" * 15 + "6", "0" * 15 + "5", "Alpha", 21),
                otlp_span(REQUEST, "0" * 15 + "5", "", "handle_request", 20, {}),
            ],
        ],
    )
    return path


def listed(capsys, *arguments: str) -> list[list[str]]:
    assert main(["traces", *arguments]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.startswith("TIME")
    return [row.split()[3:7] for row in rows if not row.startswith("(")]


def test_traces_filters_by_flow_and_status_and_limits(three_traces, capsys):
    file = ["--file", str(three_traces)]

    assert listed(capsys, *file) == [
        [REQUEST, "shop", "handle_request", "ok"],
        [BETA, "shop", "Beta", "error"],
        [ALPHA, "shop", "Alpha", "ok"],
    ]
    assert listed(capsys, *file, "--flow", "Alpha") == [
        [REQUEST, "shop", "handle_request", "ok"],
        [ALPHA, "shop", "Alpha", "ok"],
    ]
    assert listed(capsys, *file, "--status", "error") == [[BETA, "shop", "Beta", "error"]]
    assert main(["traces", *file, "--limit", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "(1 of 3 traces shown; --limit 0 shows all)"
    assert main(["traces", *file, "--flow", "Gamma"]) == 0
    assert capsys.readouterr().out == "No trace matches the filters.\n"


def test_an_ambiguous_prefix_lists_twenty_matches_and_counts_the_rest(tmp_path, capsys):
    path = tmp_path / "traces.jsonl"
    trace_ids = [f"ab{number:030x}" for number in range(23)]
    write_lines(path, [[flow(trace_id, "0" * 15 + "1", "", "Alpha", 0)] for trace_id in trace_ids])

    assert main(["show", "--file", str(path), "ab"]) == 1
    assert capsys.readouterr().err == (
        f"reasonflow-otel: error: ab matches 23 traces: {', '.join(trace_ids[:20])} and 3 more; "
        "give more digits\n"
    )


def test_show_needs_an_id_prefix_that_matches_one_trace(three_traces, capsys):
    file = ["--file", str(three_traces)]

    assert main(["show", *file, "aaaa"]) == 1
    assert capsys.readouterr().err == (
        f"reasonflow-otel: error: aaaa matches 2 traces: {ALPHA}, {BETA}; give more digits\n"
    )
    assert main(["show", *file, "cccc"]) == 1
    assert capsys.readouterr().err == (
        f"reasonflow-otel: error: no trace id in {three_traces} starts with cccc\n"
    )
    assert main(["show", *file, "not-an-id"]) == 1
    assert capsys.readouterr().err == (
        "reasonflow-otel: error: 'not-an-id' is not a trace id (up to 32 hex digits)\n"
    )
    assert main(["show", *file, "bbbb"]) == 0
    assert DURATION.sub("<t>", capsys.readouterr().out).splitlines() == [
        f"trace {REQUEST}",
        "handle_request ✓ <t>",
        "└─ invoke_workflow Alpha ✓ <t>",
        "handle_request: <t> total, 1 node run, 0 failed",
    ]


def test_a_missing_file_is_a_one_line_error_with_status_1(tmp_path, capsys):
    missing = tmp_path / "nothing.jsonl"
    for command in (["traces"], ["show", "abc"], ["stats"], ["export", "--endpoint", "x:1"]):
        assert main([*command, "--file", str(missing)]) == 1
        assert capsys.readouterr().err == (
            f"reasonflow-otel: error: no trace file at {missing} (run an instrumented program "
            "first, or pass --file / set REASONFLOW_OTEL_TRACE_FILE)\n"
        )


def test_an_empty_file_lists_nothing(tmp_path, capsys):
    empty = tmp_path / "traces.jsonl"
    empty.write_text("")

    assert main(["traces", "--file", str(empty)]) == 0
    assert capsys.readouterr().out == f"No traces in {empty}.\n"
    assert main(["stats", "--file", str(empty), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spans"] == 0


def test_a_corrupt_line_warns_once_and_the_rest_is_listed(three_traces, capsys):
    lines = three_traces.read_text().splitlines(keepends=True)
    three_traces.write_text(lines[0] + "garbage\n" + lines[1] + lines[2][:30])

    assert main(["traces", "--file", str(three_traces)]) == 0
    out, err = capsys.readouterr()
    assert [row.split()[3:7] for row in out.splitlines()[1:]] == [
        [BETA, "shop", "Beta", "error"],
        [ALPHA, "shop", "Alpha", "ok"],
    ]
    assert err == (
        f"reasonflow-otel: warning: {three_traces}: line 2 is not valid JSON "
        "(Expecting value at character 1); skipped\n"
        f"reasonflow-otel: warning: {three_traces}: 1 more unreadable line was skipped\n"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])

    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: reasonflow-otel {command} ")


@pytest.mark.parametrize(
    "arguments",
    [[], ["frobnicate"], ["traces", "--status", "maybe"], ["traces", "--limit", "-1"], ["show"]],
)
def test_usage_errors_exit_with_status_2(arguments, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(arguments)

    assert exit_.value.code == 2
    assert "usage: reasonflow-otel" in capsys.readouterr().err


def test_the_console_script_is_installed(tmp_path):
    completed = run(tmp_path, CLI, "--version")

    assert (completed.returncode, completed.stdout) == (0, "reasonflow-otel 0.1.0\n")


# --- A million spans ------------------------------------------------------------------------------

NODE_NAMES = ("Load", "Classify", "Route", "Page", "Open", "Draft", "Summarize", "Enrich", "Notify")


def generated_line(traces: int) -> str:
    """One export batch of ``traces`` traces of 10 spans (a flow and 9 nodes), as a template:
    ``TTTTTTTT`` and ``SSSSSSSS`` stand for a batch number in every trace and span id."""
    spans = []
    for trace in range(traces):
        trace_id = f"TTTTTTTT{trace:024x}"
        root = f"SSSSSSSS{trace * 10:08x}"
        spans.append(flow(trace_id, root, "", "TriageFlow", trace * 10))
        for index, name in enumerate(NODE_NAMES, start=1):
            failed = trace % 50 == 0 and name == "Page"
            attributes = {semconv.NODE_NAME: name, semconv.NODE_KIND: "node"}
            if failed:
                attributes[semconv.ERROR_TYPE] = "PagerTimeoutError"
            spans.append(
                otlp_span(
                    trace_id,
                    f"SSSSSSSS{trace * 10 + index:08x}",
                    root,
                    name,
                    trace * 10 + index,
                    attributes,
                    failed,
                )
            )
    request = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    return json.dumps(request, separators=(",", ":")) + "\n"


def write_generated_file(path: Path, lines: int, traces_per_line: int = 100) -> None:
    """``lines`` batches of ``traces_per_line`` traces, written directly as JSON lines."""
    template = generated_line(traces_per_line)
    with path.open("w") as file:
        for batch in range(lines):
            number = f"{batch:08x}"
            file.write(template.replace("TTTTTTTT", number).replace("SSSSSSSS", number))


# Runs the CLI and reports this process's own peak RSS (VmHWM: unlike ru_maxrss, it is not
# inherited from the parent across fork and exec).
PEAK_RSS_SCRIPT = """
import sys
from reasonflow_otel.local.cli import main
status = main(sys.argv[1:])
with open("/proc/self/status") as status_file:
    peak = next(line for line in status_file if line.startswith("VmHWM:"))
print(int(peak.split()[1]) * 1024, file=sys.stderr)
sys.exit(status)
"""


def stats_peak_rss(directory: Path, path: Path) -> tuple[dict[str, Any], int, float]:
    """``stats --json`` of a file in a child process: its report, peak RSS (bytes), seconds."""
    started = time.monotonic()
    completed = run(
        directory, sys.executable, "-c", PEAK_RSS_SCRIPT, "stats", "--json", "--file", str(path)
    )
    elapsed = time.monotonic() - started
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout), int(completed.stderr.split()[-1]), elapsed


def test_stats_over_a_million_spans_runs_in_flat_memory(tmp_path):
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    write_generated_file(small, lines=100)  # 100,000 spans
    write_generated_file(large, lines=1000)  # 1,000,000 spans

    small_report, small_rss, _ = stats_peak_rss(tmp_path, small)
    large_report, large_rss, seconds = stats_peak_rss(tmp_path, large)

    print(
        f"\nstats over 1,000,000 spans ({large.stat().st_size / 1e6:.0f} MB): "
        f"{seconds:.1f} s, peak RSS {large_rss / 1e6:.1f} MB "
        f"(100,000 spans: {small_rss / 1e6:.1f} MB)"
    )
    assert large_report["spans"] == 1_000_000
    assert large_report["flows"]["TriageFlow"]["runs"] == 100_000
    assert {name: f["runs"] for name, f in large_report["nodes"].items()} == {
        name: 100_000 for name in NODE_NAMES
    }
    assert large_report["failures"]["PagerTimeoutError"]["failed_runs"] == 2_000
    assert small_report["spans"] == 100_000
    assert large_rss - small_rss < 16 * 2**20, "memory grows with the number of spans"
