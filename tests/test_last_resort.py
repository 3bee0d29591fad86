"""Our warnings reach stderr when the only other handler is OpenTelemetry's (the logging
instrumentation puts one on the root logger), and are never printed twice.

Each case runs a small app in a fresh process with the default local trace file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support.processes import run_program

APP = """
import logging
import sys

if "--configure-logging" in sys.argv:
    logging.basicConfig(format="app-format %(message)s")

import reasonflow_otel

reasonflow_otel.instrument()
logging.getLogger("reasonflow_otel.sdk.delivery").warning("reasonflow-otel: 3 spans dropped")
logging.getLogger("reasonflow_otel.sdk.delivery").info("reasonflow-otel: not a warning")
"""


def our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.endswith(("spans dropped", "a warning"))]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ([], ["reasonflow-otel: 3 spans dropped"]),  # as Python's last resort prints it
        (["--configure-logging"], ["app-format reasonflow-otel: 3 spans dropped"]),
    ],
)
def test_a_warning_of_ours_is_shown_once(
    tmp_path: Path, arguments: list[str], expected: list[str]
) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    completed = run_program([sys.executable, str(app), *arguments], tmp_path)
    assert our_lines(completed.stderr) == expected
