"""Reload a prior Burr state from the local trace file: load_state and `reasonflow-otel state`."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from support.processes import BIN, REPOSITORY, clean_environment, run_program

from reasonflow_otel import load_state
from reasonflow_otel.local.state import StateError
from reasonflow_otel.local.store import read_spans

EXAMPLE = REPOSITORY / "examples" / "burr_research_assistant.py"
TRACES = Path(".reasonflow-otel") / "traces.jsonl"


def example_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("burr_research_assistant", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(directory: Path, **settings: str) -> tuple[Path, list[str]]:
    """The example under opentelemetry-instrument; its trace file and its answers."""
    completed = run_program(
        [str(BIN / "opentelemetry-instrument"), sys.executable, str(EXAMPLE)],
        directory,
        **settings,
    )
    answers = [line[3:] for line in completed.stdout.splitlines() if line.startswith("A: ")]
    return directory / TRACES, answers


def failed_run(path: Path) -> str:
    """The trace of the first question's first run, where the citation service timed out."""
    (trace_id,) = {
        span.trace_id for span in read_spans(path) if span.name == "cite" and span.failed
    }
    return trace_id


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> tuple[Path, list[str]]:
    return run_example(tmp_path_factory.mktemp("captured"), REASONFLOW_OTEL_CAPTURE="state")


def test_a_loaded_state_rebuilds_an_app_that_continues_like_the_original(captured):
    path, answers = captured
    trace_id = failed_run(path)
    saved = load_state(trace_id, step=1, file=path)
    assert saved.next_action == "cite"
    assert sorted(saved.state) == ["facts", "queries", "question"]
    example = example_module()
    service = example.CitationService()
    service.calls = 1  # the original run's timeout is behind us
    app = example.build(saved.state["question"], service, saved.state, saved.next_action)
    app.run(halt_before=["draft"])
    _, stream = app.stream_result(halt_after=["draft"])
    words = [chunk["word"] for chunk in stream]
    _, state = stream.get()
    assert f"{state['answer']} ({len(words)} words streamed)" == answers[0]


def test_without_a_step_the_last_step_that_succeeded_is_loaded(captured):
    path, _ = captured
    trace_id = failed_run(path)
    assert load_state(trace_id[:8], file=path) == load_state(trace_id, step=1, file=path)
    assert load_state(trace_id, step=0, file=path).next_action == "research"
    with pytest.raises(StateError) as raised:
        load_state(trace_id, step=2, file=path)
    assert str(raised.value) == "step 2 (cite) failed: it left no state after it"


def test_the_state_command_prints_the_state_as_json(captured):
    path, _ = captured
    trace_id = failed_run(path)
    completed = cli("state", trace_id[:12], "--step", "0", "--file", str(path))
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == load_state(trace_id, step=0, file=path).state
    assert completed.stderr == "next action: research\n"


def test_a_state_recorded_without_capture_is_a_clear_error(tmp_path):
    path, _ = run_example(tmp_path)
    with pytest.raises(StateError) as raised:
        load_state(failed_run(path), step=0, file=path)
    assert str(raised.value) == (
        "no state was recorded for step 0: state capture was off "
        "(set REASONFLOW_OTEL_CAPTURE=state and run again)"
    )


def test_a_truncated_state_is_a_clear_error(tmp_path):
    path, _ = run_example(
        tmp_path, REASONFLOW_OTEL_CAPTURE="state", REASONFLOW_OTEL_CAPTURE_MAX_LENGTH="40"
    )
    with pytest.raises(StateError) as raised:
        load_state(failed_run(path), step=1, file=path)
    assert str(raised.value) == (
        "the state after step 1 was truncated at 40 characters "
        "(raise REASONFLOW_OTEL_CAPTURE_MAX_LENGTH and run again)"
    )


def test_missing_traces_and_steps_are_clear_errors(captured, tmp_path):
    path, _ = captured
    trace_id = failed_run(path)
    with pytest.raises(StateError, match=r"^no trace file at "):
        load_state(trace_id, file=tmp_path / "missing.jsonl")
    with pytest.raises(StateError, match=re.escape(f"no trace id in {path} starts with 0000")):
        load_state("0000", file=path)
    with pytest.raises(StateError, match=f"^trace {trace_id} has no step 7; its steps are 0 to 2"):
        load_state(trace_id, step=7, file=path)
    with pytest.raises(StateError, match="is not a trace id"):
        load_state("not-hex", file=path)
    completed = cli("state", "0000", "--file", str(path))
    assert (completed.returncode, completed.stdout) == (1, "")
    assert completed.stderr == f"reasonflow-otel: error: no trace id in {path} starts with 0000\n"


def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "reasonflow-otel"), *arguments],
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_example_answers_the_same_bare_and_instrumented(captured, tmp_path):
    _, answers = captured
    bare = run_program([sys.executable, str(EXAMPLE)], tmp_path)
    assert [line[3:] for line in bare.stdout.splitlines() if line.startswith("A: ")] == answers
    assert len(answers) == 2
