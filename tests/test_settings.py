"""Settings: environment and keyword options, validated with one clear warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from reasonflow_otel.settings import (
    CAPTURE_PHASES,
    DEFAULT_DURATION_BUCKETS,
    Settings,
    load_settings,
)


def test_defaults_without_environment() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.phase_spans is False
    assert settings.phase_durations is False
    assert settings.resource_probe == "rusage"
    assert settings.duration_buckets == DEFAULT_DURATION_BUCKETS
    assert settings.duration_buckets[0] == 0.001
    assert settings.duration_buckets[-1] == 600.0
    assert dict(settings.sampling_ratios) == {}
    assert settings.capture == ()


def test_environment_values_are_parsed() -> None:
    settings = load_settings(
        environ={
            "REASONFLOW_OTEL_PHASE_SPANS": "yes",
            "REASONFLOW_OTEL_PHASE_DURATIONS": "on",
            "REASONFLOW_OTEL_GRAPH_MAX_LENGTH": "512",
            "REASONFLOW_OTEL_DURATION_BUCKETS": "0.5, 1, 30",
            "REASONFLOW_OTEL_DROP_METRICS": "reasonflow.node.cpu_time,reasonflow.node.active",
            "REASONFLOW_OTEL_RESOURCE_PROBE": "PSUTIL",
            "REASONFLOW_OTEL_SAMPLING_RATIOS": "Chatty=0.01, Rare=1",
            "REASONFLOW_OTEL_TRACE_FILE": "/tmp/x/traces.jsonl",
            "REASONFLOW_OTEL_CAPTURE": "prep,Exec",
        }
    )
    assert settings.phase_spans is True
    assert settings.phase_durations is True
    assert settings.graph_max_length == 512
    assert settings.duration_buckets == (0.5, 1.0, 30.0)
    assert settings.drop_metrics == ("reasonflow.node.cpu_time", "reasonflow.node.active")
    assert settings.resource_probe == "psutil"
    assert dict(settings.sampling_ratios) == {"Chatty": 0.01, "Rare": 1.0}
    assert settings.trace_file == Path("/tmp/x/traces.jsonl")
    assert settings.capture == ("prep", "exec")


def test_keyword_options_win_over_environment() -> None:
    settings = load_settings(
        {
            "phase_spans": True,
            "phase_durations": True,
            "sampling_ratios": {"A": 0.5},
            "capture": ["post"],
        },
        environ={"REASONFLOW_OTEL_PHASE_SPANS": "false"},
    )
    assert settings.phase_spans is True
    assert settings.phase_durations is True
    assert dict(settings.sampling_ratios) == {"A": 0.5}
    assert settings.capture == ("post",)


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("REASONFLOW_OTEL_PHASE_SPANS", "maybe", "expected true or false"),
        ("REASONFLOW_OTEL_GRAPH_MAX_LENGTH", "-3", "expected a number above 0"),
        ("REASONFLOW_OTEL_GRAPH_MAX_LENGTH", "lots", "expected a whole number"),
        ("REASONFLOW_OTEL_DURATION_BUCKETS", "5,1", "expected strictly increasing numbers"),
        ("REASONFLOW_OTEL_DURATION_BUCKETS", "1,nan", "expected finite, non-negative numbers"),
        ("REASONFLOW_OTEL_RESOURCE_PROBE", "perf", "expected one of none, rusage, psutil"),
        ("REASONFLOW_OTEL_SAMPLING_RATIOS", "A=2", "expected a number from 0 to 1"),
        ("REASONFLOW_OTEL_SAMPLING_RATIOS", "A", "expected FlowName=ratio pairs, got 'A'"),
        ("REASONFLOW_OTEL_CAPTURE", "inputs", "expected some of prep, exec, post, shared"),
    ],
)
def test_malformed_value_warns_once_and_keeps_default(
    caplog: pytest.LogCaptureFixture, variable: str, value: str, reason: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel.settings"):
        settings = load_settings(environ={variable: value})
    assert settings == Settings()
    [record] = caplog.records
    assert variable in record.getMessage()
    assert repr(value) in record.getMessage()
    assert reason in record.getMessage()
    assert "using the default" in record.getMessage()


def test_a_list_keeps_its_valid_entries_and_names_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    environ = {
        "REASONFLOW_OTEL_CAPTURE": "exec,everything",
        "REASONFLOW_OTEL_SAMPLING_RATIOS": "Chatty=0.1,Rare=2",
    }
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel.settings"):
        settings = load_settings(environ=environ)

    assert settings.capture == ("exec",)
    assert dict(settings.sampling_ratios) == {"Chatty": 0.1}
    assert sorted(record.getMessage() for record in caplog.records) == [
        "reasonflow-otel: ignoring 'Rare=2' in REASONFLOW_OTEL_SAMPLING_RATIOS='Chatty=0.1,Rare=2' "
        "(expected a number from 0 to 1); using Chatty=0.1",
        "reasonflow-otel: ignoring 'everything' in REASONFLOW_OTEL_CAPTURE='exec,everything' "
        f"(expected some of {', '.join(CAPTURE_PHASES)}); using exec",
    ]


def test_a_list_with_no_valid_entry_names_its_empty_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel.settings"):
        settings = load_settings(environ={"REASONFLOW_OTEL_CAPTURE": "everything"})

    assert settings.capture == ()
    [record] = caplog.records
    assert record.getMessage() == (
        "reasonflow-otel: ignoring REASONFLOW_OTEL_CAPTURE='everything' "
        f"(expected some of {', '.join(CAPTURE_PHASES)}); using the default (none)"
    )


def test_wrongly_typed_option_warns_and_keeps_default(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel.settings"):
        settings = load_settings({"graph_max_length": True}, environ={})
    assert settings.graph_max_length == Settings().graph_max_length
    [record] = caplog.records
    assert "instrument(graph_max_length=...)" in record.getMessage()


def test_unknown_option_is_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel.settings"):
        settings = load_settings({"phase_span": True}, environ={})
    assert settings == Settings()
    [record] = caplog.records
    assert "unknown option 'phase_span'" in record.getMessage()
