"""Per-node overhead on LangGraph, measured against the OpenTelemetry SDK's own floor.

    python benchmarks/langgraph_overhead.py            # about 90 s
    python benchmarks/langgraph_overhead.py --quick    # smoke: every figure, measured briefly

A compiled 3-node linear ``StateGraph`` (``a -> b -> c``, each node adds one) is invoked
``runs`` times per timing. The modes are interleaved within a round so that load on a
shared machine hits them alike; every figure and ratio is worked out within each round
(what a mode adds is its time minus the bare time of the same round) and the median over
rounds is kept, in microseconds:

- ``bare``: one graph invoke with no instrumentation (per invoke);
- ``sampled``, ``unsampled``: what ``LangGraphInstrumentor`` adds to an invoke with every
  span sampled, and with the sampler always off (metrics still recorded); every default
  is on: spans, every default metric, the default resource probe;
- ``sdk_span``: one correctly parented span (start, make current, end) through a
  BatchSpanProcessor into an exporter that drops everything, in a tight loop;
- ``sdk_hist``: one ``histogram.record`` with a node metric's attribute set;
- ``spans_per_invoke``, ``points_per_invoke``: what one instrumented invoke emits
  (counted from a run, not assumed); ``floor = spans * sdk_span + points * sdk_hist``;
- ``sdk_invoke_sampled``, ``sdk_invoke_points``: the SDK making exactly what one sampled
  invoke emits, by hand, in a tight loop: the recorded spans with all their attributes
  (the graph span, then each node span made current under it) and the recorded histogram
  points with their attribute sets through ``record``; the points alone for the second;
- ``in_graph_sdk_sampled``, ``in_graph_sdk_points``: the same SDK calls made by hand from
  inside the running graph (around the invoke, and by each node around its body) minus the
  same graph with empty hooks there: the SDK costs more inside a graph than in a tight loop
  (colder caches, deeper stacks), and that is the floor instrumentation really faces.

The per-node figures divide by the three nodes (the graph's own span and point included,
as the callback-based instrumentations were measured). Compare ratios from one run, not
figures across runs or machines.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from opentelemetry import context, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from shared import Budget, Instrumented, sdk_hist, sdk_span, tracer_provider

from reasonflow_otel.instrumentation.langgraph import LangGraphInstrumentor
from reasonflow_otel.sdk.views import build_views
from reasonflow_otel.settings import Settings

NODES = 3
MICROSECONDS = 1e6


FULL = Budget(runs=200, rounds=21)
QUICK = Budget(runs=2, rounds=1)


class Counter(TypedDict):
    n: int


def step(state: Counter) -> Counter:
    return {"n": state["n"] + 1}


def linear_graph(node: Callable[[int], Callable[[Counter], Counter]] = lambda _: step) -> Any:
    builder = StateGraph(Counter)
    for index, name in enumerate(("a", "b", "c")):
        builder.add_node(name, node(index))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder.compile(name="linear")


GRAPH = linear_graph()


def per_invoke(runs: int) -> float:
    """Seconds per invoke of the compiled graph."""
    started = time.perf_counter()
    for _ in range(runs):
        GRAPH.invoke({"n": 0})
    return (time.perf_counter() - started) / runs


class Hooks:
    """What the hooked graph's nodes call around their body, and each invoke around it."""

    def invoke_begin(self) -> Any:
        return None

    def invoke_end(self, token: Any) -> None:
        pass

    def node_begin(self, index: int) -> Any:
        return None

    def node_end(self, index: int, token: Any) -> None:
        pass


HOOKS: list[Hooks] = [Hooks()]  # the hooks in use: one slot, swapped per timing


def hooked_step(index: int) -> Callable[[Counter], Counter]:
    """:func:`step` with the current hooks around it, as node ``index``."""

    def run(state: Counter) -> Counter:
        hooks = HOOKS[0]
        token = hooks.node_begin(index)
        try:
            return step(state)
        finally:
            hooks.node_end(index, token)

    return run


HOOKED_GRAPH = linear_graph(hooked_step)


def per_hooked_invoke(runs: int, hooks: Hooks) -> float:
    """Seconds per invoke of the hooked graph, with ``hooks`` around the invoke and nodes."""
    HOOKS[0] = hooks
    started = time.perf_counter()
    for _ in range(runs):
        token = hooks.invoke_begin()
        HOOKED_GRAPH.invoke({"n": 0})
        hooks.invoke_end(token)
    elapsed = time.perf_counter() - started
    HOOKS[0] = Hooks()
    return elapsed / runs


NODE_METRIC_ATTRIBUTES = {
    "reasonflow.engine": "langgraph",
    "reasonflow.node.name": "a",
    "gen_ai.workflow.name": "linear",
}


@dataclass(frozen=True)
class Emitted:
    """What one sampled, instrumented invoke emitted: its spans in start order (the first is
    the graph's) and each histogram point as (instrument, attributes)."""

    spans: list[tuple[str, dict[str, Any]]]
    points: list[tuple[str, dict[str, Any]]]


def emitted_by_one_invoke() -> Emitted:
    """Record one instrumented invoke (sampled, default settings) to replay it by hand."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings()
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], views=build_views(settings))
    instrumentor = LangGraphInstrumentor()
    instrumentor.instrument(
        tracer_provider=provider, meter_provider=meter_provider, settings=settings
    )
    try:
        per_invoke(1)
    finally:
        instrumentor.uninstrument()
    spans = sorted(exporter.get_finished_spans(), key=lambda span: span.start_time or 0)
    data = reader.get_metrics_data()
    points = [
        (metric.name, dict(point.attributes or {}))
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
        if isinstance(point, HistogramDataPoint)
        for _ in range(point.count)
    ]
    return Emitted([(span.name, dict(span.attributes or {})) for span in spans], points)


def sdk_invoke(runs: int, emitted: Emitted, provider: TracerProvider | None) -> float:
    """The SDK making one invoke's spans (unless ``provider`` is None) and points by hand."""
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("floor")
    histograms = {name: meter.create_histogram(name, unit="s") for name, _ in emitted.points}
    points = [(histograms[name], attributes) for name, attributes in emitted.points]
    tracer = provider.get_tracer("floor") if provider is not None else None
    (graph_name, graph_attributes), *nodes = emitted.spans
    started = time.perf_counter()
    for _ in range(runs):
        if tracer is not None:
            graph = tracer.start_span(graph_name, attributes=graph_attributes)
            graph_context = trace.set_span_in_context(graph)
            for name, attributes in nodes:
                span = tracer.start_span(name, context=graph_context, attributes=attributes)
                token = context.attach(trace.set_span_in_context(span, graph_context))
                context.detach(token)
                span.end()
            graph.end()
        for histogram, attributes in points:
            histogram.record(0.001, attributes)
    return (time.perf_counter() - started) / runs


class SdkHooks(Hooks):
    """The SDK making by hand, from inside the running graph, what an instrumented invoke
    emits: the graph's span around the invoke, each node's span around its body (each made
    current), each histogram point as its run ends; no spans when ``provider`` is None."""

    def __init__(self, emitted: Emitted, provider: TracerProvider | None) -> None:
        meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("floor")
        histograms = {name: meter.create_histogram(name, unit="s") for name, _ in emitted.points}
        (self._graph_name, self._graph_attributes), *self._nodes = emitted.spans
        names = [attributes.get("reasonflow.node.name") for _, attributes in self._nodes]
        points = [(histograms[name], attributes) for name, attributes in emitted.points]
        node_name = "reasonflow.node.name"
        self._node_points = [[p for p in points if p[1].get(node_name) == n] for n in names]
        self._graph_points = [p for p in points if p[1].get(node_name) not in names]
        self._tracer = provider.get_tracer("floor") if provider is not None else None

    def invoke_begin(self) -> Any:
        if self._tracer is None:
            return None
        span = self._tracer.start_span(self._graph_name, attributes=self._graph_attributes)
        return span, context.attach(trace.set_span_in_context(span))

    def invoke_end(self, token: Any) -> None:
        if token is not None:
            span, attached = token
            context.detach(attached)
            span.end()
        for histogram, attributes in self._graph_points:
            histogram.record(0.001, attributes)

    def node_begin(self, index: int) -> Any:
        if self._tracer is None:
            return None
        name, attributes = self._nodes[index]
        span = self._tracer.start_span(name, attributes=attributes)
        return span, context.attach(trace.set_span_in_context(span))

    def node_end(self, index: int, token: Any) -> None:
        if token is not None:
            span, attached = token
            context.detach(attached)
            span.end()
        for histogram, attributes in self._node_points[index]:
            histogram.record(0.001, attributes)


def measure(budget: Budget) -> tuple[dict[str, float], dict[str, float]]:
    emitted = emitted_by_one_invoke()
    floor_provider = tracer_provider(ALWAYS_ON)
    sampled = Instrumented(LangGraphInstrumentor, ALWAYS_ON, Settings())
    unsampled = Instrumented(LangGraphInstrumentor, ALWAYS_OFF, Settings())
    sdk_sampled = SdkHooks(emitted, floor_provider)
    sdk_points = SdkHooks(emitted, None)

    def invokes() -> float:
        return per_invoke(budget.runs)

    modes: dict[str, Callable[[], float]] = {
        "bare": lambda: per_invoke(budget.runs),
        "sampled": lambda: sampled.time(invokes),
        "unsampled": lambda: unsampled.time(invokes),
        "sdk_span": lambda: sdk_span(budget.runs * NODES, floor_provider),
        "sdk_hist": lambda: sdk_hist(budget.runs * NODES, NODE_METRIC_ATTRIBUTES),
        "sdk_invoke_sampled": lambda: sdk_invoke(budget.runs, emitted, floor_provider),
        "sdk_invoke_points": lambda: sdk_invoke(budget.runs, emitted, None),
        "hooks_empty": lambda: per_hooked_invoke(budget.runs, Hooks()),
        "hooks_sdk_sampled": lambda: per_hooked_invoke(budget.runs, sdk_sampled),
        "hooks_sdk_points": lambda: per_hooked_invoke(budget.runs, sdk_points),
    }
    rounds: list[dict[str, float]] = []
    for _ in range(budget.rounds):
        timing: dict[str, float] = {}
        rounds.append(timing)
        for name, mode in modes.items():
            gc.collect()  # each timing starts with no garbage left by the one before
            timing[name] = mode() * MICROSECONDS
    figures = {name: statistics.median(per_round(r) for r in rounds) for name, per_round in FIGURES}
    figures["spans_per_invoke"] = len(emitted.spans)
    figures["points_per_invoke"] = len(emitted.points)
    ratios = {name: statistics.median(ratio(r, emitted) for r in rounds) for name, ratio in RATIOS}
    return figures, ratios


def _added(mode: str) -> Callable[[dict[str, float]], float]:
    """What ``mode`` adds to the bare invoke timed in the same round."""
    return lambda timing: timing[mode] - timing["bare"]


def _in_graph(timing: dict[str, float], mode: str) -> float:
    """What the SDK calls made by hand add inside the running graph (over empty hooks)."""
    return timing[mode] - timing["hooks_empty"]


def _floor(timing: dict[str, float], emitted: Emitted, *, spans: bool) -> float:
    """The tight-loop floor of what one invoke emits: its spans (if asked) and points."""
    points = len(emitted.points) * timing["sdk_hist"]
    return points + (len(emitted.spans) * timing["sdk_span"] if spans else 0.0)


# Each figure and ratio is worked out per round (the modes of a round ran back to back),
# then the median over rounds is kept.
FIGURES: tuple[tuple[str, Callable[[dict[str, float]], float]], ...] = (
    ("bare", lambda timing: timing["bare"]),
    ("sampled", _added("sampled")),
    ("unsampled", _added("unsampled")),
    ("sdk_span", lambda timing: timing["sdk_span"]),
    ("sdk_hist", lambda timing: timing["sdk_hist"]),
    ("sdk_invoke_sampled", lambda timing: timing["sdk_invoke_sampled"]),
    ("sdk_invoke_points", lambda timing: timing["sdk_invoke_points"]),
    ("in_graph_sdk_sampled", lambda timing: _in_graph(timing, "hooks_sdk_sampled")),
    ("in_graph_sdk_points", lambda timing: _in_graph(timing, "hooks_sdk_points")),
    ("sampled per node", lambda timing: _added("sampled")(timing) / NODES),
    ("unsampled per node", lambda timing: _added("unsampled")(timing) / NODES),
    ("sdk_invoke_sampled per node", lambda timing: timing["sdk_invoke_sampled"] / NODES),
    ("sdk_invoke_points per node", lambda timing: timing["sdk_invoke_points"] / NODES),
    ("in_graph_sdk_sampled per node", lambda t: _in_graph(t, "hooks_sdk_sampled") / NODES),
    ("in_graph_sdk_points per node", lambda t: _in_graph(t, "hooks_sdk_points") / NODES),
)
RATIOS: tuple[tuple[str, Callable[[dict[str, float], Emitted], float]], ...] = (
    (
        "sampled / in_graph_sdk_sampled",
        lambda t, _: _added("sampled")(t) / _in_graph(t, "hooks_sdk_sampled"),
    ),
    (
        "unsampled / in_graph_sdk_points",
        lambda t, _: _added("unsampled")(t) / _in_graph(t, "hooks_sdk_points"),
    ),
    (
        "sampled / sdk_invoke_sampled",
        lambda timing, _: _added("sampled")(timing) / timing["sdk_invoke_sampled"],
    ),
    (
        "unsampled / sdk_invoke_points",
        lambda timing, _: _added("unsampled")(timing) / timing["sdk_invoke_points"],
    ),
    (
        "sampled / floor (spans + points)",
        lambda timing, emitted: _added("sampled")(timing) / _floor(timing, emitted, spans=True),
    ),
    (
        "unsampled / floor (points)",
        lambda timing, emitted: _added("unsampled")(timing) / _floor(timing, emitted, spans=False),
    ),
    ("sampled / bare", lambda timing, _: _added("sampled")(timing) / timing["bare"]),
)


def report(figures: dict[str, float], ratios: dict[str, float]) -> None:
    print(f"\nlanggraph, {NODES}-node linear StateGraph (microseconds; per invoke unless per node)")
    for name, value in figures.items():
        print(f"  {name:<40} {value:10.2f}")
    print("ratios")
    for name, value in ratios.items():
        print(f"  {name:<40} {value:10.2f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every figure, measured briefly")
    arguments = parser.parse_args(argv)
    report(*measure(QUICK if arguments.quick else FULL))


if __name__ == "__main__":
    main()
