"""The examples run plainly, with no network or API key, and always print the same."""

from __future__ import annotations

import sys

from support.processes import REPOSITORY, run_program

SUPPORT_TRIAGE_OUTPUT = """\
morning inbox: 3 tickets, 1 urgent, 3 replies drafted; incident INC-100 opened, on-call paged \
(PAGE-2)
  #100: We are on it; an engineer has been paged.
  #101: Thanks for writing in about how-to; here is how...
  #102: Thanks for writing in about billing; here is how...
evening inbox: 2 tickets, 0 urgent, 2 replies drafted
  #100: Thanks for writing in about how-to; here is how...
  #101: Thanks for writing in about billing; here is how...
"""


def test_support_triage_runs_plainly_and_deterministically(tmp_path):
    example = REPOSITORY / "examples" / "support_triage.py"

    completed = run_program([sys.executable, str(example)], tmp_path)

    assert completed.stdout == SUPPORT_TRIAGE_OUTPUT
    assert completed.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_support_triage_leaves_telemetry_to_the_user():
    """Zero-code: the example must not set up OpenTelemetry itself."""
    source = (REPOSITORY / "examples" / "support_triage.py").read_text()

    assert "reasonflow_otel" not in source
    assert "opentelemetry" not in source.replace("opentelemetry-instrument", "")
