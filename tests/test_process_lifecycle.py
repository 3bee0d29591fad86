"""Spans survive the ways a process ends, forks and un-instruments itself.

Each test runs tests/apps/lifecycle_app.py in a fresh process (it calls
``reasonflow_otel.instrument()``, which sets the global providers) exporting over
OTLP to a real receiver, with a batch delay of ten minutes: what arrives was
flushed by the exit, the signal or the fork handling under test.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from support.otlp_faulty_receiver import FaultyOtlpReceiver, running_faulty_receiver
from support.processes import REPOSITORY, clean_environment

from reasonflow_otel.sdk.delivery import FLUSH_SECONDS

APP = REPOSITORY / "tests" / "apps" / "lifecycle_app.py"
PROTOCOLS = ["grpc", "http/protobuf"]


@pytest.fixture(params=PROTOCOLS)
def receiver(request: pytest.FixtureRequest) -> Iterator[FaultyOtlpReceiver]:
    with running_faulty_receiver(request.param) as receiver:
        yield receiver


@pytest.fixture
def grpc_receiver() -> Iterator[FaultyOtlpReceiver]:
    with running_faulty_receiver("grpc") as receiver:
        yield receiver


def start_app(
    scenario: str, receiver: FaultyOtlpReceiver, **settings: str
) -> subprocess.Popen[str]:
    environ = clean_environment(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=receiver.protocol,
        OTEL_BSP_SCHEDULE_DELAY="600000",  # nothing is exported on the way
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        REASONFLOW_OTEL_PROCESS_METRICS="false",
        **settings,
    )
    return subprocess.Popen(
        [sys.executable, str(APP), scenario],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_app(scenario: str, receiver: FaultyOtlpReceiver) -> str:
    """Run to the end; returns stdout. Fails on a non-zero exit."""
    app = start_app(scenario, receiver)
    stdout, stderr = app.communicate(timeout=120)
    assert app.returncode == 0, stderr
    return stdout


def names(spans: list[Span]) -> Counter[str]:
    return Counter(span.name for span in spans)


def flow_spans(*flows: str) -> Counter[str]:
    """What the app's one-step flows produce: a flow span and a "Step" span each."""
    return Counter({**{f"invoke_workflow {flow}": 1 for flow in flows}, "Step": len(flows)})


def span_named(spans: list[Span], name: str) -> Span:
    [span] = [span for span in spans if span.name == name]
    return span


def step_of(spans: list[Span], flow: Span) -> Span:
    [step] = [span for span in spans if span.parent_span_id == flow.span_id]
    return step


def test_spans_are_flushed_at_interpreter_exit(receiver):
    assert run_app("exit", receiver).splitlines() == ["done"]
    assert names(receiver.wait_for_spans(2)) == flow_spans("AtExit")


def test_spans_are_flushed_on_sigterm_and_the_process_still_dies_of_it(grpc_receiver):
    app = start_app("sigterm", grpc_receiver)
    assert app.stdout.readline() == "ready\n"
    app.send_signal(signal.SIGTERM)
    app.communicate(timeout=60)

    assert app.returncode == -signal.SIGTERM
    assert names(grpc_receiver.wait_for_spans(2)) == flow_spans("BeforeSigterm")


def test_the_sigterm_flush_gives_up_on_a_backend_that_never_answers(grpc_receiver):
    grpc_receiver.behaviour = "slow"  # holds each export for a minute
    app = start_app("sigterm", grpc_receiver, OTEL_EXPORTER_OTLP_TIMEOUT="300")
    assert app.stdout.readline() == "ready\n"
    app.send_signal(signal.SIGTERM)
    # The flush waits FLUSH_SECONDS (5), not the export timeout (300) nor the minute.
    app.communicate(timeout=FLUSH_SECONDS + 25)

    assert app.returncode == -signal.SIGTERM
    [held] = grpc_receiver.wait_for_requests(1)
    assert (held.outcome, len(held.spans)) == ("abandoned", 2)


def test_sigterm_flushes_before_handing_over_to_the_apps_own_handler(grpc_receiver):
    app = start_app("sigterm-app-handler", grpc_receiver)
    assert app.stdout.readline() == "ready\n"
    app.send_signal(signal.SIGTERM)
    stdout, _ = app.communicate(timeout=60)

    assert (app.returncode, stdout) == (7, "app handler ran\n")  # it leaves with os._exit(7)
    assert names(grpc_receiver.wait_for_spans(2)) == flow_spans("BeforeSigterm")


PARENT_FLOWS = {
    "invoke_workflow Warmup",
    "invoke_workflow ForkingParent",
    "invoke_workflow ParentAfterFork",
}


def flows_over_the_connection_opened_before_the_fork(receiver: FaultyOtlpReceiver) -> set[str]:
    """Flow spans that arrived over the connection that carried the parent's warm-up.

    A child that reused this inherited connection would interleave its requests
    with the parent's on one socket.
    """
    requests = receiver.requests()
    [warmup] = [r for r in requests if any(s.name == "invoke_workflow Warmup" for s in r.spans)]
    return {
        span.name
        for request in requests
        if request.peer == warmup.peer
        for span in request.spans
        if span.name != "Step"
    }


def test_a_child_made_by_os_fork_exports_its_own_spans_once(receiver):
    assert run_app("os-fork", receiver).splitlines() == ["done"]

    spans = receiver.wait_for_spans(8)
    assert names(spans) == flow_spans("Warmup", "ForkingParent", "ForkedChild", "ParentAfterFork")
    forking_step = step_of(spans, span_named(spans, "invoke_workflow ForkingParent"))
    child = span_named(spans, "invoke_workflow ForkedChild")
    assert (child.trace_id, child.parent_span_id) == (forking_step.trace_id, forking_step.span_id)
    assert "invoke_workflow Warmup" in flows_over_the_connection_opened_before_the_fork(receiver)
    assert flows_over_the_connection_opened_before_the_fork(receiver) <= PARENT_FLOWS


def test_multiprocessing_children_export_their_own_spans_once(receiver):
    assert run_app("multiprocessing-fork", receiver).splitlines() == ["done"]

    spans = receiver.wait_for_spans(10)
    assert names(spans) == flow_spans(
        "Warmup", "ForkingParent", "ProcessChild0", "ProcessChild1", "ParentAfterFork"
    )
    forking_step = step_of(spans, span_named(spans, "invoke_workflow ForkingParent"))
    for child in ("ProcessChild0", "ProcessChild1"):
        assert span_named(spans, f"invoke_workflow {child}").parent_span_id == forking_step.span_id
    assert "invoke_workflow Warmup" in flows_over_the_connection_opened_before_the_fork(receiver)
    assert flows_over_the_connection_opened_before_the_fork(receiver) <= PARENT_FLOWS


def test_pool_workers_export_their_spans_and_keep_the_default_sigterm(receiver):
    stdout = run_app("multiprocessing-pool", receiver)

    # (task, SIGTERM has its default action): Pool.terminate() must work as without us.
    assert stdout.splitlines() == [
        "pool results [(0, True), (1, True), (2, True), (3, True)]",
        "done",
    ]
    spans = receiver.wait_for_spans(12)
    assert names(spans) == flow_spans(
        "Warmup", "PoolTask0", "PoolTask1", "PoolTask2", "PoolTask3", "ParentAfterPool"
    )


def test_workers_of_a_pool_left_by_with_deliver_each_flow_before_termination(receiver):
    """Each worker flushes when a top-level flow run ends, so terminate() loses nothing."""
    stdout = run_app("terminated-pool", receiver)

    assert stdout.splitlines() == ["pool results [0, 1, 2, 3]", "done"]
    spans = receiver.wait_for_spans(12)
    assert names(spans) == flow_spans(
        "Warmup", "PoolTask0", "PoolTask1", "PoolTask2", "PoolTask3", "ParentAfterPool"
    )


def test_uninstrument_during_a_flow_ends_its_spans_and_instrument_resumes(grpc_receiver):
    stdout = run_app("uninstrument-mid-flow", grpc_receiver)

    assert stdout.splitlines() == ["result None, context clean True", "done"]
    spans = grpc_receiver.wait_for_spans(5)
    # The flow and the step that called uninstrument() end normally; the two steps
    # after it run bare. Instrumenting again traces the next flow in full.
    assert names(spans) == Counter(
        {"invoke_workflow Uninstrumented": 1, "invoke_workflow Reinstrumented": 1, "Step": 3}
    )
    uninstrumented = span_named(spans, "invoke_workflow Uninstrumented")
    assert step_of(spans, uninstrumented).end_time_unix_nano <= uninstrumented.end_time_unix_nano
