"""Engine-neutral recording of workflow runs as spans and metric points.

An engine adapter describes *what* runs (a :class:`NodeInfo`, a
:class:`FlowGraph`) and calls the recorder at the edges of each run; the
recorder owns *how* that becomes telemetry: span names and parents, attributes,
statuses, events and metrics. No adapter builds a span or records a metric
itself, so every engine emits the same telemetry.

Every public method here is called from inside the application's workflow and
must never raise: failures go to :func:`guard.report_internal_error`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from asyncio import CancelledError
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context, trace
from opentelemetry.metrics import Meter
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation import _SPAN_KEY

from reasonflow_otel import semconv
from reasonflow_otel.guard import report_internal_error, safe_str
from reasonflow_otel.propagation import baggage_attributes, baggage_selection, inherited_context
from reasonflow_otel.recorder.bounded import CappedCounter
from reasonflow_otel.recorder.capture import Capture
from reasonflow_otel.recorder.histograms import HistogramSeries, histogram_group
from reasonflow_otel.recorder.in_flight import InFlight, in_flight_gauge
from reasonflow_otel.recorder.probe import ResourceProbe, make_probe
from reasonflow_otel.sdk.workers import top_level_run_ended
from reasonflow_otel.settings import Settings

_RUN_KEY = context.create_key("reasonflow-otel-run")
# Items of one batch may start on several threads at once (a pool mapping ``_exec``).
_item_index_lock = threading.Lock()
# fork()s since this module was imported: a run begun in an ancestor process is
# not this process's to end (its parent ends and exports that span).
_forks = 0
_PHASE_DURATIONS = {
    "prep": semconv.NODE_PREP_DURATION,
    "exec": semconv.NODE_EXEC_DURATION,
    "post": semconv.NODE_POST_DURATION,
}
_CAPTURE_ATTRIBUTES = {
    "prep": semconv.NODE_PREP_RESULT,
    "exec": semconv.NODE_EXEC_RESULT,
    "post": semconv.NODE_POST_RESULT,
}


@dataclass(frozen=True)
class NodeInfo:
    """What an engine runs, computed once per node class and name.

    ``category`` is an optional, low-cardinality grouping chosen by the user
    (e.g. ``ai_provider``): it goes on the span and on every metric point.
    """

    engine: str
    name: str
    class_name: str
    kind: str
    is_flow: bool
    category: str | None = None
    span_name: str = field(init=False)
    attributes: Mapping[str, Any] = field(init=False)
    flow_metric_attributes: Mapping[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        attributes = {
            semconv.ENGINE: self.engine,
            semconv.NODE_NAME: self.name,
            semconv.NODE_CLASS: self.class_name,
            semconv.NODE_KIND: self.kind,
        }
        if self.is_flow:
            attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.OPERATION_INVOKE_WORKFLOW
            attributes[semconv.GEN_AI_WORKFLOW_NAME] = self.name
        span_name = semconv.flow_span_name(self.name) if self.is_flow else self.name
        flow_metric_attributes = {
            semconv.ENGINE: self.engine,
            semconv.GEN_AI_WORKFLOW_NAME: self.name,
        }
        if semconv.gen_ai_latest_experimental():  # the convention's names as well
            flow_metric_attributes[semconv.GEN_AI_OPERATION_NAME] = (
                semconv.OPERATION_INVOKE_WORKFLOW
            )
            if not self.is_flow:
                attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.OPERATION_INVOKE_NODE
                attributes[semconv.GEN_AI_NODE_NAME] = self.name
                span_name = semconv.node_span_name(self.name)
        if self.category:
            attributes[semconv.CATEGORY] = self.category
            flow_metric_attributes[semconv.CATEGORY] = self.category
        object.__setattr__(self, "span_name", span_name)
        object.__setattr__(self, "attributes", attributes)
        object.__setattr__(self, "flow_metric_attributes", flow_metric_attributes)


@dataclass(frozen=True)
class GraphNode:
    key: Hashable
    name: str
    class_name: str


@dataclass(frozen=True)
class FlowGraph:
    """A flow's static graph: nodes in discovery order and labelled edges."""

    nodes: tuple[GraphNode, ...]
    edges: tuple[tuple[Hashable, Hashable, str], ...]

    def node_ids(self) -> dict[Hashable, str]:
        """Node key -> id, made once per graph object (a flow runs its graph again and again)."""
        return self._node_ids

    @functools.cached_property
    def _node_ids(self) -> dict[Hashable, str]:
        return {node.key: str(index) for index, node in enumerate(self.nodes)}

    def fitted_json(self, max_length: int) -> str:
        """``to_json``, once per graph object and length (an equal graph shares it too)."""
        text = self._texts.get(max_length)
        if text is None:
            text = self._texts[max_length] = _graph_json(self, max_length)
        return text

    @functools.cached_property
    def _texts(self) -> dict[int, str]:
        return {}

    def to_json(self, max_length: int) -> str:
        """Compact JSON, shortened by whole nodes (never cut mid-JSON) to fit."""
        kept = len(self.nodes)
        while True:
            text = self._json(kept)
            if len(text) <= max_length or kept == 0:
                return text if len(text) <= max_length else ""
            kept //= 2

    def _json(self, kept: int) -> str:
        ids = self.node_ids()
        nodes = self.nodes[:kept]
        kept_keys = {node.key for node in nodes}
        document: dict[str, Any] = {
            "nodes": [{"id": ids[n.key], "name": n.name, "class": n.class_name} for n in nodes],
            "edges": [
                {"source": ids[source], "target": ids[target], "action": action}
                for source, target, action in self.edges
                if source in kept_keys and target in kept_keys
            ],
        }
        if kept < len(self.nodes):
            document["truncated"] = True
            document["node_count"] = len(self.nodes)
        return json.dumps(document, separators=(",", ":"))


class Run:
    """One flow, node or batch-item run in progress."""

    __slots__ = (
        "attempts",
        "batch_size",
        "context",
        "cpu_time",
        "end_attributes",
        "exec_ended",
        "exec_started",
        "fallback",
        "flow_name",
        "forks",
        "in_flight",
        "info",
        "is_item",
        "memory_growth",
        "metric_attributes",
        "next_item_index",
        "node_ids",
        "owner",
        "parent",
        "span",
        "started",
        "token",
        "unsampled",
        "usage",
    )

    def __init__(
        self, info: NodeInfo, parent: Run | None, flow_name: str | None, is_item: bool = False
    ) -> None:
        self.info = info
        self.forks = _forks
        self.is_item = is_item
        self.owner: object = None
        self.parent = parent
        self.flow_name = flow_name
        self.span: trace.Span = trace.INVALID_SPAN
        self.token: object | None = None
        self.context: context.Context | None = None
        self.node_ids: dict[Hashable, str] | None = None
        self.metric_attributes: Mapping[str, Any] | None = None
        self.in_flight: InFlight | None = None
        self.started = 0.0
        # The resource probe's readings: at the start, then what the run used.
        self.cpu_time = 0.0
        self.memory_growth = 0
        self.usage: Any = None  # what the psutil probe reads besides
        # Children of this run would be dropped by the sampler (see Recorder._open).
        self.unsampled = False
        self.exec_started: float | None = None
        self.exec_ended: float | None = None
        self.attempts = 0
        self.fallback = False
        self.batch_size: int | None = None
        self.next_item_index = 0
        self.end_attributes: dict[str, Any] = {}

    @property
    def is_node(self) -> bool:
        """Runs as a step of a flow (or alone): a flow nested in a flow is both."""
        return not self.is_item and (not self.info.is_flow or self.parent is not None)

    @property
    def is_flow(self) -> bool:
        return self.info.is_flow and not self.is_item


def current_run() -> Run | None:
    """The innermost flow, node or item running in this context."""
    return context.get_value(_RUN_KEY)  # type: ignore[return-value]


class Recorder:
    """Turns run edges into spans and metric points for one engine."""

    def __init__(self, tracer: Tracer, meter: Meter, settings: Settings) -> None:
        self._tracer = tracer
        self._drops_unsampled_children = _drops_unsampled_children(tracer)
        self._settings = settings
        self._probe: ResourceProbe = make_probe(settings.resource_probe)
        self._baggage = baggage_selection(settings)
        self._capture = Capture(settings)
        self.captured_phases = self._capture.phases  # adapters skip capture work when empty
        self.settings = settings  # adapters read engine-specific settings here
        # Phase boundaries are timed only when something shows them.
        self._times_phases = settings.phase_durations or settings.phase_spans
        self._create_instruments(meter)

    def _create_instruments(self, meter: Meter) -> None:
        self._flow_duration = meter.create_histogram(
            semconv.METRIC_FLOW_DURATION, unit="s", description="Duration of flow runs."
        )
        self._node_duration = meter.create_histogram(
            semconv.METRIC_NODE_DURATION, unit="s", description="Duration of node runs."
        )
        limit = self._settings.metric_cardinality_limit
        retries = meter.create_counter(
            semconv.METRIC_NODE_RETRIES,
            unit="{attempt}",
            description="Node attempts that failed and were retried, by the error raised.",
        )
        fallbacks = meter.create_counter(
            semconv.METRIC_NODE_FALLBACKS,
            unit="{fallback}",
            description="Node runs whose result came from the fallback, by the error raised.",
        )
        self._retries = CappedCounter(retries, semconv.METRIC_NODE_RETRIES, limit)
        self._fallbacks = CappedCounter(fallbacks, semconv.METRIC_NODE_FALLBACKS, limit)
        self._in_flight = in_flight_gauge(meter)
        self._in_flight.limit_series(limit)
        cpu_time = meter.create_histogram(
            semconv.METRIC_NODE_CPU_TIME,
            unit="s",
            description="CPU time of the thread running the node (async: the event loop's).",
        )
        memory_growth = meter.create_histogram(
            semconv.METRIC_NODE_MEMORY_GROWTH,
            unit="By",
            description="Growth of the process's peak RSS during node runs (psutil probe: of RSS).",
        )
        # A node's histograms share its attributes: one group, one queue entry per run.
        node_histograms = [self._node_duration]
        if self._probe.measures:
            node_histograms += [cpu_time, memory_growth]
        self._node_points = histogram_group(meter, node_histograms, limit)
        self._flow_points = histogram_group(meter, [self._flow_duration], limit)

    # --- Starting runs ---------------------------------------------------------

    def start(
        self,
        info: NodeInfo,
        owner: object,
        *,
        node_key: Hashable = None,
        start_attributes: Mapping[str, Any] | None = None,
        graph: Callable[[], FlowGraph] | None = None,
        attach: bool = True,
    ) -> Run | None:
        """Open a span for a flow or node run and make it current.

        With ``attach=False`` the run's context is kept in ``run.context`` and not
        made current: for runs that span a generator's iteration (see
        ``reasonflow_otel.recorder.iteration``) or continue in another thread.
        """
        run: Run | None = None
        try:
            parent_context = context.get_current()
            parent: Run | None = parent_context.get(_RUN_KEY)  # type: ignore[assignment]
            if parent is None:
                parent_context = inherited_context(parent_context)
            flow_name = info.name if info.is_flow else (parent.flow_name if parent else None)
            run = Run(info, parent, flow_name)
            run.owner = owner
            dropped = self._dropped(parent, parent_context)
            attributes = (
                {}  # no span will carry them
                if dropped
                else self._span_attributes(info, parent, parent_context, node_key, start_attributes)
            )
            self._open(run, parent_context, attributes, attach=attach, dropped=dropped)
            if graph is not None and run.span.is_recording():
                self._describe_graph(run, graph)
            if run.is_node:
                place = self._node_place(info, parent)
                self._probe.start(run)
                run.metric_attributes = place.attributes
                place.start()  # last: nothing below can fail and leave the gauge raised
                run.in_flight = place
            return run
        except Exception as error:  # never let telemetry break the workflow
            report_internal_error("starting a run", error)
            if run is not None:
                self._close(run)  # the context must not keep a run nobody will finish
            return None

    def start_item(self, parent: Run, params: Mapping[str, Any] | None = None) -> Run | None:
        """Open a child span for one batch item or one parameter set of a batch flow."""
        run: Run | None = None
        try:
            with _item_index_lock:
                index = parent.next_item_index
                parent.next_item_index = index + 1
            run = Run(parent.info, parent, parent.flow_name, is_item=True)
            run.owner, run.node_ids = parent.owner, parent.node_ids
            attributes = {
                semconv.ENGINE: parent.info.engine,
                semconv.NODE_NAME: parent.info.name,
                semconv.BATCH_INDEX: index,
            }
            if params and parent.span.is_recording():  # unsampled: skip rendering params
                attributes.update(self._capture.params(params))
            if parent.info.is_flow:
                attributes[semconv.GEN_AI_WORKFLOW_NAME] = parent.info.name
            self._open(run, context.get_current(), attributes, f"{parent.info.name} item")
            run.metric_attributes = parent.metric_attributes or _node_metric_attributes(
                parent.info, parent.parent
            )
            return run
        except Exception as error:
            report_internal_error("starting a batch item", error)
            if run is not None:
                self._close(run)
            return None

    def _span_attributes(
        self,
        info: NodeInfo,
        parent: Run | None,
        parent_context: context.Context,
        node_key: Hashable,
        start_attributes: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        # Ours come last: a baggage entry cannot overwrite them.
        attributes = baggage_attributes(parent_context, self._baggage) if self._baggage else {}
        attributes.update(info.attributes)
        if start_attributes:
            attributes.update(start_attributes)
        if parent is not None and parent.node_ids is not None:
            node_id = parent.node_ids.get(node_key)
            if node_id is not None:
                attributes[semconv.NODE_ID] = node_id
        return attributes

    def _open(
        self,
        run: Run,
        parent_context: context.Context,
        attributes: dict[str, Any],
        span_name: str | None = None,
        *,
        attach: bool = True,
        dropped: bool | None = None,
    ) -> None:
        if dropped is None:
            dropped = self._dropped(run.parent, parent_context)
        if dropped:
            # The sampler would drop the span: none is made, the parent's stays current.
            run.unsampled = True
            run_context = context.set_value(_RUN_KEY, run, parent_context)
        else:
            span = run.span = self._tracer.start_span(
                span_name or run.info.span_name,
                context=parent_context,
                kind=SpanKind.INTERNAL,
                attributes=attributes,
            )
            run.unsampled = (
                self._drops_unsampled_children
                and not span.is_recording()
                and _is_unsampled_local(span)
            )
            # The run and its span in one new context (what set_value on set_span_in_context gives).
            run_context = context.Context({**parent_context, _RUN_KEY: run, _SPAN_KEY: span})
        run.context = run_context
        if attach:
            run.token = context.attach(run_context)
        run.started = time.perf_counter()

    def _dropped(self, parent: Run | None, parent_context: context.Context) -> bool:
        """Whether the sampler would drop the run's span: a child in its parent's context
        takes the parent's answer; otherwise the current span is looked at."""
        if parent is not None and parent_context is parent.context:
            return parent.unsampled
        return self._drops_unsampled_children and _is_unsampled_local(
            trace.get_current_span(parent_context)
        )

    def _describe_graph(self, run: Run, graph: Callable[[], FlowGraph]) -> None:
        """A graph that cannot be read costs the attribute, not the flow's span."""
        try:
            described = graph()
        except Exception as error:
            report_internal_error("reading a flow's graph", error)
            return
        run.node_ids = described.node_ids()
        text = described.fitted_json(self._settings.graph_max_length)
        if text:
            run.span.set_attribute(semconv.FLOW_GRAPH, text)

    def _node_place(self, info: NodeInfo, parent: Run | None) -> InFlight:
        """A node's place (engine, flow, node): its metric attributes and in-flight count."""
        key = (info.engine, parent.flow_name if parent else None, info.name)
        place = self._in_flight.get(key)
        if place is None:  # once per place
            place = self._in_flight.add(key, _node_metric_attributes(info, parent))
        return place

    # --- Events during a run ----------------------------------------------------

    def exec_started(self, run: Run) -> None:
        if self._times_phases and run.exec_started is None:
            run.exec_started = time.perf_counter()

    def exec_ended(self, run: Run) -> None:
        if self._times_phases:
            run.exec_ended = time.perf_counter()

    def attempt_failed(self, run: Run, attempt: int, error: BaseException) -> None:
        """An attempt raised and will be retried: an event, not an error status."""
        try:
            run.attempts = attempt
            self._count_attempt_outcome(run, self._retries, semconv.EVENT_RETRY, attempt, error)
        except Exception as internal:
            report_internal_error("recording a retry", internal)

    def fallback_used(self, run: Run, attempts: int, error: BaseException) -> None:
        """Every attempt failed and ``exec_fallback`` returned a result: the run is rescued.

        Not called when the fallback raises (PocketFlow's default re-raises): that
        run failed, and its exception is recorded when the run finishes.
        """
        try:
            run.attempts = attempts
            run.fallback = True
            self._count_attempt_outcome(
                run, self._fallbacks, semconv.EVENT_FALLBACK, attempts, error
            )
        except Exception as internal:
            report_internal_error("recording a fallback", internal)

    @staticmethod
    def _count_attempt_outcome(
        run: Run, counter: CappedCounter, event: str, attempt: int, error: BaseException
    ) -> None:
        """One point on ``counter`` (by the error raised) and, when recording, a span event."""
        counter.add(1, _with_error(run.metric_attributes, _error_type(error)))
        if run.span.is_recording():
            run.span.add_event(event, _attempt_event(attempt, error))

    def fallback_failed(self, run: Run, attempts: int, error: BaseException) -> None:
        """The fallback raised another exception: the last attempt's ``error`` becomes an event."""
        try:
            run.attempts = attempts
            if run.span.is_recording():
                run.span.add_event(semconv.EVENT_FALLBACK_FAILED, _attempt_event(attempts, error))
        except Exception as internal:
            report_internal_error("recording a failed fallback", internal)

    def routing_missed(self, run: Run, action: str, available: list[str]) -> None:
        """The node returned an action with no successor while it has others: the flow ends."""
        try:
            run.end_attributes[semconv.NODE_ROUTING_MISS] = True
            run.end_attributes[semconv.NODE_AVAILABLE_ACTIONS] = available
            if run.span.is_recording():
                run.span.add_event(
                    semconv.EVENT_ROUTING_MISS,
                    {semconv.NODE_ACTION: action, semconv.NODE_AVAILABLE_ACTIONS: available},
                )
        except Exception as internal:
            report_internal_error("recording a routing miss", internal)

    def set_attributes(self, run: Run, attributes: Mapping[str, Any]) -> None:
        """Attributes the running code adds to its own span (span only, never metrics)."""
        if not run.span.is_recording():
            return
        try:
            run.span.set_attributes(attributes)
        except Exception as internal:
            report_internal_error("setting span attributes", internal)

    def attempts_used(self, run: Run, attempts: int) -> None:
        """The exec phase stopped retrying after this many attempts."""
        run.attempts = attempts

    def capture(self, run: Run | None, phase: str, value: Any) -> None:
        """Record a prep, exec or post result, if ``Settings.capture`` asks for its phase."""
        if run is None or phase not in self.captured_phases or not run.span.is_recording():
            return
        try:
            run.span.set_attribute(_CAPTURE_ATTRIBUTES[phase], self._capture.text(value))
        except Exception as internal:
            report_internal_error("capturing a payload", internal)

    def capture_shared(self, run: Run | None, store: Any, *, ended: bool) -> None:
        """Record the shared store as a run starts or ends, if its capture is enabled."""
        if "shared" in self.captured_phases:
            attribute = semconv.SHARED_AFTER if ended else semconv.SHARED_BEFORE
            self._capture_store(run, store, attribute)

    def _capture_store(self, run: Run | None, store: Any, attribute: str) -> None:
        """A store's keys chosen for capture, redacted and bounded, on a recording span."""
        if run is None or not run.span.is_recording():
            return
        try:
            run.span.set_attribute(attribute, self._capture.shared(store))
        except Exception as internal:
            report_internal_error("capturing a store", internal)

    # --- Applications with ids and explicit state ---------------------------------

    def identity_attributes(self, app_id: str, partition_key: str | None) -> dict[str, Any]:
        """An application's id, and its partition key as ``Settings.partition_key`` allows."""
        attributes: dict[str, Any] = {semconv.APP_ID: app_id}
        mode = self._settings.partition_key
        if partition_key is not None and mode == "raw":
            attributes[semconv.APP_PARTITION_KEY] = partition_key
        elif partition_key is not None and mode == "hash":
            digest = hashlib.sha256(partition_key.encode()).hexdigest()
            attributes[semconv.APP_PARTITION_KEY_HASH] = digest
        return attributes

    def start_span(self, name: str, owner: object) -> Run | None:
        """Open a span that user code inside a node asked for: a child of the current
        run, made current, counted in no metric (it is not a node of the workflow)."""
        run: Run | None = None
        try:
            parent = current_run()
            engine = parent.info.engine if parent is not None else ""
            info = NodeInfo(engine, name, "", semconv.SPAN_KIND_USER, is_flow=False)
            run = Run(info, parent, parent.flow_name if parent else None, is_item=True)
            run.owner = owner
            self._open(run, context.get_current(), {semconv.ENGINE: engine}, name)
            return run
        except Exception as error:
            report_internal_error("starting a user span", error)
            if run is not None:
                self._close(run)
            return None

    def state_changed(self, run: Run | None, changed_keys: Collection[str]) -> None:
        """A ``gen_ai.execution.state.changed`` event: how many keys, and (opt-in) which."""
        if run is None or not run.span.is_recording():
            return
        try:
            attributes: dict[str, Any] = {semconv.STATE_CHANGED_COUNT: len(changed_keys)}
            if self._settings.state_key_names:
                attributes[semconv.STATE_CHANGED_KEYS] = [safe_str(k) for k in changed_keys]
            run.span.add_event(semconv.EVENT_STATE_CHANGED, attributes)
        except Exception as internal:
            report_internal_error("recording a state change", internal)

    def capture_state(self, run: Run | None, state: Any, *, ended: bool = True) -> None:
        """Record a state (redacted, bounded, key-filtered like the shared store), if the
        ``state`` capture is on: what ``reasonflow_otel.load_state`` reads back."""
        if "state" in self.captured_phases:
            attribute = semconv.STATE_AFTER if ended else semconv.STATE_BEFORE
            self._capture_store(run, state, attribute)

    # --- Ending runs --------------------------------------------------------------

    def finish(
        self,
        run: Run,
        *,
        error: BaseException | None = None,
        action: str | None = None,
        successor: str | None = None,
    ) -> None:
        """Close the run's span, restore the context and record its metrics."""
        if run.forks != _forks:  # begun before this process was forked: the parent ends it
            self._close(run, end_span=False)
            return
        try:
            ended = time.perf_counter()
            duration = ended - run.started
            error_type = _error_type(error)
            if run.in_flight is not None:  # a node run, fully started
                self._probe.stop(run)
            if run.span.is_recording():
                self._end_attributes(run, ended, action, successor)
                if error is not None:
                    _mark_failed(run.span, error, error_type)
                run.span.set_attributes(run.end_attributes)
            self._record_metrics(run, duration, error_type)
        except Exception as internal:
            report_internal_error("finishing a run", internal)
        finally:
            self._close(run)
        if run.parent is None and not run.is_item:
            top_level_run_ended()  # a pool worker delivers before the pool can end it

    def _close(self, run: Run, *, end_span: bool = True) -> None:
        try:
            if run.token is not None:
                context.detach(run.token)
            if end_span:
                run.span.end()
        except Exception as internal:
            report_internal_error("closing a span", internal)

    def _end_attributes(
        self,
        run: Run,
        ended: float,
        action: str | None,
        successor: str | None,
    ) -> None:
        attributes = run.end_attributes
        if action is not None:
            attributes[semconv.NODE_ACTION] = action
        if successor is not None:
            attributes[semconv.NODE_SUCCESSOR] = successor
        if run.attempts:
            attributes[semconv.NODE_ATTEMPTS] = run.attempts
            attributes[semconv.NODE_FALLBACK] = run.fallback
        if run.batch_size is not None:
            attributes[semconv.BATCH_SIZE] = run.batch_size
        if run.in_flight is not None and self._probe.measures:
            self._probe.annotate(run, attributes)
        if self._times_phases:
            self._phase_telemetry(run, ended, attributes)

    def _phase_telemetry(self, run: Run, ended: float, attributes: dict[str, Any]) -> None:
        """Phase durations and phase spans, each opt-in on its own (both off by default)."""
        phases = _phases_reached(run, ended)
        if self._settings.phase_durations:
            for phase, (start, end) in phases.items():
                attributes[_PHASE_DURATIONS[phase]] = end - start
        if phases and self._settings.phase_spans:
            self._phase_spans(run, phases)

    def _phase_spans(self, run: Run, phases: dict[str, tuple[float, float]]) -> None:
        """Phase spans drawn after the fact from the measured boundaries."""
        origin_ns = run.span.start_time or time.time_ns()  # type: ignore[attr-defined]
        parent = trace.set_span_in_context(run.span)
        for phase, (start, end) in phases.items():
            span = self._tracer.start_span(
                phase,
                context=parent,
                attributes={semconv.ENGINE: run.info.engine, semconv.NODE_NAME: run.info.name},
                start_time=origin_ns + int((start - run.started) * 1e9),
            )
            span.end(end_time=origin_ns + int((end - run.started) * 1e9))

    def _record_metrics(self, run: Run, duration: float, error_type: str | None) -> None:
        if run.is_flow:
            info = run.info
            series = self._series(
                self._flow_points, (info.engine, info.name), info.flow_metric_attributes, error_type
            )
            self._flow_points.record(series, (duration,))
        place = run.in_flight
        if not run.is_node or place is None:
            return
        place.end()
        series = self._series(self._node_points, place, place.attributes, error_type)
        if self._probe.measures:
            self._node_points.record(series, (duration, run.cpu_time, max(run.memory_growth, 0)))
        else:
            self._node_points.record(series, (duration,))

    @staticmethod
    def _series(
        group: Any, place: Hashable, attributes: Mapping[str, Any], error_type: str | None
    ) -> HistogramSeries:
        """The histogram series of a place, by the error its runs raised (None: none)."""
        if error_type is None:
            return group.series(place, attributes)
        return group.series((place, error_type), _with_error(attributes, error_type))


def _phases_reached(run: Run, ended: float) -> dict[str, tuple[float, float]]:
    """(start, end) of each phase that ran: none when prep raised, no post when exec raised."""
    if run.exec_started is None:
        return {}
    phases = {"prep": (run.started, run.exec_started)}
    if run.exec_ended is None:
        phases["exec"] = (run.exec_started, ended)
    else:
        phases["exec"] = (run.exec_started, run.exec_ended)
        phases["post"] = (run.exec_ended, ended)
    return phases


def _node_metric_attributes(info: NodeInfo, parent: Run | None) -> dict[str, Any]:
    """Low-cardinality attributes for a node's metric points."""
    attributes = {semconv.ENGINE: info.engine, semconv.NODE_NAME: info.name}
    if parent is not None and parent.flow_name is not None:
        attributes[semconv.GEN_AI_WORKFLOW_NAME] = parent.flow_name
    if info.category:
        attributes[semconv.CATEGORY] = info.category
    return attributes


def _drops_unsampled_children(tracer: Tracer) -> bool:
    """Whether the tracer's sampler drops every span whose local parent was not sampled.

    True for the SDK's always-off sampler and for a parent-based one with its
    default delegates (the default, per-flow ratios included), as their
    descriptions say; such spans are then not made at all. Other tracers and
    samplers are asked span by span.
    """
    sampler = getattr(tracer, "sampler", None)
    description = sampler.get_description() if isinstance(sampler, Sampler) else ""
    return description == "AlwaysOffSampler" or (
        description.startswith("ParentBased{")
        and "localParentNotSampled:AlwaysOffSampler" in description
    )


def _is_unsampled_local(span: trace.Span) -> bool:
    """Whether the span is one of this process's, valid, not sampled, not recording."""
    span_context = span.get_span_context()
    return not (
        span_context.trace_flags.sampled
        or span_context.is_remote
        or not span_context.is_valid
        or span.is_recording()
    )


@functools.lru_cache(maxsize=128)
def _graph_json(graph: FlowGraph, max_length: int) -> str:
    """``graph.to_json``, once per distinct graph: a flow runs the same graph again and again."""
    return graph.to_json(max_length)


def _with_error(attributes: Mapping[str, Any], error_type: str | None) -> Mapping[str, Any]:
    return attributes if error_type is None else {**attributes, semconv.ERROR_TYPE: error_type}


def _attempt_event(attempt: int, error: BaseException) -> dict[str, Any]:
    return {
        semconv.ATTEMPT: attempt,
        semconv.ERROR_TYPE: _class_name(error),
        semconv.EXCEPTION_MESSAGE: safe_str(error),
    }


def _class_name(error: BaseException) -> str:
    """How ``error.type`` and the exception event both name the exception's class."""
    return type(error).__qualname__


def _is_stop(error: BaseException) -> bool:
    """Cancelled or interrupted: the run was stopped, it did not fail."""
    return isinstance(error, (CancelledError, KeyboardInterrupt))


def _is_clean_exit(error: BaseException) -> bool:
    """``sys.exit()``, ``sys.exit(0)``: a deliberate, successful exit is no failure."""
    return isinstance(error, SystemExit) and error.code in (None, 0)


def _error_type(error: BaseException | None) -> str | None:
    if error is None or _is_stop(error) or _is_clean_exit(error):
        return None
    return _class_name(error)


def _mark_failed(span: trace.Span, error: BaseException, error_type: str | None) -> None:
    if _is_stop(error):
        span.set_attribute(semconv.CANCELLED, True)
        return
    if _is_clean_exit(error):
        return
    message = safe_str(error)
    try:
        # exception.type as error.type names it (the SDK would module-qualify it)
        span.record_exception(
            error, attributes={semconv.EXCEPTION_TYPE: _class_name(error)}, escaped=True
        )
    except Exception:  # the SDK prints the exception, and its __str__ may raise
        span.add_event(
            semconv.EVENT_EXCEPTION,
            {semconv.EXCEPTION_TYPE: _class_name(error), semconv.EXCEPTION_MESSAGE: message},
        )
    span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}"))
    span.set_attribute(semconv.ERROR_TYPE, error_type or "_OTHER")


def _count_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_count_fork)
