"""The default service.name: the program's own name unless the user named the service.

Each case runs a real program in a fresh process (a script, a package run with ``-m``, under
``opentelemetry-instrument`` or calling ``instrument()``) and reads the service name back from
the trace file it wrote.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from support.processes import BIN, run_program

INSTRUMENT = str(BIN / "opentelemetry-instrument")
FLOW = """\
from pocketflow import Flow, Node


class Greet(Node):
    def exec(self, prep_res):
        return "hello"


Flow(start=Greet()).run({})
"""


def write_program(directory: Path, *, calls_instrument: bool) -> None:
    """``app.py`` and the package ``mypkg`` (run with ``-m``), each running one flow."""
    source = "import reasonflow_otel\nreasonflow_otel.instrument()\n" if calls_instrument else ""
    source += FLOW
    (directory / "app.py").write_text(source)
    package = directory / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(source)


def service_names(directory: Path) -> set[str]:
    """Every resource's service.name in the trace file ``directory`` got."""
    path = directory / ".reasonflow-otel" / "traces.jsonl"
    return {
        attribute["value"]["stringValue"]
        for line in path.read_text().splitlines()
        for resource in json.loads(line)["resourceSpans"]
        for attribute in resource["resource"]["attributes"]
        if attribute["key"] == "service.name"
    }


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["app.py"], "app"),
        (["-m", "mypkg"], "mypkg"),
        (["-X", "utf8", "-mmypkg"], "mypkg"),
        (["mypkg/__main__.py"], "mypkg"),
    ],
    ids=["script", "module", "module-joined-flag", "package-main-file"],
)
@pytest.mark.parametrize("zero_code", [True, False], ids=["opentelemetry-instrument", "instrument"])
def test_an_unnamed_service_is_named_after_the_program(tmp_path, command, expected, zero_code):
    write_program(tmp_path, calls_instrument=not zero_code)
    launcher = [INSTRUMENT] if zero_code else []

    run_program([*launcher, sys.executable, *command], tmp_path)

    assert service_names(tmp_path) == {expected}


@pytest.mark.parametrize(
    "settings",
    [
        {"OTEL_SERVICE_NAME": "checkout"},
        {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,service.name=checkout"},
        {"OTEL_SERVICE_NAME": "checkout", "OTEL_RESOURCE_ATTRIBUTES": "service.name=other"},
    ],
    ids=["OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "both"],
)
@pytest.mark.parametrize("command", [["app.py"], ["-m", "mypkg"]], ids=["script", "module"])
def test_the_users_service_name_wins(tmp_path, settings, command):
    write_program(tmp_path, calls_instrument=False)

    run_program([INSTRUMENT, sys.executable, *command], tmp_path, **settings)

    assert service_names(tmp_path) == {"checkout"}


def test_a_name_passed_to_instrument_wins(tmp_path):
    source = FLOW.replace("from pocketflow", "import reasonflow_otel\nfrom pocketflow", 1)
    source = source.replace(
        "Flow(start", 'reasonflow_otel.instrument(service_name="billing")\nFlow(start'
    )
    (tmp_path / "app.py").write_text(source)

    run_program([sys.executable, "app.py"], tmp_path)

    assert service_names(tmp_path) == {"billing"}


@pytest.mark.parametrize(
    "command", [["-c", "{code}"], ["-i"], ["-"]], ids=["-c", "interactive", "stdin"]
)
def test_an_interactive_interpreter_keeps_the_sdk_fallback(tmp_path, command):
    code = "import reasonflow_otel\nreasonflow_otel.instrument()\n" + FLOW
    arguments = [part.format(code=code) for part in command]
    given = None if "{code}" in command else code + "\n"

    completed = run_program([sys.executable, *arguments], tmp_path, input=given)

    assert service_names(tmp_path) == {f"unknown_service:{Path(sys.executable).name}"}, (
        completed.stderr
    )


def test_the_program_name_is_found_before_main_is_loaded(tmp_path):
    """``opentelemetry-instrument`` configures the SDK from sitecustomize, before runpy."""
    probe = textwrap.dedent(
        """
        import sys
        from reasonflow_otel.sdk.service_name import main_program_name
        print(main_program_name())
        """
    )
    (tmp_path / "sitecustomize.py").write_text(probe)
    write_program(tmp_path, calls_instrument=False)

    completed = run_program(
        [sys.executable, "-m", "mypkg", "--flag", "value"], tmp_path, PYTHONPATH=str(tmp_path)
    )

    assert completed.stdout.splitlines()[0] == "mypkg"
