"""Per-node overhead of reasonflow-otel, measured against the OpenTelemetry SDK's own floor.

    python benchmarks/overhead.py            # about 30 s
    python benchmarks/overhead.py --quick    # CI smoke: every figure, measured briefly
    python benchmarks/overhead.py --outage   # adds the backend-outage figures (~30 s)

A linear flow of 100 trivial nodes runs many times in each mode, for a sync and
an async flow. Every figure is a median over rounds, the modes interleaved within
a round so that load on a shared machine hits them alike, and is per node run in
microseconds:

- ``bare``: a node run with no instrumentation;
- ``sdk_span``: one correctly parented span (start, make current, end) through a
  BatchSpanProcessor into an exporter that drops everything, in a tight loop;
- ``sdk_hist``: one ``histogram.record`` with a node metric's attribute set, in a
  tight loop;
- ``sdk_span_attributes``, ``written_span_attributes``: ``sdk_span`` carrying a
  node's attributes, given through the SDK's calls, and as the recorder gives
  them (its span writer, the SDK fast path where the SDK passes its check);
- ``in_flow_span``, ``in_flow_hist``: the same SDK calls made by each node of a
  running (uninstrumented) flow around its own run, minus the same flow with
  empty hooks there: the SDK costs more there than in a tight loop (colder
  caches, deeper stacks), and that is the floor instrumentation really faces;
- ``recorder_sampled``, ``recorder_unsampled``: the same hooks calling our
  recorder (start, exec edges, finish) directly, as an adapter would: what a
  node costs without any adapter, so ``sampled - recorder_sampled`` is the
  adapter's share (its wrappers and what it computes);
- ``sampled``, ``unsampled``, ``suppressed``, ``uninstrumented``: what
  instrumentation adds to ``bare`` with every span sampled; with the sampler
  always off (metrics on); inside ``suppress_instrumentation()``; after
  ``uninstrument()``. Spans, every default metric and the default resource probe
  are on.

The ratios the targets are set on follow, against the tight-loop floor and the
in-flow floor, then the SDK cost of exactly what a node emits by default (its
span with all its attributes, its histogram points through ``record``). Compare
ratios from one run, not figures across runs or machines.
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
from reasonflow_otel.recorder import NodeInfo, Recorder, Run, fast_paths
from reasonflow_otel.recorder.probe import ResourceProbe, make_probe
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


FULL = Budget(flow_runs=8, rounds=15)
QUICK = Budget(flow_runs=1, rounds=1)


# --- The workload --------------------------------------------------------------------------


class Step(pocketflow.Node):
    """A node that does nothing: what is left is the engine's cost and ours."""


class AsyncStep(pocketflow.AsyncNode):
    """The async twin of :class:`Step`."""


class Hooks:
    """What the in-flow floor nodes call around their run (and the workload around the flow)."""

    def begin(self, node: Any) -> Any:
        return None

    def end(self, state: Any) -> None:
        pass


HOOKS: list[Hooks] = [Hooks()]  # the hooks in use: one slot, swapped per figure


class HookedStep(Step):
    """:class:`Step` with the current hooks around its run."""

    def _run(self, shared: Any) -> Any:
        hooks = HOOKS[0]
        state = hooks.begin(self)
        try:
            return super()._run(shared)
        finally:
            hooks.end(state)


class AsyncHookedStep(AsyncStep):
    """:class:`AsyncStep` with the current hooks around its run."""

    async def _run_async(self, shared: Any) -> Any:
        hooks = HOOKS[0]
        state = hooks.begin(self)
        try:
            return await super()._run_async(shared)
        finally:
            hooks.end(state)


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


def sync_workload(node_class: type = Step) -> Workload:
    flow = linear_flow(pocketflow.Flow, node_class)

    def run(times: int) -> float:
        hooks = HOOKS[0]
        started = time.perf_counter()
        for _ in range(times):
            state = hooks.begin(flow)
            flow.run({})
            hooks.end(state)
        return (time.perf_counter() - started) / (times * NODES)

    return Workload("sync", run)


def async_workload(node_class: type = AsyncStep) -> Workload:
    flow = linear_flow(pocketflow.AsyncFlow, node_class)

    async def timed(times: int) -> float:
        hooks = HOOKS[0]
        started = time.perf_counter()
        for _ in range(times):
            state = hooks.begin(flow)
            await flow.run_async({})
            hooks.end(state)
        return (time.perf_counter() - started) / (times * NODES)

    return Workload("async", lambda times: asyncio.run(timed(times)))


WORKLOADS = {"sync": (sync_workload, HookedStep), "async": (async_workload, AsyncHookedStep)}


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
        self.duration = next(
            histogram
            for histogram, (name, _) in zip(self._histograms, telemetry.histograms, strict=True)
            if name == semconv.METRIC_NODE_DURATION
        )
        self._span_attributes = telemetry.span_attributes
        self._writer = fast_paths.span_writer(self._tracer)  # checked once, here
        self.metric_attributes = {
            semconv.ENGINE: "pocketflow",
            semconv.NODE_NAME: Step.__name__,
            semconv.GEN_AI_WORKFLOW_NAME: pocketflow.Flow.__name__,
        }

    def span_seconds(self, spans: int) -> float:
        """One child span per node: start it, make it current, restore the context, end it."""
        return self._per_node(spans, lambda parent: self._span(parent, None, ()))

    def span_attributes_seconds(self, spans: int) -> float:
        """One child span per node carrying every attribute a node's span carries."""
        attributes = self._span_attributes
        return self._per_node(spans, lambda parent: self._span(parent, attributes, ()))

    def written_span_attributes_seconds(self, spans: int) -> float:
        """The same span, its attributes given as the recorder gives them: through the
        SDK fast path's span writer (the node's own prepared once, the rest at its end)."""
        writer = self._writer
        if writer is None:  # an SDK the fast path refuses: the SDK's calls
            return self.span_attributes_seconds(spans)
        names = list(self._span_attributes)
        half = len(names) // 2
        own = writer.prepare({name: self._span_attributes[name] for name in names[:half]})
        end = {name: self._span_attributes[name] for name in names[half:]}

        def node(parent: context.Context) -> None:
            span = writer.start(Step.__name__, parent, own, None, True)
            token = context.attach(trace.set_span_in_context(span, parent))
            context.detach(token)
            writer.set_attributes(span, end)
            span.end()

        return self._per_node(spans, node)

    def probe_seconds(self, nodes: int, probe: ResourceProbe) -> float:
        """The default resource probe's reads at a node's start and end (and its attributes)."""
        run = Run(None, NodeInfo("pocketflow", "Step", "Step", "node", False), None, None, 0)

        def node(_: context.Context) -> None:
            probe.start(run)
            probe.stop(run)
            probe.annotate(run, {})

        return self._per_node(nodes, node)

    def hist_seconds(self, records: int) -> float:
        """One histogram point per node, with the attribute set a node's metrics carry."""
        attributes = self.metric_attributes
        return self._per_node(records, lambda _: self.duration.record(0.000_001, attributes))

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
            histogram.record(0.000_001, self.metric_attributes)
        context.detach(token)
        span.end()

    def _record_histograms(self) -> None:
        for histogram in self._histograms:
            histogram.record(0.000_001, self.metric_attributes)


class SpanHooks(Hooks):
    """One span per flow and node run, current while it runs: the floor of a sampled node."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def begin(self, node: Any) -> Any:
        span = self._tracer.start_span(Step.__name__)
        return span, context.attach(trace.set_span_in_context(span))

    def end(self, state: Any) -> None:
        span, token = state
        context.detach(token)
        span.end()


class HistogramHooks(Hooks):
    """One duration point per flow and node run: the floor of an unsampled node."""

    def __init__(self, histogram: Any, attributes: Mapping[str, Any]) -> None:
        self._histogram, self._attributes = histogram, attributes

    def begin(self, node: Any) -> Any:
        return time.perf_counter()

    def end(self, state: Any) -> None:
        self._histogram.record(time.perf_counter() - state, self._attributes)


class RecorderHooks(Hooks):
    """Our recorder called directly, as the adapter calls it for a node, with no adapter."""

    def __init__(self, providers: Providers, settings: Settings) -> None:
        self._recorder = Recorder(
            providers.tracer_provider.get_tracer("benchmark"),
            providers.meter_provider.get_meter("benchmark"),
            settings,
            fast_paths=fast_paths,
        )
        self._flow = NodeInfo("pocketflow", "Flow", "Flow", "flow", is_flow=True)
        self._node = NodeInfo("pocketflow", Step.__name__, Step.__name__, "node", is_flow=False)
        self._max_retries = {semconv.NODE_MAX_RETRIES: 1}
        self._default_action = {semconv.NODE_ACTION: "default"}
        self._node_end = {semconv.NODE_ACTION: "default", semconv.NODE_FALLBACK: False}

    def begin(self, node: Any) -> Any:
        recorder = self._recorder
        if isinstance(node, pocketflow.Flow):
            return recorder.begin(self._flow, node)
        run = recorder.begin(self._node, node, attributes=self._max_retries)
        run.mark_phase("prep", "exec")
        return run

    def end(self, state: Any) -> None:
        if state.info.is_flow:
            state.end(attributes=self._default_action)
            return
        state.attempt(1)
        state.mark_phase("exec", "post")
        state.end(successor=Step.__name__, attributes=self._node_end)


@contextmanager
def hooks_in_use(hooks: Hooks) -> Iterator[None]:
    HOOKS[0] = hooks
    try:
        yield
    finally:
        HOOKS[0] = Hooks()


# --- Measuring --------------------------------------------------------------------------------


@dataclass
class Figures:
    """Per-node seconds of one workload by figure name, one value per round."""

    rounds: dict[str, list[float]]
    telemetry: NodeTelemetry

    def median(self, name: str) -> float:
        return statistics.median(self.rounds[name])

    def overhead(self, mode: str, base: str = "bare") -> float:
        """Median over rounds of (mode - base), so each round's load cancels out."""
        pairs = zip(self.rounds[mode], self.rounds[base], strict=True)
        return statistics.median(mode_time - base_time for mode_time, base_time in pairs)

    def in_flow(self, mode: str) -> float:
        """What hooks cost in a running flow, over the same flow with empty hooks."""
        return self.overhead(mode, base="hooked")

    def ratio(self, of_round: Callable[[Mapping[str, float]], float]) -> float:
        """Median over rounds of a ratio of one round's figures: figures measured
        moments apart share the machine's load, so the ratio holds when the load drifts."""
        count = len(self.rounds["bare"])
        rounds = ({name: values[i] for name, values in self.rounds.items()} for i in range(count))
        return statistics.median(of_round(figures) for figures in rounds)


def measure(name: str, budget: Budget, telemetry: NodeTelemetry) -> Figures:
    make_workload, hooked_step = WORKLOADS[name]
    workload, hooked = make_workload(), make_workload(hooked_step)
    settings = Settings()
    sampled = make_providers(settings, build_sampler(settings))
    unsampled = make_providers(settings, ALWAYS_OFF)
    floor_providers = make_providers(settings, build_sampler(settings))
    floor = SdkFloor(floor_providers, telemetry)
    recorder_sampled = make_providers(settings, build_sampler(settings))
    recorder_unsampled = make_providers(settings, ALWAYS_OFF)
    modes: dict[str, Callable[[], AbstractContextManager[object]]] = {
        "bare": nullcontext,
        "sampled": lambda: instrumented(sampled, settings),
        "unsampled": lambda: instrumented(unsampled, settings),
        "suppressed": lambda: suppressed(sampled, settings),
    }
    in_flow: dict[str, Hooks] = {
        "hooked": Hooks(),
        "in_flow_span": SpanHooks(floor_providers.tracer_provider.get_tracer("benchmark")),
        "in_flow_hist": HistogramHooks(floor.duration, floor.metric_attributes),
        "recorder_sampled": RecorderHooks(recorder_sampled, settings),
        "recorder_unsampled": RecorderHooks(recorder_unsampled, settings),
    }
    operations = budget.flow_runs * NODES
    probe = make_probe(settings.resource_probe)
    floors: dict[str, Callable[[], float]] = {
        "sdk_span": lambda: floor.span_seconds(operations),
        "sdk_hist": lambda: floor.hist_seconds(operations),
        "sdk_span_attributes": lambda: floor.span_attributes_seconds(operations),
        "written_span_attributes": lambda: floor.written_span_attributes_seconds(operations),
        "probe": lambda: floor.probe_seconds(operations, probe),
        "sdk_node_sampled": lambda: floor.node_seconds(operations, sampled=True),
        "sdk_node_unsampled": lambda: floor.node_seconds(operations, sampled=False),
    }
    names = (*modes, "uninstrumented", *in_flow, *floors)
    rounds: dict[str, list[float]] = {name: [] for name in names}
    workload.run(budget.flow_runs)  # warm-up: imports, caches, first-call paths
    hooked.run(budget.flow_runs)
    for _ in range(budget.rounds):
        for name, mode in modes.items():
            with mode():
                rounds[name].append(workload.run(budget.flow_runs))
        with instrumented(sampled, settings):
            workload.run(1)
        rounds["uninstrumented"].append(workload.run(budget.flow_runs))
        for name, hooks in in_flow.items():
            with hooks_in_use(hooks):
                rounds[name].append(hooked.run(budget.flow_runs))
        for name, measure_floor in floors.items():
            rounds[name].append(measure_floor())
    for providers in (sampled, unsampled, floor_providers, recorder_sampled, recorder_unsampled):
        providers.shutdown()
    return Figures(rounds, telemetry)


# --- Reporting --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float
    target: str


def _over(mode: str, base: str = "bare") -> Callable[[Mapping[str, float]], float]:
    return lambda r: r[mode] - r[base]


def target_ratios(figures: Figures) -> list[Ratio]:
    sampled, unsampled = _over("sampled"), _over("unsampled")
    flow_span, flow_hist = _over("in_flow_span", "hooked"), _over("in_flow_hist", "hooked")
    return [
        Ratio(
            "sampled / (sdk_span + sdk_hist)",
            figures.ratio(lambda r: sampled(r) / (r["sdk_span"] + r["sdk_hist"])),
            "1.50",
        ),
        Ratio(
            "unsampled / sdk_hist",
            figures.ratio(lambda r: unsampled(r) / r["sdk_hist"]),
            "1.00",
        ),
        Ratio(
            "sampled / (in_flow_span + in_flow_hist)",
            figures.ratio(lambda r: sampled(r) / (flow_span(r) + flow_hist(r))),
            "1.50",
        ),
        Ratio(
            "unsampled / in_flow_hist",
            figures.ratio(lambda r: unsampled(r) / flow_hist(r)),
            "1.00",
        ),
        Ratio("suppressed, microseconds", figures.overhead("suppressed") * MICROSECONDS, "1.00"),
        Ratio(
            "uninstrumented / bare",
            figures.ratio(lambda r: r["uninstrumented"] / r["bare"]),
            "1.03",
        ),
    ]


def floor_ratios(figures: Figures) -> list[Ratio]:
    sampled, unsampled = _over("sampled"), _over("unsampled")
    return [
        Ratio(
            "sampled / sdk_node_sampled",
            figures.ratio(lambda r: sampled(r) / r["sdk_node_sampled"]),
            "",
        ),
        Ratio(
            "unsampled / sdk_node_unsampled",
            figures.ratio(lambda r: unsampled(r) / r["sdk_node_unsampled"]),
            "",
        ),
    ]


def components(figures: Figures) -> list[tuple[str, float, str]]:
    """A sampled node's added time split into adapter, recorder, attributes, probe and SDK."""
    span = figures.median("sdk_span")
    attributes = figures.median("written_span_attributes") - span
    probe = figures.median("probe")
    recorder = figures.in_flow("recorder_sampled") - span - attributes - probe
    adapter = figures.overhead("sampled") - figures.in_flow("recorder_sampled")
    return [
        ("adapter", adapter, "sampled - recorder_sampled"),
        ("recorder", recorder, "recorder_sampled - sdk span, attributes and probe"),
        ("attributes", attributes, "written_span_attributes - sdk_span"),
        ("probe", probe, "the resource probe's reads"),
        ("sdk", span, "sdk_span: the span itself"),
    ]


def report(name: str, figures: Figures) -> None:
    def line(figure: str, value: float, note: str = "") -> None:
        print(f"  {figure:<20} {value * MICROSECONDS:9.2f}  {note}".rstrip())

    print(f"\n{name} flow, {NODES} nodes: microseconds per node run (median of rounds)")
    line("bare", figures.median("bare"))
    line("sdk_span", figures.median("sdk_span"), "tight loop")
    line("sdk_hist", figures.median("sdk_hist"), "tight loop")
    line(
        "sdk_span_attributes",
        figures.median("sdk_span_attributes"),
        "a span with a node's attributes, through the SDK's calls",
    )
    line(
        "written_span_attributes",
        figures.median("written_span_attributes"),
        "the same, written as the recorder writes them",
    )
    line("in_flow_span", figures.in_flow("in_flow_span"), "made by each node of a running flow")
    line("in_flow_hist", figures.in_flow("in_flow_hist"), "made by each node of a running flow")
    for mode in ("sampled", "unsampled", "suppressed", "uninstrumented"):
        line(mode, figures.overhead(mode), "over bare")
    for mode in ("recorder_sampled", "recorder_unsampled"):
        line(mode, figures.in_flow(mode), "our recorder called directly, no adapter")
    for mode in ("sampled", "unsampled"):
        adapter_share = figures.overhead(mode) - figures.in_flow(f"recorder_{mode}")
        line(f"adapter_{mode}", adapter_share, f"{mode} minus recorder_{mode}")
    points = f"{len(figures.telemetry.histograms)} histogram points through record()"
    attributes = f"span with {len(figures.telemetry.span_attributes)} attributes"
    line("sdk_node_sampled", figures.median("sdk_node_sampled"), f"{attributes} + {points}")
    line("sdk_node_unsampled", figures.median("sdk_node_unsampled"), points)
    print("  where a sampled node's time goes (component, derived as noted):")
    for component, value, note in components(figures):
        line(component, value, note)
    print("  ratios, median over rounds of each round's ratio (target at most):")
    for ratio in target_ratios(figures):
        print(f"    {ratio.name:<40} {ratio.value:7.2f}   ({ratio.target})")
    print("  against the SDK cost of what a node emits:")
    for ratio in floor_ratios(figures):
        print(f"    {ratio.name:<40} {ratio.value:7.2f}")


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
    for name in WORKLOADS:
        report(name, measure(name, budget, telemetry))
    startup.report(samples=1 if args.quick else startup.DEFAULT_SAMPLES)
    if args.outage:
        outage.report(args.outage_runs)


if __name__ == "__main__":
    main()
