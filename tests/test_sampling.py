"""Sampling: the configured sampler, per-flow ratios, whole traces, remote parents."""

from __future__ import annotations

import logging
from collections import defaultdict

import pocketflow
import pytest
from opentelemetry import trace
from opentelemetry.sdk.environment_variables import OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

import reasonflow_otel
from reasonflow_otel import semconv
from reasonflow_otel.sdk.sampling import build_sampler
from reasonflow_otel.settings import load_settings

PARENT_BASED = (
    "remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,"
    "localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler"
)
DEFAULT_DESCRIPTION = f"ParentBased{{root:TraceIdRatioBased{{1.0}},{PARENT_BASED}}}"
REMOTE_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
REMOTE_SPAN_ID = "00f067aa0ba902b7"


class WeylTraceIds(RandomIdGenerator):
    """Trace ids whose low 64 bits, the part ratio sampling reads, follow a Weyl sequence.

    Multiples of the 64-bit golden ratio spread evenly over the range, so any run
    of N ids holds N*ratio ids below a ratio's bound to within 2 (checked for the
    counts and ratios used here): deterministic, unlike random ids, never flaky.
    """

    GOLDEN = 0x9E3779B97F4A7C15

    def __init__(self) -> None:
        self._next = 0

    def generate_trace_id(self) -> int:
        self._next += 1
        return (1 << 64) | (self._next * self.GOLDEN) % (1 << 64)


@pytest.fixture(autouse=True)
def no_sampler_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OTEL_TRACES_SAMPLER, raising=False)
    monkeypatch.delenv(OTEL_TRACES_SAMPLER_ARG, raising=False)


def sampler_for(**options):
    return build_sampler(load_settings(options, environ={}))


# --- Choosing the sampler --------------------------------------------------------------


def test_default_is_parent_based_ratio_one(caplog):
    assert sampler_for().get_description() == DEFAULT_DESCRIPTION
    assert caplog.records == []


@pytest.mark.parametrize(
    ("name", "argument", "description"),
    [
        ("traceidratio", "0.25", "TraceIdRatioBased{0.25}"),
        ("traceidratio", None, "TraceIdRatioBased{1.0}"),
        (
            "parentbased_traceidratio",
            "0.5",
            f"ParentBased{{root:TraceIdRatioBased{{0.5}},{PARENT_BASED}}}",
        ),
        ("always_off", None, "AlwaysOffSampler"),
        ("Always_On", "ignored", "AlwaysOnSampler"),
    ],
)
def test_otel_traces_sampler_is_honoured(monkeypatch, caplog, name, argument, description):
    monkeypatch.setenv(OTEL_TRACES_SAMPLER, name)
    if argument is not None:
        monkeypatch.setenv(OTEL_TRACES_SAMPLER_ARG, argument)
    assert sampler_for().get_description() == description
    assert caplog.records == []


def test_unknown_sampler_warns_once_and_uses_the_default(monkeypatch, caplog):
    monkeypatch.setenv(OTEL_TRACES_SAMPLER, "no_such_sampler")
    assert sampler_for().get_description() == DEFAULT_DESCRIPTION
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "OTEL_TRACES_SAMPLER='no_such_sampler'" in record.getMessage()
    assert "parentbased_traceidratio with ratio 1.0" in record.getMessage()


@pytest.mark.parametrize("argument", ["abc", "1.5", "-0.1", "nan"])
def test_unparsable_ratio_warns_once_and_uses_ratio_one(monkeypatch, caplog, argument):
    monkeypatch.setenv(OTEL_TRACES_SAMPLER, "parentbased_traceidratio")
    monkeypatch.setenv(OTEL_TRACES_SAMPLER_ARG, argument)
    assert sampler_for().get_description() == DEFAULT_DESCRIPTION
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert f"OTEL_TRACES_SAMPLER_ARG={argument!r}" in record.getMessage()
    assert "using the ratio 1.0" in record.getMessage()


# --- Whole traces, kept by ratio ----------------------------------------------------------


class Work(pocketflow.Node):
    def exec(self, prep_res):
        return "done"


def leaf_flow(name: str) -> pocketflow.Flow:
    flow = pocketflow.Flow(start=Work())
    flow.name = name
    return flow


def parent_flow(name: str, nested: pocketflow.Flow) -> pocketflow.Flow:
    """Work, then a nested flow, then Work again: five spans per trace."""
    start = Work()
    start >> nested >> Work()
    flow = pocketflow.Flow(start=start)
    flow.name = name
    return flow


def traces_by_root(telemetry) -> dict[str, list[tuple[str, ...]]]:
    """Each exported trace's sorted span names, grouped by its root span's name."""
    names_by_trace = defaultdict(list)
    for span in telemetry.spans():
        names_by_trace[span.context.trace_id].append(span.name)
    roots = {span.context.trace_id: span.name for span in telemetry.spans() if not span.parent}
    grouped = defaultdict(list)
    for trace_id, names in names_by_trace.items():
        grouped[roots.get(trace_id, "no root")].append(tuple(sorted(names)))
    return grouped


CHATTY_TRACE = ("Work", "Work", "Work", "invoke_workflow Chatty", "invoke_workflow Rare")
RARE_TRACE = ("Work", "invoke_workflow Rare")


def run_flows(flows: list[pocketflow.Flow], rounds: int) -> None:
    for _ in range(rounds):
        for flow in flows:
            flow.run({})


def test_ratio_keeps_its_share_of_whole_traces_and_metrics_see_every_run(
    make_telemetry, monkeypatch
):
    monkeypatch.setenv(OTEL_TRACES_SAMPLER, "parentbased_traceidratio")
    monkeypatch.setenv(OTEL_TRACES_SAMPLER_ARG, "0.25")
    telemetry = make_telemetry(sampler=sampler_for(), id_generator=WeylTraceIds())

    run_flows([parent_flow("Chatty", leaf_flow("Rare"))], rounds=400)

    traces = traces_by_root(telemetry)
    assert set(traces) == {"invoke_workflow Chatty"}
    assert set(traces["invoke_workflow Chatty"]) == {CHATTY_TRACE}
    assert abs(len(traces["invoke_workflow Chatty"]) - 100) <= 2
    [flow_runs] = [
        point
        for point in telemetry.metric_points(semconv.METRIC_FLOW_DURATION)
        if point.attributes[semconv.GEN_AI_WORKFLOW_NAME] == "Chatty"
    ]
    assert flow_runs.count == 400


def test_per_flow_ratios_decide_at_the_root_and_nested_flows_inherit(make_telemetry):
    sampler = sampler_for(sampling_ratios="Chatty=0.1,Rare=1")
    telemetry = make_telemetry(sampler=sampler, id_generator=WeylTraceIds())
    other = leaf_flow("Other")

    run_flows([parent_flow("Chatty", leaf_flow("Rare")), leaf_flow("Rare"), other], rounds=300)

    traces = traces_by_root(telemetry)
    assert set(traces) == {
        "invoke_workflow Chatty",
        "invoke_workflow Rare",
        "invoke_workflow Other",
    }
    # The nested Rare flow (ratio 1) appears only inside the Chatty traces that were kept.
    assert set(traces["invoke_workflow Chatty"]) == {CHATTY_TRACE}
    assert abs(len(traces["invoke_workflow Chatty"]) - 30) <= 2
    assert traces["invoke_workflow Rare"] == [RARE_TRACE] * 300
    # Unlisted flows follow OTEL_TRACES_SAMPLER (here the default, ratio 1).
    assert len(traces["invoke_workflow Other"]) == 300


def test_per_flow_ratio_of_one_keeps_every_trace_under_a_low_default(make_telemetry, monkeypatch):
    monkeypatch.setenv(OTEL_TRACES_SAMPLER, "parentbased_traceidratio")
    monkeypatch.setenv(OTEL_TRACES_SAMPLER_ARG, "0.5")
    sampler = sampler_for(sampling_ratios="Rare=1")
    telemetry = make_telemetry(sampler=sampler, id_generator=WeylTraceIds())

    run_flows([leaf_flow("Rare"), leaf_flow("Other")], rounds=400)

    traces = traces_by_root(telemetry)
    assert len(traces["invoke_workflow Rare"]) == 400
    assert abs(len(traces["invoke_workflow Other"]) - 200) <= 2


def test_a_flow_below_another_root_follows_that_root(make_telemetry):
    telemetry = make_telemetry(sampler=sampler_for(sampling_ratios="Chatty=0"))
    tracer = telemetry.tracer_provider.get_tracer("app")

    with tracer.start_as_current_span("request"):
        leaf_flow("Chatty").run({})

    request = telemetry.span("request")
    [flow] = telemetry.children(request)
    assert flow.name == "invoke_workflow Chatty"
    assert [span.name for span in telemetry.children(flow)] == ["Work"]


# --- Remote parents --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratios", "flags", "kept"),
    [
        ("", "01", True),
        ("", "00", False),
        ("Chatty=0", "01", True),
        ("Chatty=1", "00", False),
    ],
)
def test_a_remote_parents_decision_is_obeyed(make_telemetry, ratios, flags, kept):
    telemetry = make_telemetry(sampler=sampler_for(sampling_ratios=ratios))
    headers = {"traceparent": f"00-{REMOTE_TRACE_ID}-{REMOTE_SPAN_ID}-{flags}"}

    with reasonflow_otel.continue_trace(headers):
        leaf_flow("Chatty").run({})

    if not kept:
        assert telemetry.spans() == []
        return
    flow = telemetry.span("invoke_workflow Chatty")
    assert flow.context.trace_id == int(REMOTE_TRACE_ID, 16)
    assert flow.parent.span_id == int(REMOTE_SPAN_ID, 16)
    assert flow.parent.is_remote
    assert [span.name for span in telemetry.children(flow)] == ["Work"]


# --- Unsampled traces ----------------------------------------------------------------------------


def test_an_unsampled_trace_records_no_span_but_still_its_metrics(make_telemetry):
    telemetry = make_telemetry(sampler=sampler_for(sampling_ratios="Quiet=0"))
    recording = []

    class Probe(pocketflow.Node):
        def exec(self, prep_res):
            recording.append(trace.get_current_span().is_recording())

    flow = pocketflow.Flow(start=Probe())
    flow.name = "Quiet"
    flow.run({})

    assert telemetry.spans() == []
    assert recording == [False]
    [node_runs] = telemetry.metric_points(semconv.METRIC_NODE_DURATION)
    assert node_runs.count == 1
    assert node_runs.attributes[semconv.GEN_AI_WORKFLOW_NAME] == "Quiet"


class Rendered:
    """A parameter value that counts how often it is turned into text."""

    def __init__(self) -> None:
        self.renders = 0

    def __repr__(self) -> str:
        self.renders += 1
        return "rendered"

    __str__ = __repr__


class PerValue(pocketflow.BatchFlow):
    def prep(self, shared):
        return [{"value": shared["value"]}]


@pytest.mark.parametrize(("flow_name", "renders"), [("Quiet", 0), ("Loud", 1)])
def test_parameters_are_rendered_only_for_sampled_traces(make_telemetry, flow_name, renders):
    telemetry = make_telemetry(sampler=sampler_for(sampling_ratios="Quiet=0,Loud=1"))
    value = Rendered()
    flow = PerValue(start=Work())
    flow.name = flow_name

    flow.run({"value": value})

    assert value.renders == renders
    items = [span for span in telemetry.spans() if span.name == f"{flow_name} item"]
    params = [item.attributes.get(semconv.PARAMS_PREFIX + "value") for item in items]
    assert params == ["rendered"] * renders
