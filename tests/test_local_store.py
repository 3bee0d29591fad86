"""The local store reads back what the upstream OTLP JSON file exporter wrote, line by line,
and gets past whatever else it finds in a file with one warning."""

from __future__ import annotations

import json
import math
import random

import pocketflow
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from reasonflow_otel import semconv
from reasonflow_otel.local.console import span_record
from reasonflow_otel.local.stats import DurationSketch, Stats
from reasonflow_otel.local.store import (
    log_file_for,
    prepare_for_append,
    read_spans,
)
from reasonflow_otel.local.trace_file import TraceFileExporter

CUT_SHORT = (
    "is cut short (the file ends mid-line, as when the program writing it is stopped "
    "mid-write); skipped"
)


class Flaky(pocketflow.Node):
    """Fails its first attempt, then succeeds and takes the "done" action."""

    def __init__(self) -> None:
        super().__init__(max_retries=2)
        self.calls = 0

    def exec(self, prep_res):
        self.calls += 1
        if self.calls == 1:
            raise TimeoutError("slow model")
        return "ok"

    def post(self, shared, prep_res, exec_res):
        return "done"


class Broken(pocketflow.Node):
    def exec(self, prep_res):
        raise KeyError("missing")


def run_flaky_then_broken() -> None:
    flaky = Flaky()
    flaky - "done" >> Broken()
    with pytest.raises(KeyError):
        pocketflow.Flow(start=flaky).run({})


def file_lines(telemetry, tmp_path) -> list[str]:
    """One line per span (each span ends alone), written by our trace file exporter."""
    path = tmp_path / "lines.jsonl"
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(trace_file_exporter(path)))
    run_flaky_then_broken()
    return path.read_text().splitlines(keepends=True)


def trace_file_exporter(path):
    return TraceFileExporter(path, max_bytes=10**9, backups=0)


def read_all(path) -> tuple[list, list[str]]:
    warnings: list[str] = []
    return list(read_spans(path, warnings.append)), warnings


def test_spans_read_back_as_the_sdk_recorded_them(telemetry, tmp_path):
    path = tmp_path / "traces.jsonl"
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(trace_file_exporter(path)))

    run_flaky_then_broken()

    spans, warnings = read_all(path)
    assert warnings == []
    assert spans == [span_record(span) for span in telemetry.spans()]
    by_name = {span.name: span for span in spans}
    flow, flaky, broken = (by_name[n] for n in ("invoke_workflow Flow(Flaky)", "Flaky", "Broken"))
    assert flow.parent_id == ""
    assert flaky.parent_id == broken.parent_id == flow.span_id
    assert len({span.trace_id for span in spans}) == 1
    assert (flaky.failed, flaky.attributes[semconv.NODE_ACTION]) == (False, "done")
    assert [(e.name, e.attributes[semconv.ERROR_TYPE]) for e in flaky.events] == [
        (semconv.EVENT_RETRY, "TimeoutError")
    ]
    assert (broken.failed, broken.status_message) == (True, "KeyError: 'missing'")
    assert flow.flow_name == "Flow(Flaky)" and not flow.is_node
    assert flaky.is_node and flaky.flow_name is None


def test_a_corrupt_line_is_skipped_with_its_number(telemetry, tmp_path):
    first, second, third = file_lines(telemetry, tmp_path)
    path = tmp_path / "traces.jsonl"
    path.write_text(first + '{"resourceSpans": [\n' + second + third)

    spans, warnings = read_all(path)

    assert [span.name for span in spans] == ["Flaky", "Broken", "invoke_workflow Flow(Flaky)"]
    assert warnings == [
        f"{path}: line 2 is not valid JSON (Expecting value at character 21); skipped"
    ]


def test_a_line_cut_short_at_the_end_is_skipped(telemetry, tmp_path):
    first, second, third = file_lines(telemetry, tmp_path)
    path = tmp_path / "traces.jsonl"
    path.write_text(first + second + third[: len(third) // 2])

    spans, warnings = read_all(path)

    assert [span.name for span in spans] == ["Flaky", "Broken"]
    assert warnings == [f"{path}: line 3 {CUT_SHORT}"]


def test_the_next_run_appends_after_a_cut_line_without_losing_its_spans(telemetry, tmp_path):
    first, second, third = file_lines(telemetry, tmp_path)
    path = tmp_path / "traces.jsonl"
    path.write_text(first + second[:40])

    prepare_for_append(path)
    with path.open("a") as file:
        file.write(third)

    spans, warnings = read_all(path)
    assert [span.name for span in spans] == ["Flaky", "invoke_workflow Flow(Flaky)"]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{path}: line 2 is not valid JSON (")
    assert path.read_text().count("\n") == 3


def test_prepare_for_append_creates_the_directory_and_leaves_clean_files_alone(tmp_path):
    path = tmp_path / "new" / "traces.jsonl"
    prepare_for_append(path)
    assert path.parent.is_dir() and not path.exists()
    assert (path.parent / ".gitignore").read_text() == "*\n"  # payloads stay out of git

    path.write_text('{"resourceSpans": []}\n')
    prepare_for_append(path)
    assert path.read_text() == '{"resourceSpans": []}\n'


def test_a_directory_that_exists_gets_no_gitignore(tmp_path):
    prepare_for_append(tmp_path / "traces.jsonl")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_file_has_no_spans_and_no_warnings(tmp_path, content):
    path = tmp_path / "traces.jsonl"
    path.write_text(content)

    assert read_all(path) == ([], [])


@pytest.mark.parametrize(
    ("content", "first_warning", "more"),
    [
        (
            "time,flow,status\n12:00,Triage,ok\n12:01,Triage,error\n",
            "line 1 is not valid JSON (Expecting value at character 1)",
            2,
        ),
        (
            '{"resourceLogs": []}\n',
            "line 1 holds OTLP logs, not traces",
            0,
        ),
        (
            '{"level": "info", "msg": "started"}\n{"level": "info", "msg": "done"}\n',
            "line 1 is not OTLP traces data (no 'resourceSpans'; keys: level, msg)",
            1,
        ),
        ("[1, 2, 3]\n", "line 1 is not OTLP traces data (a JSON list)", 0),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\n", "line 1 is not valid JSON", 2),
        (
            '{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "AAECAw==", '
            '"spanId": "0001020304050607", "name": "x"}]}]}]}\n',
            "line 1 has malformed traces data (trace id 'AAECAw==' is not 32 hex digits)",
            0,
        ),
    ],
    ids=["csv", "otlp-logs", "json-logs", "json-array", "binary", "base64-ids"],
)
def test_a_foreign_file_gives_one_warning_and_a_count(tmp_path, content, first_warning, more):
    path = tmp_path / "traces.jsonl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)

    spans, warnings = read_all(path)

    assert spans == []
    assert warnings[0].startswith(f"{path}: {first_warning}")
    assert warnings[0].endswith("; skipped")
    rest = [f"{path}: {more} more unreadable line{' was' if more == 1 else 's were'} skipped"]
    assert warnings[1:] == (rest if more else [])


def test_a_missing_file_fails_at_the_call(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_spans(tmp_path / "nothing.jsonl")


def test_the_log_file_sits_beside_the_trace_file(tmp_path):
    assert log_file_for(tmp_path / "traces.jsonl") == tmp_path / "traces.logs.jsonl"
    assert log_file_for(tmp_path / "run-1.json") == tmp_path / "run-1.logs.json"


# --- Stats ----------------------------------------------------------------------------------------


def test_sketch_quantiles_are_within_one_percent_of_the_exact_ones():
    rng = random.Random(5)
    values = [rng.lognormvariate(-3, 1.5) for _ in range(50_000)] + [0.0] * 10
    sketch = DurationSketch()
    for value in values:
        sketch.add(value)
    ordered = sorted(values)

    for q in (0.01, 0.5, 0.95, 0.99):
        exact = ordered[math.ceil(q * len(ordered)) - 1]
        assert sketch.quantile(q) == pytest.approx(exact, rel=0.01)
    assert (sketch.min, sketch.max, sketch.count) == (0.0, ordered[-1], 50_010)
    assert sketch.quantile(0.0001) == 0.0
    assert sketch.quantile(1.0) == ordered[-1]


def test_sketch_quantiles_of_a_few_runs_use_the_nearest_rank():
    sketch = DurationSketch()
    for value in (0.2, 0.1):
        sketch.add(value)

    assert sketch.quantile(0.5) == pytest.approx(0.1, rel=0.01)
    assert sketch.quantile(0.95) == pytest.approx(0.2, rel=0.01)
    assert DurationSketch().quantile(0.5) == 0.0


def test_stats_count_runs_errors_retries_and_failures_per_node_and_flow(telemetry):
    for _ in range(3):
        run_flaky_then_broken()

    report = Stats().add_all(span_record(span) for span in telemetry.spans()).report()

    assert report["spans"] == 9
    assert set(report["flows"]) == {"Flow(Flaky)"}
    assert set(report["nodes"]) == {"Flaky", "Broken"}
    flow, flaky, broken = (
        report["flows"]["Flow(Flaky)"],
        report["nodes"]["Flaky"],
        report["nodes"]["Broken"],
    )
    assert (flow["runs"], flow["errors"], flow["error_rate"]) == (3, 3, 1.0)
    assert (flaky["runs"], flaky["errors"], broken["runs"], broken["errors"]) == (3, 0, 3, 3)
    assert flaky["min_s"] <= flaky["p50_s"] <= flaky["p95_s"] <= flaky["max_s"]
    assert flaky["cpu_s"] >= 0 and flow["cpu_s"] is None
    assert report["failures"] == {
        "KeyError": {
            "failed_runs": 3,
            "retried_attempts": 0,
            "where": {"Broken": 3},
            "example": "'missing'",
        },
        "TimeoutError": {
            "failed_runs": 0,
            "retried_attempts": 3,
            "where": {"Flaky": 3},
            "example": "slow model",
        },
    }
    node_time = flaky["total_s"] + broken["total_s"]
    assert [entry["node"] for entry in report["bottlenecks"]] == sorted(
        ["Flaky", "Broken"], key=lambda name: -report["nodes"][name]["total_s"]
    )
    assert sum(entry["share"] for entry in report["bottlenecks"]) == pytest.approx(1.0)
    assert report["bottlenecks"][0]["total_s"] == max(flaky["total_s"], broken["total_s"])
    assert node_time > 0
    json.dumps(report)  # machine output must serialise as is
