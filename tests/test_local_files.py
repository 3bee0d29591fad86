"""The local store leaves only what is useful behind: no empty files, no notice when
nothing is traced, and a directory that keeps itself out of git."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support.processes import BIN, run_program

from reasonflow_otel import ENGINES

# A flow run, with no logging: the app the store is judged on.
FLOW_SCRIPT = "import pocketflow\npocketflow.Flow(start=pocketflow.Node()).run({})\n"
INSTRUMENTED_SCRIPT = "import reasonflow_otel\nreasonflow_otel.instrument()\n" + FLOW_SCRIPT
LAUNCHERS = {
    "instrument()": [sys.executable, "-c", INSTRUMENTED_SCRIPT],
    "opentelemetry-instrument": [
        str(BIN / "opentelemetry-instrument"),
        sys.executable,
        "-c",
        FLOW_SCRIPT,
    ],
}


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_run_without_logs_leaves_the_trace_file_and_a_gitignore(launcher, tmp_path: Path):
    completed = run_program(LAUNCHERS[launcher], tmp_path)

    store = tmp_path / ".reasonflow-otel"
    assert sorted(path.name for path in store.iterdir()) == [".gitignore", "traces.jsonl"]
    assert (store / ".gitignore").read_text() == "*\n"
    assert completed.stderr.startswith(f"reasonflow-otel: traces are written to {store}")


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize(
    "disabled",
    [
        {"OTEL_SDK_DISABLED": "true"},
        {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"},
        # Every engine there is, the decorators and by-name tracing included.
        {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ",".join(ENGINES)},
    ],
    ids=lambda environ: ",".join(f"{key}={value}" for key, value in environ.items()),
)
def test_with_the_instrumentation_disabled_nothing_is_printed_or_written(
    launcher, disabled: dict[str, str], tmp_path: Path
):
    completed = run_program(LAUNCHERS[launcher], tmp_path, **disabled)

    assert completed.stderr == ""
    assert list(tmp_path.iterdir()) == []
