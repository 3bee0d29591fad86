"""reasonflow_otel.instrument() in a real process: idempotent, polite, and undoable."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from support.processes import REPOSITORY, run_program

APP = REPOSITORY / "tests" / "apps" / "own_providers_app.py"

FLOW_SPANS = [
    ["invoke_workflow Onboarding", None],
    ["LookUpCustomer", "invoke_workflow Onboarding"],
    ["customer db query", "LookUpCustomer"],
    ["Greet", "invoke_workflow Onboarding"],
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the app observed."""
    completed = run_program([sys.executable, str(APP)], cwd=tmp_path_factory.mktemp("app"))
    return {**json.loads(completed.stdout), "stderr": completed.stderr}


def test_calling_instrument_twice_instruments_once(report):
    engines = report["instrumented"]["engines"]
    assert engines == report["instrumented"]["engines_after_first_call"]
    assert len(engines) == len(set(engines))
    assert {"PocketFlowInstrumentor", "ThreadingInstrumentor"} <= set(engines)
    assert report["instrumented"]["spans"] == FLOW_SPANS


def test_the_apps_own_providers_are_kept_and_receive_the_telemetry(report):
    assert report["instrumented"]["providers_kept"] is True
    assert report["instrumented"]["spans"] == FLOW_SPANS
    assert {
        "reasonflow.flow.duration",
        "reasonflow.node.active",
        "reasonflow.node.duration",
    } <= set(report["instrumented"]["metrics"])


def test_the_apps_own_providers_are_kept_without_a_warning(report):
    """docs/configuration.md promises it: an app's providers are simply used."""
    assert report["stderr"] == ""


def test_threads_inherit_the_node_span_through_the_threading_instrumentation(report):
    assert ["customer db query", "LookUpCustomer"] in report["instrumented"]["spans"]


def test_uninstrument_restores_the_engine_and_the_threads(report):
    after = report["uninstrumented"]
    assert after["engines"] == []
    assert after["replaced_methods"] == []
    assert after["providers_kept"] is True
    assert after["spans"] == [["customer db query", None]]


def test_an_unknown_option_raises_type_error_like_any_function(tmp_path):
    """The developer wrote the call: a misspelt option must not pass as a warning."""
    script = (
        "import reasonflow_otel\n"
        "try:\n"
        "    reasonflow_otel.instrument(capture_everything=True)\n"
        "except TypeError as error:\n"
        "    print(error)\n"
        "print(reasonflow_otel.instrumented_engines())\n"
    )
    completed = run_program([sys.executable, "-c", script], cwd=tmp_path)

    assert completed.stdout.splitlines() == [
        "instrument() got an unexpected keyword argument 'capture_everything'",
        "[]",  # nothing was set up
    ]
