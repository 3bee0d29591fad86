"""Malformed configuration: one clear warning per value, the default used, nothing crashes.

``REASONFLOW_OTEL_*`` values are validated by ``reasonflow_otel.settings`` (see
test_settings.py); the standard ``OTEL_*`` values the SDK would crash on, refuse
or misread are checked by ``reasonflow_otel.sdk.preflight`` before the SDK reads them.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from support.otlp_faulty_receiver import FaultyOtlpReceiver, running_faulty_receiver
from support.processes import BIN, REPOSITORY, clean_environment

from reasonflow_otel.sdk.preflight import check_environment
from reasonflow_otel.settings import load_settings

LIFECYCLE_APP = REPOSITORY / "tests" / "apps" / "lifecycle_app.py"


@pytest.mark.parametrize(
    ("variable", "value", "reason", "default"),
    [
        ("OTEL_SPAN_EVENT_COUNT_LIMIT", "-1", "expected a whole number of 0 or more", "128"),
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "long", "of 0 or more", "no limit"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0", "expected a number above 0", "2048"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "soon", "expected a whole number", "1000"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-3", "expected a number above 0", "10"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "inf", "expected a number above 0", "10"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpcc", "expected one of grpc, http/protobuf", "grpc"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zip", "expected one of gzip, deflate, none", "none"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1m", "expected a number above 0", "60000"),
        ("OTEL_SDK_DISABLED", "maybe", "expected true or false", "false"),
        # The default named is the one used: parentbased_traceidratio (ratio 1.0).
        (
            "OTEL_TRACES_SAMPLER",
            "sometimes",
            "expected one of always_off, always_on",
            "parentbased_traceidratio",
        ),
    ],
)
def test_a_malformed_standard_variable_is_named_warned_about_and_removed(
    caplog, variable, value, reason, default
):
    environ = {variable: value, "OTEL_SERVICE_NAME": "checkout"}
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel"):
        assert check_environment(environ) == [variable]

    assert environ == {"OTEL_SERVICE_NAME": "checkout"}
    [record] = caplog.records
    message = record.getMessage()
    assert f"ignoring {variable}={value!r} (" in message
    assert reason in message
    assert message.endswith(f"; using the default {default}")


def test_well_formed_values_are_left_alone(caplog):
    environ = {
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "unset",
        "OTEL_BSP_MAX_QUEUE_SIZE": "4096",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_BLRP_EXPORT_TIMEOUT": "",
    }
    expected = dict(environ)
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel"):
        assert check_environment(environ) == []
    assert environ == expected
    assert caplog.records == []


def test_a_ratio_is_checked_only_for_the_samplers_that_take_one(caplog):
    ratio_sampler = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "7"}
    other_sampler = {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_SAMPLER_ARG": "8"}
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel"):
        assert check_environment(ratio_sampler) == ["OTEL_TRACES_SAMPLER_ARG"]
        assert check_environment(other_sampler) == []
    assert ratio_sampler == {"OTEL_TRACES_SAMPLER": "traceidratio"}
    [record] = caplog.records
    assert record.getMessage() == (
        "reasonflow-otel: ignoring OTEL_TRACES_SAMPLER_ARG='7' "
        "(expected a number from 0 to 1); using the default 1.0"
    )


def test_a_batch_larger_than_its_queue_is_lowered_to_the_queue(caplog):
    environ = {"OTEL_BSP_MAX_QUEUE_SIZE": "100"}  # the default batch of 512 no longer fits
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel"):
        assert check_environment(environ) == []
    assert environ == {"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"}
    [record] = caplog.records
    assert record.getMessage() == (
        "reasonflow-otel: OTEL_BSP_MAX_EXPORT_BATCH_SIZE=512 is above "
        "OTEL_BSP_MAX_QUEUE_SIZE=100, which the SDK refuses; using 100"
    )


def test_each_problem_is_warned_about_once_however_often_settings_load(caplog):
    environ = {"REASONFLOW_OTEL_PHASE_SPANZ": "true", "REASONFLOW_OTEL_CONSOLE": "loud"}
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel"):
        for _ in range(3):
            load_settings(environ=environ)
    assert sorted(record.getMessage() for record in caplog.records) == [
        "reasonflow-otel: ignoring REASONFLOW_OTEL_CONSOLE='loud' (expected true or false); "
        "using the default false",
        "reasonflow-otel: ignoring unknown variable REASONFLOW_OTEL_PHASE_SPANZ",
    ]


# --- End to end: the app runs and exports despite all of it ------------------------------

MALFORMED = {
    # variable: (value, the default named in the warning)
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": ("-2", "128"),  # the SDK raises when imported
    "OTEL_BSP_MAX_QUEUE_SIZE": ("0", "2048"),  # the SDK refuses to build the provider
    "OTEL_EXPORTER_OTLP_TIMEOUT": ("-1", "10"),  # every export would expire at once
    "OTEL_EXPORTER_OTLP_COMPRESSION": ("zip", "none"),  # the exporter would be refused
    "REASONFLOW_OTEL_GRAPH_MAX_LENGTH": ("-5", "4096"),
}


@pytest.fixture
def receiver() -> Iterator[FaultyOtlpReceiver]:
    with running_faulty_receiver("grpc") as receiver:
        yield receiver


@pytest.mark.parametrize("launcher", [[], [str(BIN / "opentelemetry-instrument")]])
def test_an_app_with_malformed_settings_runs_exports_and_warns_once_each(receiver, launcher):
    environ = clean_environment(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        REASONFLOW_OTEL_CAPTUR="exec",
        **{variable: value for variable, (value, _) in MALFORMED.items()},
    )
    completed = subprocess.run(
        [*launcher, sys.executable, str(LIFECYCLE_APP), "exit"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "done\n"
    assert sorted(span.name for span in receiver.wait_for_spans(2)) == [
        "Step",
        "invoke_workflow AtExit",
    ]
    for variable, (value, default) in MALFORMED.items():
        warning = f"ignoring {variable}={value!r}"
        assert completed.stderr.count(warning) == 1, completed.stderr
        line = next(line for line in completed.stderr.splitlines() if warning in line)
        assert line.endswith(f"; using the default {default}")
    assert completed.stderr.count("ignoring unknown variable REASONFLOW_OTEL_CAPTUR") == 1
