"""The local trace file we write: rotation by size, several writer processes, full disks.

Lines are appended whole under a directory lock; rotation renames ``traces.jsonl`` to ``.1``,
``.1`` to ``.2`` and drops the oldest; readers (the CLI, ``state``) read every generation.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.processes import BIN, clean_environment

from reasonflow_otel.local.store import generations, read_spans
from reasonflow_otel.local.trace_file import RotatingFile, rotated_path
from reasonflow_otel.local.viewer.index import TraceIndex

LINE_BYTES = 100


def tagged_line(writer: int, number: int) -> bytes:
    """A JSON line of exactly LINE_BYTES bytes naming its writer and number."""
    body = json.dumps({"writer": writer, "number": number, "pad": ""})
    return (body[:-2] + "x" * (LINE_BYTES - len(body) - 1) + '"}' + "\n").encode()


def lines_on_disk(path: Path) -> list[dict]:
    return [json.loads(line) for file in generations(path) if file.exists()
            for line in file.read_bytes().splitlines()]  # fmt: skip


def test_a_full_file_is_rotated_and_the_oldest_generation_dropped(tmp_path):
    path = tmp_path / "traces.jsonl"
    file = RotatingFile(path, max_bytes=1000, backups=2)
    for number in range(95):
        file.append(tagged_line(0, number))
    file.close()

    assert [p.name for p in generations(path)] == ["traces.jsonl.2", "traces.jsonl.1", path.name]
    assert not rotated_path(path, 3).exists()
    assert all(p.stat().st_size <= 1000 for p in generations(path))
    # The newest lines, in order, with nothing lost between the generations kept.
    assert [line["number"] for line in lines_on_disk(path)] == list(range(70, 95))


def test_no_backups_means_the_full_file_starts_again(tmp_path):
    path = tmp_path / "traces.jsonl"
    file = RotatingFile(path, max_bytes=1000, backups=0)
    for number in range(25):
        file.append(tagged_line(0, number))

    assert [p.name for p in generations(path)] == [path.name]
    assert [line["number"] for line in lines_on_disk(path)] == list(range(20, 25))


def write_lines(path: Path, writer: int, count: int) -> None:
    file = RotatingFile(path, max_bytes=5000, backups=1000)
    for number in range(count):
        file.append(tagged_line(writer, number))
    file.close()


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_processes_sharing_a_file_tear_lose_and_double_rotate_nothing(tmp_path, start_method):
    path = tmp_path / "traces.jsonl"
    processes = multiprocessing.get_context(start_method)
    writers = [processes.Process(target=write_lines, args=(path, n, 400)) for n in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
        assert writer.exitcode == 0

    lines = lines_on_disk(path)  # every line whole: json.loads would fail on a torn one
    assert sorted((line["writer"], line["number"]) for line in lines) == [
        (writer, number) for writer in range(4) for number in range(400)
    ]
    rotated = generations(path)[:-1]
    assert (
        len(rotated) == 1600 * LINE_BYTES // 5000 - 1 or len(rotated) == 1600 * LINE_BYTES // 5000
    )
    # Rotated once each time it filled: every rotated file is full, none holds a stray line.
    assert {file.stat().st_size for file in rotated} == {5000}


APP = textwrap.dedent(
    """
    import sys
    from pocketflow import Flow, Node

    import reasonflow_otel

    reasonflow_otel.instrument()


    class Answer(Node):
        def exec(self, _):
            return "x" * 1000

        def post(self, shared, prep_res, exec_res):
            shared["answers"] = shared.get("answers", 0) + 1


    class Ask(Flow):
        pass


    shared = {}
    for _ in range(int(sys.argv[1])):
        first, second, third = Answer(), Answer(), Answer()
        first >> second >> third
        Ask(start=first).run(shared)
    print(shared["answers"])
    sys.exit(3)
    """
)


def run_app(tmp_path: Path, runs: int, **settings: str) -> subprocess.CompletedProcess[str]:
    app = tmp_path / "app.py"
    app.write_text(APP)
    return subprocess.run(
        [sys.executable, str(app), str(runs)],
        cwd=tmp_path,
        env=clean_environment(**settings),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ten_megabytes_of_traces_keep_about_six_on_disk_and_the_cli_lists_rotated_runs(tmp_path):
    path = tmp_path / "traces.jsonl"
    completed = run_app(
        tmp_path,
        2000,
        REASONFLOW_OTEL_TRACE_FILE=str(path),
        REASONFLOW_OTEL_TRACE_FILE_MAX_BYTES="2000000",
        REASONFLOW_OTEL_TRACE_FILE_BACKUPS="2",
        REASONFLOW_OTEL_CAPTURE="exec",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    assert completed.returncode == 3, completed.stderr
    kept = generations(path)
    written = sum(len(line) for file in kept for line in file.read_bytes().splitlines())

    assert [p.name for p in kept] == ["traces.jsonl.2", "traces.jsonl.1", "traces.jsonl"]
    assert sum(p.stat().st_size for p in kept) <= 6_000_000
    flows_kept = {span.trace_id for span in read_spans(path) if span.parent_id == ""}
    assert written / len(flows_kept) * 2000 > 10_000_000  # the app wrote 10 MB or more
    oldest_kept = {span.trace_id for span in read_spans(kept[0]) if span.parent_id == ""}
    listed = subprocess.run(
        [str(BIN / "reasonflow-otel"), "traces", "--limit", "0", "--file", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    listed_ids = {row.split()[3] for row in listed.stdout.splitlines()[1:] if row.split()}
    assert oldest_kept <= listed_ids
    assert len(listed_ids & flows_kept) == len(flows_kept)


def test_a_trace_file_on_a_full_disk_leaves_the_app_alone_with_one_warning(tmp_path):
    bare = run_app(tmp_path, 20, OTEL_SDK_DISABLED="true")
    full = run_app(tmp_path, 20, REASONFLOW_OTEL_TRACE_FILE="/dev/full")

    assert (full.stdout, full.returncode) == (bare.stdout, bare.returncode) == ("60\n", 3)
    assert bare.stderr == ""
    announcement, *ours = full.stderr.splitlines()
    assert announcement.startswith("reasonflow-otel: traces are written to /dev/full")
    assert ours == [
        "reasonflow-otel: warning: cannot write /dev/full (No space left on device); telemetry "
        "for it is dropped and counted until it can be written (said once)"
    ]


def spans_line(trace_id: int, name: str) -> bytes:
    """One OTLP/JSON line holding one root span of trace ``trace_id``."""
    span = {
        "traceId": f"{trace_id:032x}",
        "spanId": f"{trace_id:016x}",
        "name": name,
        "startTimeUnixNano": str(trace_id * 1000),
        "endTimeUnixNano": str(trace_id * 1000 + 500),
        "attributes": [{"key": "pad", "value": {"stringValue": "x" * 300}}],
    }
    request = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    return (json.dumps(request) + "\n").encode()


def test_the_viewer_indexes_rotated_files_once_and_forgets_dropped_ones(tmp_path):
    path = tmp_path / "traces.jsonl"
    file = RotatingFile(path, max_bytes=2000, backups=2)
    index = TraceIndex(path)

    def write(first: int, last: int) -> set[str]:
        for trace_id in range(first, last):
            file.append(spans_line(trace_id, f"run {trace_id}"))
        index.refresh()
        return {trace.trace_id for trace in index.newest_first()}

    listed = write(1, 6)  # one file, then rotated once: .1 and the current file
    assert len(generations(path)) == 2
    assert listed == {f"{n:032x}" for n in range(1, 6)}
    [oldest] = index.matching(f"{1:032x}")
    assert [span.name for span in index.spans_of(oldest)] == ["run 1"]  # now in traces.jsonl.1

    listed = write(6, 30)  # generations dropped: what is left is indexed anew
    kept = {span.trace_id for span in read_spans(path)}
    assert listed == kept and f"{1:032x}" not in kept
    assert index.state().spans == len(kept)
    assert index.state().size_bytes == sum(p.stat().st_size for p in generations(path))


def test_doctor_shows_the_rotation_in_effect(tmp_path):
    path = tmp_path / "traces.jsonl"
    RotatingFile(path, max_bytes=150, backups=3).append(tagged_line(0, 0))
    RotatingFile(path, max_bytes=150, backups=3).append(tagged_line(0, 1))  # rotates once
    report = subprocess.run(
        [str(BIN / "reasonflow-otel"), "doctor"],
        env=clean_environment(
            REASONFLOW_OTEL_TRACE_FILE=str(path),
            REASONFLOW_OTEL_TRACE_FILE_MAX_BYTES="150",
            REASONFLOW_OTEL_TRACE_FILE_BACKUPS="3",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert "rotation           at 150 bytes, 3 rotated files kept (1 now)\n" in report.stdout
