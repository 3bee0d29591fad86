"""RED metrics, per-node resource usage and metric Views, with real PocketFlow and SDK readers.

Process metrics started by ``instrument()`` change process-wide state, so their end-to-end
tests run in subprocesses (tests/test_prometheus_endpoint.py); here only their configuration.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Iterator
from typing import Any

import pocketflow
import psutil
import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from reasonflow_otel import semconv
from reasonflow_otel.sdk.process_metrics import (
    CURATED,
    process_metrics_config,
    start_process_metrics,
)
from reasonflow_otel.sdk.views import MEMORY_BUCKETS
from reasonflow_otel.settings import (
    DEFAULT_DURATION_BUCKETS,
    Settings,
    instrumentation_disabled,
    load_settings,
)

ENGINE = "pocketflow"
MiB = 1 << 20


def node_attributes(flow: str, node: str, **extra: str) -> dict[str, str]:
    return {
        semconv.ENGINE: ENGINE,
        semconv.GEN_AI_WORKFLOW_NAME: flow,
        semconv.NODE_NAME: node,
        **extra,
    }


def by_attributes(points: list[Any], value: str = "value") -> dict[frozenset, Any]:
    """Points keyed by their attribute items; ``value`` names the field to keep."""
    return {frozenset(point.attributes.items()): getattr(point, value) for point in points}


def key(attributes: dict[str, str]) -> frozenset:
    return frozenset(attributes.items())


def all_points(telemetry: Any) -> Iterator[tuple[str, Any]]:
    """(metric name, point) for every point of every metric the reader collects."""
    data = telemetry.reader.get_metrics_data()
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    yield metric.name, point


def burn_cpu(seconds: float) -> None:
    """Keep this thread busy until its CPU clock advanced by ``seconds``."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


# --- Nodes and flows used below -------------------------------------------------------------


class Fetch(pocketflow.Node):
    def exec(self, prep_res: Any) -> str:
        return "data"


class Check(pocketflow.Node):
    """Fails when the shared store says so (no retries: PocketFlow re-raises)."""

    def prep(self, shared: dict[str, Any]) -> bool:
        return bool(shared.get("fail"))

    def exec(self, prep_res: bool) -> str:
        if prep_res:
            raise ValueError("bad input")
        return "ok"


class Flaky(pocketflow.Node):
    """Times out twice, then succeeds: two retries per run."""

    def __init__(self) -> None:
        super().__init__(max_retries=3)

    def exec(self, prep_res: Any) -> str:
        if self.cur_retry < 2:
            raise TimeoutError("slow service")
        return "ok"


class Rescued(pocketflow.Node):
    """Always fails; its fallback rescues the run: one retry and one fallback per run."""

    def __init__(self) -> None:
        super().__init__(max_retries=2)

    def exec(self, prep_res: Any) -> str:
        raise ConnectionError("unreachable")

    def exec_fallback(self, prep_res: Any, exc: Exception) -> str:
        return "cached"


class Pipeline(pocketflow.Flow):
    pass


def pipeline() -> Pipeline:
    flow = Pipeline(start=Fetch())
    flow.start_node >> Check()
    return flow


# --- RED metrics ------------------------------------------------------------------------------


def test_every_node_run_is_measured_when_no_trace_is_sampled(make_telemetry):
    telemetry = make_telemetry(sampler=ALWAYS_OFF)
    runs = 4
    flow = pipeline()
    for _ in range(runs):
        flow.run({})

    assert telemetry.spans() == []
    assert by_attributes(telemetry.metric_points(semconv.METRIC_NODE_DURATION), "count") == {
        key(node_attributes("Pipeline", "Fetch")): runs,
        key(node_attributes("Pipeline", "Check")): runs,
    }
    assert by_attributes(telemetry.metric_points(semconv.METRIC_FLOW_DURATION), "count") == {
        key({semconv.ENGINE: ENGINE, semconv.GEN_AI_WORKFLOW_NAME: "Pipeline"}): runs
    }
    for name in (semconv.METRIC_NODE_CPU_TIME, semconv.METRIC_NODE_MEMORY_GROWTH):
        counts = by_attributes(telemetry.metric_points(name), "count")
        assert sorted(counts.values()) == [runs, runs], name


def test_failed_runs_carry_error_type_and_successful_runs_do_not(telemetry):
    flow = pipeline()
    flow.run({})
    for _ in range(2):
        with pytest.raises(ValueError, match="bad input"):
            flow.run({"fail": True})

    assert by_attributes(telemetry.metric_points(semconv.METRIC_NODE_DURATION), "count") == {
        key(node_attributes("Pipeline", "Fetch")): 3,
        key(node_attributes("Pipeline", "Check")): 1,
        key(node_attributes("Pipeline", "Check", **{semconv.ERROR_TYPE: "ValueError"})): 2,
    }
    flow_attributes = {semconv.ENGINE: ENGINE, semconv.GEN_AI_WORKFLOW_NAME: "Pipeline"}
    assert by_attributes(telemetry.metric_points(semconv.METRIC_FLOW_DURATION), "count") == {
        key(flow_attributes): 1,
        key({**flow_attributes, semconv.ERROR_TYPE: "ValueError"}): 2,
    }


def test_retries_and_fallbacks_are_counted_by_the_error_raised(telemetry):
    class Resilient(pocketflow.Flow):
        pass

    flow = Resilient(start=Flaky())
    flow.start_node >> Rescued()
    flow.run({})
    flow.run({})

    timeout = {semconv.ERROR_TYPE: "TimeoutError"}
    refused = {semconv.ERROR_TYPE: "ConnectionError"}
    assert by_attributes(telemetry.metric_points(semconv.METRIC_NODE_RETRIES)) == {
        key(node_attributes("Resilient", "Flaky", **timeout)): 4,
        key(node_attributes("Resilient", "Rescued", **refused)): 2,
    }
    assert by_attributes(telemetry.metric_points(semconv.METRIC_NODE_FALLBACKS)) == {
        key(node_attributes("Resilient", "Rescued", **refused)): 2,
    }
    # A rescued run is a successful run: no error.type on its duration.
    assert by_attributes(telemetry.metric_points(semconv.METRIC_NODE_DURATION), "count") == {
        key(node_attributes("Resilient", "Flaky")): 2,
        key(node_attributes("Resilient", "Rescued")): 2,
    }


def test_in_flight_gauge_counts_running_nodes_and_returns_to_zero(telemetry):
    seen_inside: dict[frozenset, int] = {}

    class Probe(pocketflow.Node):
        def exec(self, prep_res: Any) -> None:
            seen_inside.update(by_attributes(telemetry.metric_points(semconv.METRIC_NODE_ACTIVE)))

    class Inner(pocketflow.Flow):
        pass

    class Outer(pocketflow.Flow):
        pass

    Outer(start=Inner(start=Probe())).run({})

    inner_as_node = key(node_attributes("Outer", "Inner"))
    probe = key(node_attributes("Inner", "Probe"))
    assert seen_inside == {inner_as_node: 1, probe: 1}
    assert by_attributes(telemetry.metric_points(semconv.METRIC_NODE_ACTIVE)) == {
        inner_as_node: 0,
        probe: 0,
    }


def test_in_flight_gauge_counts_concurrent_async_runs_of_one_node(telemetry):
    seen_inside: dict[frozenset, int] = {}
    items = 3

    class Gather(pocketflow.AsyncNode):
        """Waits until every parameter set's copy is running, then reads the gauge."""

        async def prep_async(self, shared: dict[str, Any]) -> dict[str, Any]:
            return shared

        async def exec_async(self, shared: dict[str, Any]) -> None:
            shared["arrived"] += 1
            if shared["arrived"] == items:
                seen_inside.update(
                    by_attributes(telemetry.metric_points(semconv.METRIC_NODE_ACTIVE))
                )
                shared["all_here"].set()
            await shared["all_here"].wait()

    class Fanout(pocketflow.AsyncParallelBatchFlow):
        async def prep_async(self, shared: dict[str, Any]) -> list[dict[str, int]]:
            return [{"item": index} for index in range(items)]

    async def main() -> None:
        await Fanout(start=Gather()).run_async({"arrived": 0, "all_here": asyncio.Event()})

    asyncio.run(main())

    gather = key(node_attributes("Fanout", "Gather"))
    assert seen_inside == {gather: items}
    assert by_attributes(telemetry.metric_points(semconv.METRIC_NODE_ACTIVE)) == {gather: 0}


def test_metric_points_carry_only_low_cardinality_attributes(telemetry):
    class Items(pocketflow.BatchNode):
        def prep(self, shared: dict[str, Any]) -> list[int]:
            return [1, 2, 3]

        def exec(self, item: int) -> int:
            return item * 2

    class Mixed(pocketflow.Flow):
        pass

    class Inner(pocketflow.Flow):
        pass

    flow = Mixed(start=Fetch())
    flow.start_node >> Flaky() >> Rescued() >> Items() >> Inner(start=Check())
    flow.set_params({"user_id": "u-123", "request": "secret text"})
    flow.run({})
    with pytest.raises(ValueError):
        flow.run({"fail": True})

    points = list(all_points(telemetry))
    names = {name for name, _ in points}
    assert names == {
        semconv.METRIC_FLOW_DURATION,
        semconv.METRIC_NODE_DURATION,
        semconv.METRIC_NODE_RETRIES,
        semconv.METRIC_NODE_FALLBACKS,
        semconv.METRIC_NODE_ACTIVE,
        semconv.METRIC_NODE_CPU_TIME,
        semconv.METRIC_NODE_MEMORY_GROWTH,
    }
    for name, point in points:
        assert set(point.attributes) <= semconv.METRIC_ATTRIBUTES, (name, point.attributes)
        assert "u-123" not in point.attributes.values()
        if semconv.ERROR_TYPE in point.attributes:
            assert point.attributes[semconv.ERROR_TYPE] in {
                "ValueError",
                "TimeoutError",
                "ConnectionError",
            }


# --- Views ------------------------------------------------------------------------------------


def test_histograms_use_workflow_sized_buckets(telemetry):
    pipeline().run({})

    for name in (
        semconv.METRIC_FLOW_DURATION,
        semconv.METRIC_NODE_DURATION,
        semconv.METRIC_NODE_CPU_TIME,
    ):
        bounds = {tuple(point.explicit_bounds) for point in telemetry.metric_points(name)}
        assert bounds == {DEFAULT_DURATION_BUCKETS}, name
    memory = telemetry.metric_points(semconv.METRIC_NODE_MEMORY_GROWTH)
    assert {tuple(point.explicit_bounds) for point in memory} == {MEMORY_BUCKETS}
    assert DEFAULT_DURATION_BUCKETS[0] == 0.001
    assert DEFAULT_DURATION_BUCKETS[-1] == 600.0


def test_settings_override_buckets_and_drop_instruments(make_telemetry):
    telemetry = make_telemetry(
        duration_buckets="0.5,1,30", drop_metrics="reasonflow.node.cpu_time,*.memory.*"
    )
    pipeline().run({})

    durations = telemetry.metric_points(semconv.METRIC_NODE_DURATION)
    assert {tuple(point.explicit_bounds) for point in durations} == {(0.5, 1.0, 30.0)}
    assert telemetry.metric_points(semconv.METRIC_NODE_CPU_TIME) == []
    assert telemetry.metric_points(semconv.METRIC_NODE_MEMORY_GROWTH) == []
    assert len(telemetry.metric_points(semconv.METRIC_FLOW_DURATION)) == 1


def test_views_strip_attributes_outside_the_allowed_set(telemetry):
    """A measurement with an id or payload attribute loses it (the Views' safety net)."""
    meter = telemetry.meter_provider.get_meter("some.other.library")
    meter.create_histogram(semconv.METRIC_NODE_DURATION, unit="s").record(
        1.5, {semconv.NODE_NAME: "Fetch", semconv.NODE_ID: "3", "user.id": "u-123"}
    )

    [point] = telemetry.metric_points(semconv.METRIC_NODE_DURATION)
    assert dict(point.attributes) == {semconv.NODE_NAME: "Fetch"}


# --- Per-node resource usage --------------------------------------------------------------------


def test_cpu_time_of_a_sync_node_is_its_threads_cpu(telemetry):
    class Crunch(pocketflow.Node):
        def exec(self, prep_res: Any) -> None:
            burn_cpu(0.05)

    pocketflow.Flow(start=Crunch()).run({})

    span = telemetry.span("Crunch")
    wall = (span.end_time - span.start_time) / 1e9
    assert 0.05 <= span.attributes[semconv.NODE_CPU_TIME] <= wall
    [point] = telemetry.metric_points(semconv.METRIC_NODE_CPU_TIME)
    assert point.sum == span.attributes[semconv.NODE_CPU_TIME]


def test_cpu_time_of_an_async_node_includes_tasks_interleaved_on_the_loop(telemetry):
    """Documented upper bound: a waiting async node is charged the loop's CPU meanwhile."""

    class Waiter(pocketflow.AsyncNode):
        async def prep_async(self, shared: dict[str, Any]) -> asyncio.Event:
            return shared["burnt"]

        async def exec_async(self, burnt: asyncio.Event) -> None:
            await burnt.wait()

    class Burner(pocketflow.AsyncNode):
        async def prep_async(self, shared: dict[str, Any]) -> asyncio.Event:
            return shared["burnt"]

        async def exec_async(self, burnt: asyncio.Event) -> None:
            burn_cpu(0.05)
            burnt.set()

    async def main() -> None:
        shared = {"burnt": asyncio.Event()}
        await asyncio.gather(
            pocketflow.AsyncFlow(start=Waiter()).run_async(shared),
            pocketflow.AsyncFlow(start=Burner()).run_async(shared),
        )

    asyncio.run(main())

    assert telemetry.span("Waiter").attributes[semconv.NODE_CPU_TIME] >= 0.05
    assert telemetry.span("Burner").attributes[semconv.NODE_CPU_TIME] >= 0.05


def test_memory_growth_is_the_rise_of_the_process_peak(telemetry):
    kept: list[bytes] = []

    class Allocate(pocketflow.Node):
        def exec(self, prep_res: Any) -> None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            current = psutil.Process().memory_info().rss
            kept.append(b"x" * (max(peak - current, 0) + 32 * MiB))  # a new high by 32 MiB

    class Idle(pocketflow.Node):
        pass

    flow = pocketflow.Flow(start=Allocate())
    flow.start_node >> Idle()
    flow.run({})

    # RSS counters are batched per CPU in the kernel: allow a little under the 32 MiB.
    assert telemetry.span("Allocate").attributes[semconv.NODE_MEMORY_GROWTH] >= 30 * MiB
    assert telemetry.span("Idle").attributes[semconv.NODE_MEMORY_GROWTH] == 0
    growth = by_attributes(telemetry.metric_points(semconv.METRIC_NODE_MEMORY_GROWTH), "sum")
    assert growth[key(node_attributes("Flow(Allocate)", "Allocate"))] >= 30 * MiB
    assert growth[key(node_attributes("Flow(Allocate)", "Idle"))] == 0
    default_span_attributes = set(telemetry.span("Allocate").attributes)
    assert semconv.NODE_DISK_WRITE not in default_span_attributes
    assert semconv.NODE_OPEN_FDS_CHANGE not in default_span_attributes


def test_psutil_probe_adds_rss_disk_io_and_open_descriptors(make_telemetry, tmp_path):
    telemetry = make_telemetry(resource_probe="psutil")
    opened: list[Any] = []
    kept: list[bytes] = []

    class Work(pocketflow.Node):
        def exec(self, prep_res: Any) -> None:
            # Above glibc's largest mmap threshold (32 MiB): always fresh pages, never heap
            # memory an earlier test freed, so RSS grows whatever ran before.
            kept.append(b"x" * (64 * MiB))
            with (tmp_path / "out.bin").open("wb") as out:
                out.write(b"y" * MiB)
                out.flush()
                os.fsync(out.fileno())
            opened.extend((tmp_path / f"kept-{index}").open("w") for index in range(3))

    try:
        pocketflow.Flow(start=Work()).run({})
    finally:
        for handle in opened:
            handle.close()

    attributes = telemetry.span("Work").attributes
    assert attributes[semconv.NODE_OPEN_FDS_CHANGE] == 3
    assert attributes[semconv.NODE_DISK_WRITE] >= MiB
    assert attributes[semconv.NODE_DISK_READ] >= 0
    assert attributes[semconv.NODE_MEMORY_GROWTH] >= 60 * MiB
    assert attributes[semconv.NODE_CPU_TIME] > 0


def test_probe_none_measures_nothing_but_durations(make_telemetry):
    telemetry = make_telemetry(resource_probe="none")
    pipeline().run({})

    assert semconv.NODE_CPU_TIME not in telemetry.span("Fetch").attributes
    assert telemetry.metric_points(semconv.METRIC_NODE_CPU_TIME) == []
    assert telemetry.metric_points(semconv.METRIC_NODE_MEMORY_GROWTH) == []
    assert len(telemetry.metric_points(semconv.METRIC_NODE_DURATION)) == 2


# --- Process metrics configuration ----------------------------------------------------------------


def test_process_metrics_default_to_the_curated_set():
    config = process_metrics_config(Settings(), environ={})

    assert config == {
        "process.cpu.time": ["user", "system"],
        "process.cpu.utilization": None,
        "process.memory.usage": None,
        "process.thread.count": None,
        "process.open_file_descriptor.count": None,
        "cpython.gc.collections": None,
        "cpython.gc.collected_objects": None,
        "cpython.gc.uncollectable_objects": None,
    }
    assert not any(name.startswith(("system.", "process.runtime.")) for name in CURATED)


def test_exclusion_variable_and_drop_setting_remove_process_metrics():
    settings = load_settings({"drop_metrics": "process.thread.count"}, environ={})
    environ = {"OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS": "process.cpu.*, cpython.gc.col*"}

    assert sorted(process_metrics_config(settings, environ)) == [
        "cpython.gc.uncollectable_objects",
        "process.memory.usage",
        "process.open_file_descriptor.count",
    ]


@pytest.mark.parametrize(
    ("options", "environ"),
    [
        ({"process_metrics": "false"}, {}),
        ({}, {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "flask, system_metrics"}),
        ({}, {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"}),
        ({}, {"OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS": "process.*,cpython.*"}),
        ({"drop_metrics": "*"}, {}),
    ],
)
def test_process_metrics_are_not_started_when_turned_off(monkeypatch, options, environ):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    assert start_process_metrics(load_settings(options, environ={})) is False


def test_disabled_instrumentations_are_read_like_opentelemetry_instrument():
    environ = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests , system_metrics"}

    assert instrumentation_disabled("system_metrics", environ)
    assert not instrumentation_disabled("threading", environ)
    assert not instrumentation_disabled("threading", {})
