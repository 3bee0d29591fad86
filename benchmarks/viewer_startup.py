"""Viewer startup: ``reasonflow-otel ui`` on a 100,000-span trace file.

The file is built from a real run of ``examples/support_triage.py`` under
``opentelemetry-instrument``: its traces are copied with fresh trace and span ids, a minute
apart, into lines of 512 spans (the batch size of the SDK's BatchSpanProcessor), until the
file holds the requested number of spans. The viewer then starts in a fresh process; the
figures are the time from starting it to the first ``/api/traces`` answer (given at once,
from what is indexed so far), to the whole file indexed (read in the background), the answers
afterwards (``/api/traces``, one trace, ``/api/stats``), and the process's peak resident
memory. Against it, measured in the same run: ``reasonflow-otel traces`` (the CLI's one
pass over the file, a whole process too) on the same file, and the ratio.

    python benchmarks/viewer_startup.py [--spans 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXAMPLE = REPOSITORY / "examples" / "support_triage.py"
BATCH = 512
URL = re.compile(rb"http://\S+/")


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "REASONFLOW_OTEL_"))}


def recorded_traces(directory: Path) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(resource, spans) of each trace of one real instrumented run of the example."""
    subprocess.run(
        [str(BIN / "opentelemetry-instrument"), sys.executable, str(EXAMPLE)],
        cwd=directory,
        env=clean_environment(),
        capture_output=True,
        check=True,
    )
    traces: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for line in (directory / ".reasonflow-otel" / "traces.jsonl").read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    entry = traces.setdefault(span["traceId"], (resource_spans["resource"], []))
                    entry[1].append(span)
    return list(traces.values())


def copy_of(spans: list[dict[str, Any]], number: int, shift_ns: int) -> list[dict[str, Any]]:
    """The spans of one trace with ids made from ``number`` and times moved by ``shift_ns``."""
    trace_id = f"{number:032x}"
    ids = {span["spanId"]: f"{number:08x}{index:08x}" for index, span in enumerate(spans)}
    copies = []
    for span in spans:
        copy = dict(span, traceId=trace_id, spanId=ids[span["spanId"]])
        if "parentSpanId" in span:
            copy["parentSpanId"] = ids.get(span["parentSpanId"], span["parentSpanId"])
        copy["startTimeUnixNano"] = str(int(span["startTimeUnixNano"]) + shift_ns)
        copy["endTimeUnixNano"] = str(int(span["endTimeUnixNano"]) + shift_ns)
        copies.append(copy)
    return copies


def build_file(path: Path, span_count: int, directory: Path) -> int:
    """Write at least ``span_count`` spans; returns how many traces were written."""
    templates = recorded_traces(directory)
    resource, _ = templates[0]
    written = number = 0
    start = time.time_ns() - 60 * 10**9 * (span_count // 10)
    pending: list[dict[str, Any]] = []
    with path.open("w") as file:
        while written < span_count:
            _, spans = templates[number % len(templates)]
            pending += copy_of(spans, number + 1, start + number * 60 * 10**9 - _first(spans))
            written += len(spans)
            number += 1
            while len(pending) >= BATCH or (pending and written >= span_count):
                batch, pending = pending[:BATCH], pending[BATCH:]
                scope_spans = [{"spans": batch}]
                request = {"resourceSpans": [{"resource": resource, "scopeSpans": scope_spans}]}
                file.write(json.dumps(request, separators=(",", ":")) + "\n")
    return number


def _first(spans: list[dict[str, Any]]) -> int:
    return min(int(span["startTimeUnixNano"]) for span in spans)


def get(url: str) -> tuple[float, Any]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        body = json.load(response)
    return time.perf_counter() - started, body


def measure_viewer(path: Path) -> dict[str, float]:
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(BIN / "reasonflow-otel"), "ui", "--file", str(path), "--port", "0", "--no-browser"],
        stdout=subprocess.PIPE,
        env=clean_environment(),
    )
    try:
        assert process.stdout is not None
        match = URL.search(process.stdout.readline())
        if match is None:
            raise RuntimeError("the viewer did not print its URL")
        base = match.group().decode()
        listening = time.perf_counter() - started
        first, listed = get(base + "api/traces")
        first_total = time.perf_counter() - started
        while listed["file"]["indexing"]:
            time.sleep(0.05)
            _, listed = get(base + "api/traces")
        indexed = time.perf_counter() - started
        again, _ = get(base + "api/traces")
        one, _ = get(base + "api/traces/" + listed["traces"][0]["trace_id"])
        stats, _ = get(base + "api/stats")
        peak = _peak_memory_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "process start to URL printed, s": listening,
        "start to first /api/traces answer, s": first_total,
        "  that answer, s": first,
        "start to whole file indexed (background), s": indexed,
        "/api/traces once indexed, s": again,
        "one trace, s": one,
        "/api/stats, s": stats,
        "peak resident memory, MiB": peak,
    }


def _peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_cli_listing(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "reasonflow-otel"), "traces", "--file", str(path), "--limit", "1"],
        env=clean_environment(),
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        path = directory / "traces-large.jsonl"
        traces = build_file(path, arguments.spans, directory)
        size = path.stat().st_size / 2**20
        print(f"file: {arguments.spans:,} spans, {traces:,} traces, {size:.1f} MiB")
        figures = measure_viewer(path)
        for name, value in figures.items():
            print(f"{name}: {value:.3f}")
        listing = measure_cli_listing(path)
        print(f"reasonflow-otel traces (CLI, whole process), s: {listing:.3f}")
        indexed = figures["start to whole file indexed (background), s"]
        print(f"whole file indexed / CLI traces: {indexed / listing:.2f}")


if __name__ == "__main__":
    main()
