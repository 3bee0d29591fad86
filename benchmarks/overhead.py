"""Per-node overhead of reasonflow-otel, measured against the OpenTelemetry SDK's own floor.

    python benchmarks/overhead.py            # a few seconds
    python benchmarks/overhead.py --quick    # CI smoke: every figure, measured briefly
    python benchmarks/overhead.py --outage   # adds the backend-outage figures (~30 s)

A linear flow of 100 trivial nodes runs many times in each mode, for a sync and
an async flow. Every figure is a median over rounds, the modes interleaved within
a round so that load on a shared machine hits them alike, and is per node run in
microseconds:

- ``bare``: a node run with no instrumentation;
- ``sdk_span``: one correctly parented span (start, make current, end) through a
  BatchSpanProcessor into an exporter that drops everything;
- ``sdk_hist``: one ``histogram.record`` with a node metric's attribute set;
- ``sampled``, ``unsampled``, ``suppressed``, ``uninstrumented``: what
  instrumentation adds to ``bare`` with every span sampled; with the sampler
  always off (metrics on); inside ``suppress_instrumentation()``; after
  ``uninstrument()``. Spans, every default metric and the default resource probe
  are on.

The ratios the targets are set on follow, then the SDK cost of exactly what a
node emits by default (its span with all its attributes, its histogram points),
which tells the wrapper's own share. Compare ratios from one run, not figures
across runs or machines.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import outage
import pocketflow
import startup
from opentelemetry import context, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler

from reasonflow_otel import semconv
from reasonflow_otel.instrumentation.pocketflow import PocketFlowInstrumentor
from reasonflow_otel.sdk.sampling import build_sampler
from reasonflow_otel.sdk.views import build_views
from reasonflow_otel.settings import Settings

NODES = 100
MICROSECONDS = 1e6


@dataclass(frozen=True)
class Budget:
    """How long to measure: flow runs per timing, and rounds whose median is kept."""

    flow_runs: int
    rounds: int


FULL = Budget(flow_runs=6, rounds=7)
QUICK = Budget(flow_runs=1, rounds=1)


# --- The workload --------------------------------------------------------------------------


class Step(pocketflow.Node):
    """A node that does nothing: what is left is the engine's cost and ours."""


class AsyncStep(pocketflow.AsyncNode):
    """The async twin of :class:`Step`."""


def linear_flow(flow_class: type[pocketflow.Flow], node_class: type) -> pocketflow.Flow:
    nodes = [node_class() for _ in range(NODES)]
    for node, following in itertools.pairwise(nodes):
        node >> following
    return flow_class(start=nodes[0])


@dataclass(frozen=True)
class Workload:
    """Runs its flow ``n`` times and returns the seconds per node run."""

    name: str
    run: Callable[[int], float]


def sync_workload() -> Workload:
    flow = linear_flow(pocketflow.Flow, Step)

    def run(times: int) -> float:
        started = time.perf_counter()
        for _ in range(times):
            flow.run({})
        return (time.perf_counter() - started) / (times * NODES)

    return Workload("sync", run)


def async_workload() -> Workload:
    flow = linear_flow(pocketflow.AsyncFlow, AsyncStep)

    async def timed(times: int) -> float:
        started = time.perf_counter()
        for _ in range(times):
            await flow.run_async({})
        return (time.perf_counter() - started) / (times * NODES)

    return Workload("async", lambda times: asyncio.run(timed(times)))


# --- Telemetry set-ups -----------------------------------------------------------------------


class DroppingSpanExporter(SpanExporter):
    """Accepts every batch and keeps nothing: the export itself costs nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@dataclass
class Providers:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def make_providers(settings: Settings, sampler: Sampler) -> Providers:
    """Providers as ``instrument()`` builds them, with exports that go nowhere."""
    tracer_provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(DroppingSpanExporter()))
    meter_provider = MeterProvider(
        metric_readers=[InMemoryMetricReader()],
        views=build_views(settings),
        shutdown_on_exit=False,
    )
    return Providers(tracer_provider, meter_provider)


@contextmanager
def instrumented(providers: Providers, settings: Settings) -> Iterator[None]:
    instrumentor = PocketFlowInstrumentor()
    instrumentor.instrument(
        tracer_provider=providers.tracer_provider,
        meter_provider=providers.meter_provider,
        settings=settings,
    )
    try:
        yield
    finally:
        instrumentor.uninstrument()


@contextmanager
def suppressed(providers: Providers, settings: Settings) -> Iterator[None]:
    with instrumented(providers, settings), suppress_instrumentation():
        yield


@dataclass(frozen=True)
class NodeTelemetry:
    """What one node run emits by default: its span's attributes, its histograms (name, unit)."""

    span_attributes: Mapping[str, Any]
    histograms: tuple[tuple[str, str], ...]


def node_telemetry(settings: Settings) -> NodeTelemetry:
    """Read off one instrumented run of the sync flow."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(
        metric_readers=[reader], views=build_views(settings), shutdown_on_exit=False
    )
    with instrumented(Providers(tracer_provider, meter_provider), settings):
        sync_workload().run(1)
    node_span = next(span for span in spans.get_finished_spans() if span.name == Step.__name__)
    metrics = reader.get_metrics_data()
    histograms = tuple(
        (metric.name, metric.unit)
        for resource_metrics in (metrics.resource_metrics if metrics else ())
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if isinstance(metric.data, Histogram)
        and any(
            point.attributes.get(semconv.NODE_NAME) == Step.__name__
            for point in metric.data.data_points
        )
    )
    return NodeTelemetry(dict(node_span.attributes or {}), histograms)


# --- The SDK floor ---------------------------------------------------------------------------


class SdkFloor:
    """The SDK calls a node's telemetry rests on, made directly, with no wrapper around them."""

    def __init__(self, providers: Providers, telemetry: NodeTelemetry) -> None:
        self._tracer = providers.tracer_provider.get_tracer("benchmark")
        meter = providers.meter_provider.get_meter("benchmark")
        self._histograms = [
            meter.create_histogram(name, unit=unit) for name, unit in telemetry.histograms
        ]
        self._duration = next(
            histogram
            for histogram, (name, _) in zip(self._histograms, telemetry.histograms, strict=True)
            if name == semconv.METRIC_NODE_DURATION
        )
        self._span_attributes = telemetry.span_attributes
        self._metric_attributes = {
            semconv.ENGINE: "pocketflow",
            semconv.NODE_NAME: Step.__name__,
            semconv.GEN_AI_WORKFLOW_NAME: pocketflow.Flow.__name__,
        }

    def span_seconds(self, spans: int) -> float:
        """One child span per node: start it, make it current, restore the context, end it."""
        return self._per_node(spans, lambda parent: self._span(parent, None, ()))

    def hist_seconds(self, records: int) -> float:
        """One histogram point per node, with the attribute set a node's metrics carry."""
        attributes = self._metric_attributes
        return self._per_node(records, lambda _: self._duration.record(0.000_001, attributes))

    def node_seconds(self, nodes: int, *, sampled: bool) -> float:
        """What a node emits: if sampled, its span with every attribute; its histogram points.

        The points are recorded while the span is current, as the node's are, so
        exemplars are offered as they are for real nodes.
        """
        if not sampled:
            return self._per_node(nodes, lambda _: self._record_histograms())
        attributes, histograms = self._span_attributes, self._histograms
        return self._per_node(nodes, lambda parent: self._span(parent, attributes, histograms))

    def _per_node(self, nodes: int, node: Callable[[context.Context], object]) -> float:
        flow = self._tracer.start_span("flow")
        flow_context = trace.set_span_in_context(flow)
        started = time.perf_counter()
        for _ in range(nodes):
            node(flow_context)
        elapsed = time.perf_counter() - started
        flow.end()
        return elapsed / nodes

    def _span(
        self,
        parent: context.Context,
        attributes: Mapping[str, Any] | None,
        histograms: Sequence[Any],
    ) -> None:
        span = self._tracer.start_span(Step.__name__, context=parent, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span, parent))
        for histogram in histograms:
            histogram.record(0.000_001, self._metric_attributes)
        context.detach(token)
        span.end()

    def _record_histograms(self) -> None:
        for histogram in self._histograms:
            histogram.record(0.000_001, self._metric_attributes)


# --- Measuring --------------------------------------------------------------------------------


@dataclass
class Figures:
    """Per-node seconds of one workload by figure name, one value per round."""

    rounds: dict[str, list[float]]
    telemetry: NodeTelemetry

    def median(self, name: str) -> float:
        return statistics.median(self.rounds[name])

    def overhead(self, mode: str) -> float:
        """Median over rounds of (mode - bare), so each round's load cancels out."""
        pairs = zip(self.rounds[mode], self.rounds["bare"], strict=True)
        return statistics.median(mode_time - bare_time for mode_time, bare_time in pairs)


def measure(workload: Workload, budget: Budget, telemetry: NodeTelemetry) -> Figures:
    settings = Settings()
    sampled = make_providers(settings, build_sampler(settings))
    unsampled = make_providers(settings, ALWAYS_OFF)
    floor_providers = make_providers(settings, build_sampler(settings))
    floor = SdkFloor(floor_providers, telemetry)
    modes: dict[str, Callable[[], AbstractContextManager[object]]] = {
        "bare": nullcontext,
        "sampled": lambda: instrumented(sampled, settings),
        "unsampled": lambda: instrumented(unsampled, settings),
        "suppressed": lambda: suppressed(sampled, settings),
    }
    operations = budget.flow_runs * NODES
    floors: dict[str, Callable[[], float]] = {
        "sdk_span": lambda: floor.span_seconds(operations),
        "sdk_hist": lambda: floor.hist_seconds(operations),
        "sdk_node_sampled": lambda: floor.node_seconds(operations, sampled=True),
        "sdk_node_unsampled": lambda: floor.node_seconds(operations, sampled=False),
    }
    rounds: dict[str, list[float]] = {name: [] for name in (*modes, "uninstrumented", *floors)}
    workload.run(budget.flow_runs)  # warm-up: imports, caches, first-call paths
    for _ in range(budget.rounds):
        for name, mode in modes.items():
            with mode():
                rounds[name].append(workload.run(budget.flow_runs))
        with instrumented(sampled, settings):
            workload.run(1)
        rounds["uninstrumented"].append(workload.run(budget.flow_runs))
        for name, measure_floor in floors.items():
            rounds[name].append(measure_floor())
    for providers in (sampled, unsampled, floor_providers):
        providers.shutdown()
    return Figures(rounds, telemetry)


# --- Reporting --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float
    target: str


def target_ratios(figures: Figures) -> list[Ratio]:
    span, hist = figures.median("sdk_span"), figures.median("sdk_hist")
    return [
        Ratio(
            "sampled / (sdk_span + sdk_hist)", figures.overhead("sampled") / (span + hist), "1.25"
        ),
        Ratio("unsampled / sdk_hist", figures.overhead("unsampled") / hist, "1.25"),
        Ratio("suppressed, microseconds", figures.overhead("suppressed") * MICROSECONDS, "1.00"),
        Ratio(
            "uninstrumented / bare",
            figures.median("uninstrumented") / figures.median("bare"),
            "1.03",
        ),
    ]


def floor_ratios(figures: Figures) -> list[Ratio]:
    return [
        Ratio(
            "sampled / sdk_node_sampled",
            figures.overhead("sampled") / figures.median("sdk_node_sampled"),
            "",
        ),
        Ratio(
            "unsampled / sdk_node_unsampled",
            figures.overhead("unsampled") / figures.median("sdk_node_unsampled"),
            "",
        ),
    ]


def report(name: str, figures: Figures) -> None:
    def line(figure: str, value: float, note: str = "") -> None:
        print(f"  {figure:<20} {value * MICROSECONDS:9.2f}  {note}".rstrip())

    print(f"\n{name} flow, {NODES} nodes: microseconds per node run (median of rounds)")
    line("bare", figures.median("bare"))
    line("sdk_span", figures.median("sdk_span"))
    line("sdk_hist", figures.median("sdk_hist"))
    for mode in ("sampled", "unsampled", "suppressed", "uninstrumented"):
        line(mode, figures.overhead(mode), "over bare")
    points = f"{len(figures.telemetry.histograms)} histogram points"
    attributes = f"span with {len(figures.telemetry.span_attributes)} attributes"
    line("sdk_node_sampled", figures.median("sdk_node_sampled"), f"{attributes} + {points}")
    line("sdk_node_unsampled", figures.median("sdk_node_unsampled"), points)
    print("  ratios (target at most):")
    for ratio in target_ratios(figures):
        print(f"    {ratio.name:<34} {ratio.value:7.2f}   ({ratio.target})")
    print("  against the SDK cost of what a node emits:")
    for ratio in floor_ratios(figures):
        print(f"    {ratio.name:<34} {ratio.value:7.2f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="everything, measured briefly")
    parser.add_argument("--outage", action="store_true", help="also the backend-outage figures")
    parser.add_argument(
        "--outage-runs",
        type=int,
        default=outage.DEFAULT_FLOW_RUNS,
        help="flow runs of 100 nodes per outage case (10000: a million node runs)",
    )
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else FULL
    telemetry = node_telemetry(Settings())
    for workload in (sync_workload(), async_workload()):
        report(workload.name, measure(workload, budget, telemetry))
    startup.report(samples=1 if args.quick else startup.DEFAULT_SAMPLES)
    if args.outage:
        outage.report(args.outage_runs)


if __name__ == "__main__":
    main()
