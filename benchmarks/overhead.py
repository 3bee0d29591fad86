"""Per-node overhead of reasonflow-otel, measured against the OpenTelemetry SDK's own floor.

    python benchmarks/overhead.py            # a few seconds
    python benchmarks/overhead.py --quick    # CI smoke: runs everything once, briefly

A linear flow of 100 trivial nodes runs many times in each mode; every figure is the
median over several rounds (modes interleaved within a round, so load drift hits them
alike) and is given per node in microseconds:

- ``bare``: a node run with no instrumentation;
- ``sdk_span``: one correctly parented span (start, make current, end) through a
  BatchSpanProcessor into an exporter that drops everything;
- ``sdk_hist``: one ``histogram.record`` with a node metric's attribute set;
- ``sampled``, ``unsampled``, ``suppressed``, ``uninstrumented``: what instrumentation
  adds to ``bare`` with every span sampled; with the sampler always off (metrics on);
  inside ``suppress_instrumentation()``; after ``uninstrument()``.

The ratios printed last are the ones the targets are set on. Noise is expected on a
shared machine: compare ratios from one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pocketflow
from opentelemetry import context, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler

from reasonflow_otel import semconv
from reasonflow_otel.instrumentation.pocketflow import PocketFlowInstrumentor
from reasonflow_otel.sampling import build_sampler
from reasonflow_otel.settings import Settings
from reasonflow_otel.views import build_views

NODES = 100
INSTRUMENTED_MODES = ("sampled", "unsampled", "suppressed", "uninstrumented")


@dataclass(frozen=True)
class Budget:
    """How long to measure: flow runs per timing, and rounds whose median is kept."""

    flow_runs: int
    rounds: int


FULL = Budget(flow_runs=10, rounds=7)
QUICK = Budget(flow_runs=2, rounds=1)


# --- The workload ------------------------------------------------------------------------


class Step(pocketflow.Node):
    """A node that does nothing: what is left is the engine's and our cost."""


class AsyncStep(pocketflow.AsyncNode):
    """The async twin of :class:`Step`."""


def linear_flow(flow_class: type[pocketflow.Flow], node_class: type) -> pocketflow.Flow:
    nodes = [node_class() for _ in range(NODES)]
    for node, following in itertools.pairwise(nodes):
        node >> following
    return flow_class(start=nodes[0])


@dataclass(frozen=True)
class Workload:
    """Runs a flow ``n`` times and returns the seconds per node run."""

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
    """Accepts every batch and keeps nothing: the export costs nothing measurable."""

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


@contextmanager
def nothing() -> Iterator[None]:
    yield


# --- The SDK floor ---------------------------------------------------------------------------


class SdkFloor:
    """The SDK calls a node's telemetry rests on, made directly with no wrapper around them."""

    def __init__(self, providers: Providers) -> None:
        self._tracer = providers.tracer_provider.get_tracer("benchmark")
        self._histogram = providers.meter_provider.get_meter("benchmark").create_histogram(
            semconv.METRIC_NODE_DURATION, unit="s"
        )
        self._metric_attributes = {
            semconv.ENGINE: "pocketflow",
            semconv.NODE_NAME: Step.__name__,
            semconv.GEN_AI_WORKFLOW_NAME: pocketflow.Flow.__name__,
        }

    def span_seconds(self, spans: int) -> float:
        """One child span per node: start it, make it current, restore the context, end it."""
        parent = self._tracer.start_span("flow")
        parent_context = trace.set_span_in_context(parent)
        started = time.perf_counter()
        for _ in range(spans):
            span = self._tracer.start_span(Step.__name__, context=parent_context)
            token = context.attach(trace.set_span_in_context(span, parent_context))
            context.detach(token)
            span.end()
        elapsed = time.perf_counter() - started
        parent.end()
        return elapsed / spans

    def hist_seconds(self, records: int) -> float:
        """One histogram point per node, with the attribute set a node's metrics carry."""
        started = time.perf_counter()
        for _ in range(records):
            self._histogram.record(0.000_001, self._metric_attributes)
        return (time.perf_counter() - started) / records


# --- Measuring --------------------------------------------------------------------------------


@dataclass
class Figures:
    """Per-node seconds of one workload, by figure name, one value per round."""

    rounds: dict[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.rounds[name])

    def overhead(self, mode: str) -> float:
        """Median over rounds of (mode - bare), so each round's load cancels out."""
        return statistics.median(
            mode_time - bare_time
            for mode_time, bare_time in zip(self.rounds[mode], self.rounds["bare"])
        )


def measure(workload: Workload, budget: Budget) -> Figures:
    settings = Settings()
    sampled = make_providers(settings, build_sampler(settings))
    floor_providers = make_providers(settings, build_sampler(settings))
    floor = SdkFloor(floor_providers)
    unsampled = make_providers(settings, ALWAYS_OFF)
    setups: dict[str, Callable[[], object]] = {
        "bare": nothing,
        "sampled": lambda: instrumented(sampled, settings),
        "unsampled": lambda: instrumented(unsampled, settings),
        "suppressed": lambda: suppressed(sampled, settings),
    }
    rounds: dict[str, list[float]] = {name: [] for name in (*setups, "uninstrumented")}
    rounds.update(sdk_span=[], sdk_hist=[])
    workload.run(budget.flow_runs)  # warm-up: imports, caches, first-call paths
    operations = budget.flow_runs * NODES
    for _ in range(budget.rounds):
        for name, setup in setups.items():
            with setup():  # type: ignore[attr-defined]
                rounds[name].append(workload.run(budget.flow_runs))
        with instrumented(sampled, settings):
            workload.run(1)
        rounds["uninstrumented"].append(workload.run(budget.flow_runs))
        rounds["sdk_span"].append(floor.span_seconds(operations))
        rounds["sdk_hist"].append(floor.hist_seconds(operations))
    for providers in (sampled, unsampled, floor_providers):
        providers.shutdown()
    return Figures(rounds)


# --- Reporting --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float
    target: str


def ratios(figures: Figures) -> list[Ratio]:
    span, hist = figures.median("sdk_span"), figures.median("sdk_hist")
    bare = figures.median("bare")
    return [
        Ratio("sampled / (sdk_span + sdk_hist)", figures.overhead("sampled") / (span + hist), "<= 1.25"),
        Ratio("unsampled / sdk_hist", figures.overhead("unsampled") / hist, "<= 1.25"),
        Ratio("uninstrumented / bare", figures.median("uninstrumented") / bare, "<= 1.03"),
    ]


def report(name: str, figures: Figures) -> None:
    micro = 1e6
    print(f"\n{name} flow, {NODES} nodes: microseconds per node (median of rounds)")
    print(f"  {'bare':<16} {figures.median('bare') * micro:8.2f}")
    print(f"  {'sdk_span':<16} {figures.median('sdk_span') * micro:8.2f}")
    print(f"  {'sdk_hist':<16} {figures.median('sdk_hist') * micro:8.2f}")
    for mode in INSTRUMENTED_MODES:
        print(f"  {mode:<16} {figures.overhead(mode) * micro:+8.2f}  (overhead over bare)")
    print("  ratios:")
    for ratio in ratios(figures):
        print(f"    {ratio.name:<34} {ratio.value:6.2f}   target {ratio.target}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (CI smoke)")
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else FULL
    for workload in (sync_workload(), async_workload()):
        report(workload.name, measure(workload, budget))


if __name__ == "__main__":
    main()
