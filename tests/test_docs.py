"""The README stays the front door: every setting and metric is documented, and CI runs
the README's own test command."""

from __future__ import annotations

import re
from pathlib import Path

from reasonflow_otel import semconv
from reasonflow_otel.settings import setting_docs

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
# The reference pages under docs/ with the README: where settings and metrics are documented.
DOCUMENTATION = README + "".join(
    page.read_text(encoding="utf-8") for page in sorted((ROOT / "docs").glob("*.md"))
)


def _quickstart_commands() -> list[str]:
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", quickstart)


def test_quickstart_is_exactly_two_commands() -> None:
    commands = _quickstart_commands()
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)
    install_and_run, test = commands
    assert "opentelemetry-instrument" in install_and_run
    assert "examples/" in install_and_run
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert _quickstart_commands()[1] in ci_lines


def test_every_setting_is_in_the_readme() -> None:
    missing = [name for name, _, _ in setting_docs() if f"`{name}`" not in DOCUMENTATION]
    assert missing == []


def test_every_metric_is_in_the_readme() -> None:
    metrics = [value for name, value in vars(semconv).items() if name.startswith("METRIC_")]
    assert semconv.METRIC_NODE_DURATION in metrics
    missing = [
        name for name in metrics if isinstance(name, str) and f"`{name}`" not in DOCUMENTATION
    ]
    assert missing == []
