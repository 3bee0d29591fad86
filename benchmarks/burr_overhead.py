"""Per-step overhead on Apache Burr: reasonflow-otel against Burr's own bridge, in one run.

    python benchmarks/burr_overhead.py            # a few seconds
    python benchmarks/burr_overhead.py --quick    # smoke: every figure, measured briefly

A Burr application loops over one trivial action ``STEPS`` times per ``run()``.
Every figure is a median over rounds, the modes interleaved within a round so that
load on a shared machine hits them alike, in microseconds per step:

- ``bare``: a step with no instrumentation;
- ``sdk_span``: one correctly parented span (start, make current, end) through a
  BatchSpanProcessor into an exporter that drops everything: the SDK's floor;
- ``burr_bridge``: what Burr's ``OpenTelemetryBridge`` (``with_hooks``) adds to
  ``bare`` (spans only: it records no metric);
- ``sdk_hist``: one ``histogram.record`` with a step metric's attribute set (a
  step records three by default: duration, CPU time, memory growth);
- ``sampled``: what ``BurrInstrumentor`` adds with every span sampled, every
  default metric and the default resource probe on;
- ``sampled_spans_only``: the same with reasonflow's metrics dropped by a View
  and no resource probe: the like-for-like comparison with the bridge;
- ``unsampled``: the sampler always off (metrics still recorded);
- ``recorder_sampled``, ``recorder_unsampled``: our recorder called from Burr's
  own step hooks (``with_hooks``, as the bridge is) exactly as the adapter calls
  it, with no adapter: ``adapter_*``, the mode minus its recorder figure, is the
  Burr adapter's share (it records the next action Burr itself chose, and
  evaluates no transition condition).

Both tracers write to the same kind of provider. Compare ratios from one run, not
figures across runs or machines.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import statistics
import time
from collections.abc import Callable, Sequence

from burr.core import Application, ApplicationBuilder, State, action, default, expr
from burr.integrations.opentelemetry import OpenTelemetryBridge
from burr.lifecycle import (
    PostApplicationExecuteCallHook,
    PostRunStepHook,
    PreApplicationExecuteCallHook,
    PreRunStepHook,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from shared import Budget, Instrumented, sdk_hist, sdk_span, tracer_provider

from reasonflow_otel import semconv
from reasonflow_otel.instrumentation.burr import ENGINE, BurrInstrumentor
from reasonflow_otel.recorder import FlowGraph, GraphNode, NodeInfo, Recorder, Run, fast_paths
from reasonflow_otel.sdk.views import build_views
from reasonflow_otel.settings import Settings

STEPS = 100
MICROSECONDS = 1e6


FULL = Budget(runs=20, rounds=9)
QUICK = Budget(runs=1, rounds=1)


@action(reads=["n"], writes=["n"])
def tick(state: State) -> State:
    return state.update(n=state["n"] + 1)


@action(reads=["n"], writes=["n"])
def stop(state: State) -> State:
    return state


def application(hooks: Sequence[object] = ()) -> Application:
    builder = (
        ApplicationBuilder()
        .with_actions(tick=tick, stop=stop)
        .with_transitions(("tick", "tick", expr(f"n < {STEPS - 1}")), ("tick", "stop", default))
        .with_state(n=0)
        .with_entrypoint("tick")
    )
    return (builder.with_hooks(*hooks) if hooks else builder).build()


def per_step(runs: int, build: Callable[[], Application]) -> float:
    """Seconds per step over ``runs`` runs of fresh apps (built outside the timing)."""
    apps = [build() for _ in range(runs)]
    started = time.perf_counter()
    for app in apps:
        app.run(halt_after=["stop"])
    return (time.perf_counter() - started) / (runs * STEPS)


TICK_METRIC_ATTRIBUTES = {
    "reasonflow.engine": "burr",
    "reasonflow.node.name": "tick",
    "gen_ai.workflow.name": "tick",
}


SPANS_ONLY = Settings(drop_metrics=("reasonflow.*",), resource_probe="none")
APPLICATION_INFO = NodeInfo(ENGINE, "tick", "Application", "application", is_flow=True)
TICK_INFO = NodeInfo(ENGINE, "tick", "FunctionBasedAction", "action", is_flow=False)
TICK_FIELDS = ("n",)  # what tick reads and writes
TICK_GRAPH = FlowGraph(
    tuple(GraphNode(name, name, "FunctionBasedAction") for name in ("tick", "stop")),
    (("tick", "tick", f"n < {STEPS - 1}"), ("tick", "stop", "default")),
)


class RecorderHook(
    PreApplicationExecuteCallHook, PostApplicationExecuteCallHook, PreRunStepHook, PostRunStepHook
):
    """Our recorder called from Burr's hooks as the adapter calls it, with no adapter (the
    next action is given: the adapter reads it from Burr's own choice)."""

    def __init__(self, sampler: Sampler, settings: Settings) -> None:
        meter_provider = MeterProvider(
            metric_readers=[InMemoryMetricReader()], views=build_views(settings)
        )
        self._recorder = Recorder(
            tracer_provider(sampler).get_tracer("benchmark"),
            meter_provider.get_meter("benchmark"),
            settings,
            fast_paths=fast_paths,
        )
        self._runs: list[Run | None] = []

    def pre_run_execute_call(self, *, app_id: str, partition_key: str, **_: object) -> None:
        identity: dict[str, object] = {semconv.APP_ID: app_id}
        if partition_key is not None:  # what the adapter records by default: its hash
            digest = hashlib.sha256(partition_key.encode()).hexdigest()
            identity[semconv.APP_PARTITION_KEY_HASH] = digest
        run = self._recorder.begin(
            APPLICATION_INFO, app_id, attributes=identity, graph=lambda: TICK_GRAPH
        )
        self._runs.append(run)

    def post_run_execute_call(self, *, exception: Exception | None, **_: object) -> None:
        self._end(exception, None)

    def pre_run_step(self, *, sequence_id: int, action: object, **_: object) -> None:
        attributes = {
            semconv.NODE_SEQUENCE_ID: sequence_id,
            semconv.NODE_READS: TICK_FIELDS,
            semconv.NODE_WRITES: TICK_FIELDS,
        }
        self._runs.append(
            self._recorder.begin(TICK_INFO, action, node_key="tick", attributes=attributes)
        )

    def post_run_step(self, *, exception: Exception | None, **_: object) -> None:
        run = self._runs[-1]
        if exception is None and run is not None and run.recording:
            run.add_event(
                semconv.EVENT_STATE_CHANGED, {semconv.STATE_CHANGED_COUNT: len(TICK_FIELDS)}
            )
            self._end(None, "tick")
        else:
            self._end(exception, None)

    def _end(self, error: Exception | None, successor: str | None) -> None:
        run = self._runs.pop()
        if run is None:
            return
        if error is None:
            run.end(successor=successor)
        else:
            run.fail(error)


def measure(budget: Budget) -> dict[str, float]:
    bridge_provider = tracer_provider(ALWAYS_ON)
    bridge = OpenTelemetryBridge(tracer=bridge_provider.get_tracer("burr"))
    timings: dict[str, list[float]] = {}
    floor_provider = tracer_provider(ALWAYS_ON)
    sampled = Instrumented(BurrInstrumentor, ALWAYS_ON, Settings())
    spans_only = Instrumented(BurrInstrumentor, ALWAYS_ON, SPANS_ONLY)
    unsampled = Instrumented(BurrInstrumentor, ALWAYS_OFF, Settings())

    def steps() -> float:
        return per_step(budget.runs, application)

    recorder_sampled = RecorderHook(ALWAYS_ON, Settings())
    recorder_unsampled = RecorderHook(ALWAYS_OFF, Settings())
    modes: dict[str, Callable[[], float]] = {
        "bare": lambda: per_step(budget.runs, application),
        "sdk_span": lambda: sdk_span(budget.runs * STEPS, floor_provider),
        "sdk_hist": lambda: sdk_hist(budget.runs * STEPS, TICK_METRIC_ATTRIBUTES),
        "burr_bridge": lambda: per_step(budget.runs, lambda: application([bridge])),
        "sampled": lambda: sampled.time(steps),
        "sampled_spans_only": lambda: spans_only.time(steps),
        "unsampled": lambda: unsampled.time(steps),
        "recorder_sampled": lambda: per_step(budget.runs, lambda: application([recorder_sampled])),
        "recorder_unsampled": lambda: per_step(
            budget.runs, lambda: application([recorder_unsampled])
        ),
    }
    for _ in range(budget.rounds):
        for name, mode in modes.items():
            gc.collect()  # each timing starts with no garbage left by the one before
            timings.setdefault(name, []).append(mode())
    medians = {name: statistics.median(values) * MICROSECONDS for name, values in timings.items()}
    bare = medians["bare"]
    figures = {
        "bare": bare,
        "sdk_span": medians["sdk_span"],
        "sdk_hist": medians["sdk_hist"],
        **{name: medians[name] - bare for name in OVER_BARE},
    }
    for mode in ("sampled", "unsampled"):
        figures[f"adapter_{mode}"] = figures[mode] - figures[f"recorder_{mode}"]
    return figures


OVER_BARE = (
    "burr_bridge",
    "sampled",
    "sampled_spans_only",
    "unsampled",
    "recorder_sampled",
    "recorder_unsampled",
)


def report(figures: dict[str, float]) -> None:
    print(f"\nburr application, {STEPS} steps per run (microseconds per step)")
    for name, value in figures.items():
        print(f"  {name:<36} {value:10.2f}")
    print("ratios")
    floor = figures["sdk_span"] + 3 * figures["sdk_hist"]
    ratios = {
        "sampled_spans_only / burr_bridge": figures["sampled_spans_only"] / figures["burr_bridge"],
        "sampled_spans_only / sdk_span": figures["sampled_spans_only"] / figures["sdk_span"],
        "burr_bridge / sdk_span": figures["burr_bridge"] / figures["sdk_span"],
        "sampled / (sdk_span + 3 sdk_hist)": figures["sampled"] / floor,
        "unsampled / 3 sdk_hist": figures["unsampled"] / (3 * figures["sdk_hist"]),
    }
    for name, value in ratios.items():
        print(f"  {name:<36} {value:10.2f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every figure, measured briefly")
    arguments = parser.parse_args(argv)
    report(measure(QUICK if arguments.quick else FULL))


if __name__ == "__main__":
    main()
