"""The run lifecycle: how a run's beginning, reports and end become spans and metric points.

An engine adapter describes *what* runs (a :class:`NodeInfo`, a
:class:`FlowGraph`) and reports the edges of each run; the :class:`Recorder`
owns *how* that becomes telemetry: span names and parents, attributes,
statuses, events and metrics. No adapter builds a span or records a metric, so
every engine emits the same telemetry.

Only the OpenTelemetry API is used here. What needs the SDK to be fast (merged
histogram points, span attributes given without a second cleaning, knowing that
the sampler drops every child of an unsampled span) comes in as ``fast_paths``
(``recorder.fast_paths``); without it the API's plain calls are made.

Everything reachable from an adapter is called inside the application's
workflow and must never raise: failures go to :func:`guard.report_internal_error`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import context, trace
from opentelemetry.metrics import Histogram, Meter
from opentelemetry.trace import Link, Tracer

from reasonflow_otel import semconv
from reasonflow_otel.guard import report_internal_error
from reasonflow_otel.propagation import baggage_attributes, baggage_selection, inherited_context
from reasonflow_otel.recorder.bounded import BoundedCache, CappedCounter
from reasonflow_otel.recorder.capture import Capture
from reasonflow_otel.recorder.errors import ErrorMapping, error_attributes
from reasonflow_otel.recorder.histograms import HistogramSeries, RecordingGroup
from reasonflow_otel.recorder.in_flight import InFlight, in_flight_gauge
from reasonflow_otel.recorder.model import RUN_KEY, FlowGraph, NodeInfo, Run
from reasonflow_otel.recorder.probe import ResourceProbe, make_probe
from reasonflow_otel.recorder.spans import ApiSpans
from reasonflow_otel.settings import Settings

# Items of one batch may start on several threads at once (a pool mapping ``_exec``).
_item_index_lock = threading.Lock()
# fork()s since this module was imported: a run begun in an ancestor process is
# not this process's to end (its parent ends and exports that span).
_forks = 0
# Capture kinds that are stores: captured key by key, filtered by the key settings.
_STORE_KINDS = frozenset({"shared", "state"})


class FastPaths(Protocol):
    """What an SDK-specific module makes faster than the API's plain calls."""

    def histogram_group(
        self, meter: Meter, instruments: Sequence[Histogram], cardinality_limit: int
    ) -> RecordingGroup:
        """Histograms recorded together, with one attribute set per point."""

    def drops_unsampled_children(self, tracer: Tracer) -> bool:
        """Whether ``tracer`` drops every span whose local parent was not sampled."""

    def span_writer(self, tracer: Tracer) -> ApiSpans | None:
        """What starts ``tracer``'s spans and sets their attributes faster (None: the API)."""


class ApiOnly:
    """No fast path: every point through ``record``, every span asked of the sampler."""

    @staticmethod
    def histogram_group(
        meter: Meter, instruments: Sequence[Histogram], cardinality_limit: int
    ) -> RecordingGroup:
        group = RecordingGroup(instruments)
        group.limit_series(cardinality_limit)
        return group

    @staticmethod
    def drops_unsampled_children(tracer: Tracer) -> bool:
        return False

    @staticmethod
    def span_writer(tracer: Tracer) -> ApiSpans | None:
        return None


class Recorder:
    """Turns run edges into spans and metric points for one engine."""

    def __init__(
        self,
        tracer: Tracer,
        meter: Meter,
        settings: Settings,
        *,
        fast_paths: FastPaths | None = None,
        top_level_run_ended: Callable[[], None] | None = None,
    ) -> None:
        fast_paths = fast_paths or ApiOnly()
        self._tracer = tracer
        self._drops_unsampled_children = fast_paths.drops_unsampled_children(tracer)
        self._spans: ApiSpans = fast_paths.span_writer(tracer) or ApiSpans(tracer)
        self._top_level_run_ended = top_level_run_ended
        self.settings = settings  # adapters read engine-specific settings here
        self._probe: ResourceProbe = make_probe(settings.resource_probe)
        self._baggage = baggage_selection(settings)
        self._capture = Capture(settings)
        self._captured = self._capture.phases
        self._errors = ErrorMapping()
        # Phase boundaries are timed only when something shows them.
        self.times_phases = settings.phase_durations or settings.phase_spans
        # What each node needs again at every run, found once: its place (the in-flight
        # gauge's, by key), its own span attributes with its id in the flow (checked
        # once), the histogram series of its place's successful runs.
        self._places: BoundedCache[Hashable, InFlight] = BoundedCache()
        self._prepared: BoundedCache[tuple[int, str | None], tuple[NodeInfo, Mapping[str, Any]]] = (
            BoundedCache()
        )
        self._node_series: dict[InFlight, HistogramSeries] = {}  # places are capped, so is this
        self._create_instruments(meter, fast_paths)

    def _create_instruments(self, meter: Meter, fast_paths: FastPaths) -> None:
        flow_duration = meter.create_histogram(
            semconv.METRIC_FLOW_DURATION, unit="s", description="Duration of flow runs."
        )
        node_duration = meter.create_histogram(
            semconv.METRIC_NODE_DURATION, unit="s", description="Duration of node runs."
        )
        limit = self.settings.metric_cardinality_limit
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
        # Counters an event may count in (``Run.add_event(..., metric=...)``).
        self._counters = {
            semconv.METRIC_NODE_RETRIES: CappedCounter(retries, semconv.METRIC_NODE_RETRIES, limit),
            semconv.METRIC_NODE_FALLBACKS: CappedCounter(
                fallbacks, semconv.METRIC_NODE_FALLBACKS, limit
            ),
        }
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
        node_histograms = [node_duration]
        if self._probe.measures:
            node_histograms += [cpu_time, memory_growth]
        self._node_points = fast_paths.histogram_group(meter, node_histograms, limit)
        self._flow_points = fast_paths.histogram_group(meter, [flow_duration], limit)

    # --- What an adapter declares and asks ---------------------------------------------

    def control_flow(self, *exception_types: type[BaseException], attribute: str) -> None:
        """Runs ended by these exceptions were stopped on purpose, not failed."""
        self._errors.declare(exception_types, attribute)

    def captures(self, kind: str) -> bool:
        """Whether payload capture of ``kind`` (prep, exec, post, shared, state) is on."""
        return kind in self._captured

    # --- Beginning runs ---------------------------------------------------------------

    def begin(
        self,
        info: NodeInfo,
        owner: object = None,
        *,
        node_key: Hashable = None,
        attributes: Mapping[str, Any] | None = None,
        graph: Callable[[], FlowGraph] | None = None,
        links: Iterable[Run | trace.SpanContext] = (),
        attach: bool = True,
    ) -> Run | None:
        """Open a span for a flow or node run under the current run and make it current.

        With ``attach=False`` the run's context is kept in ``run.context`` and not
        made current: for runs that span a generator's iteration or continue
        elsewhere (``with run.current():``).
        """
        if info.is_user_span:
            return self._begin_user_span(info, owner)
        run: Run | None = None
        try:
            parent_context = context.get_current()
            parent: Run | None = parent_context.get(RUN_KEY)  # type: ignore[assignment]
            if parent is None:
                parent_context = inherited_context(parent_context)
            flow_name = info.name if info.is_flow else (parent.flow_name if parent else None)
            run = Run(self, info, parent, flow_name, _forks)
            run.owner = owner
            dropped = self._dropped(parent, parent_context)
            own, more = (
                ({}, None)  # no span will carry them
                if dropped
                else self._span_attributes(info, parent, parent_context, node_key, attributes)
            )
            self._open(
                run, parent_context, own, attach=attach, dropped=dropped, links=links, more=more
            )
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

    def begin_item(self, parent: Run, params: Mapping[str, Any] | None = None) -> Run | None:
        """Open a child span for one batch item or one parameter set of a batch flow."""
        run: Run | None = None
        try:
            with _item_index_lock:
                index = parent.next_item_index
                parent.next_item_index = index + 1
            run = Run(self, parent.info, parent, parent.flow_name, _forks, is_item=True)
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

    def _begin_user_span(self, info: NodeInfo, owner: object) -> Run | None:
        """A span user code inside a node asked for: a child of the current run, made
        current, counted in no metric."""
        run: Run | None = None
        try:
            parent: Run | None = context.get_value(RUN_KEY)  # type: ignore[assignment]
            run = Run(self, info, parent, parent.flow_name if parent else None, _forks, True)
            run.owner = owner
            self._open(run, context.get_current(), {semconv.ENGINE: info.engine}, info.name)
            return run
        except Exception as error:
            report_internal_error("starting a user span", error)
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
    ) -> tuple[Mapping[str, Any], Mapping[str, Any] | None]:
        """A run's start attributes: the node's own and its id in the flow (prepared once per
        node and id, unless baggage comes first), then the adapter's for this run."""
        node_id = None
        if parent is not None and parent.node_ids is not None:
            node_id = parent.node_ids.get(node_key)
        if self._baggage:  # ours come after: a baggage entry cannot overwrite them
            own = baggage_attributes(parent_context, self._baggage)
            return _with_id({**own, **info.attributes}, node_id), start_attributes
        key = (id(info), node_id)
        known = self._prepared.get(key)
        if known is None or known[0] is not info:  # the entry holds the info it is of
            prepared = self._spans.prepare(_with_id(dict(info.attributes), node_id))
            known = self._prepared[key] = (info, prepared)
        return known[1], start_attributes

    def _open(
        self,
        run: Run,
        parent_context: context.Context,
        attributes: Mapping[str, Any],
        span_name: str | None = None,
        *,
        attach: bool = True,
        dropped: bool | None = None,
        links: Iterable[Run | trace.SpanContext] = (),
        more: Mapping[str, Any] | None = None,
    ) -> None:
        """Start the run's span (``more``: attributes after ``attributes``) and its context."""
        if dropped is None:
            dropped = self._dropped(run.parent, parent_context)
        if dropped:
            # The sampler would drop the span: none is made, the parent's stays current.
            run.unsampled = True
            run.base_context = parent_context
        else:
            span = run.span = self._spans.start(
                span_name or run.info.span_name,
                parent_context,
                attributes,
                _links(links) if links else None,
                _sampled_parent(run.parent, parent_context),
                more,
            )
            run.unsampled = (
                self._drops_unsampled_children
                and not span.is_recording()
                and _is_unsampled_local(span)
            )
            run.base_context = trace.set_span_in_context(span, parent_context)
        run_context = run.context = context.set_value(RUN_KEY, run, run.base_context)
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
        text = described.fitted_json(self.settings.graph_max_length)
        if text:
            run.span.set_attribute(semconv.FLOW_GRAPH, text)

    def _node_place(self, info: NodeInfo, parent: Run | None) -> InFlight:
        """A node's place (engine, flow, node): its metric attributes and in-flight count."""
        key = (info.engine, parent.flow_name if parent else None, info.name)
        place = self._places.get(key)
        if place is None:  # once per place (and again after the cache is cleared)
            place = self._in_flight.get(key) or self._in_flight.add(
                key, _node_metric_attributes(info, parent)
            )
            self._places[key] = place
        return place

    # --- Reports during a run (through ``Run``'s methods) -----------------------------------

    def _attempt(self, run: Run, number: int, failed: BaseException | None) -> None:
        try:
            if failed is not None:
                attempt = {semconv.ATTEMPT: number - 1}
                self._event(run, semconv.EVENT_RETRY, attempt, failed, semconv.METRIC_NODE_RETRIES)
            run.attempts = number
        except Exception as internal:
            report_internal_error("recording an attempt", internal)

    def _event(
        self,
        run: Run,
        name: str,
        attributes: Mapping[str, Any] | None,
        error: BaseException | None,
        metric: str | None,
    ) -> None:
        """A span event when recording, and one point on ``metric`` (by the error raised)."""
        try:
            if metric is not None:
                error_type = self._errors.error_type(error)
                self._counters[metric].add(1, _with_error(run.metric_attributes, error_type))
            if run.span.is_recording():
                event = dict(attributes) if attributes else {}
                if error is not None:
                    event.update(error_attributes(error))
                run.span.add_event(name, event)
        except Exception as internal:
            report_internal_error("recording an event", internal)

    def _set_attributes(self, run: Run, attributes: Mapping[str, Any]) -> None:
        if not run.span.is_recording():
            return
        try:
            self._spans.set_attributes(run.span, attributes)
        except Exception as internal:
            report_internal_error("setting span attributes", internal)

    def _link(
        self, run: Run, target: Run | trace.SpanContext, attributes: Mapping[str, Any] | None
    ) -> None:
        if not run.span.is_recording():
            return
        try:
            target_context = target.reference if isinstance(target, Run) else target
            if target_context.is_valid:
                run.span.add_link(target_context, attributes)
        except Exception as internal:
            report_internal_error("linking runs", internal)

    def _capture_value(self, run: Run, kind: str, attribute: str, value: Any) -> None:
        if kind not in self._captured or not run.span.is_recording():
            return
        try:
            text = (
                self._capture.shared(value) if kind in _STORE_KINDS else self._capture.text(value)
            )
            run.span.set_attribute(attribute, text)
        except Exception as internal:
            report_internal_error("capturing a payload", internal)

    def _mark_phase(self, run: Run, ended: str, began: str | None) -> None:
        now = time.perf_counter()
        start = run.phase[1] if run.phase is not None else run.started
        if run.phases is None:
            run.phases = []
        run.phases.append((ended, start, now))
        run.phase = (began, now) if began is not None else None

    # --- Ending runs --------------------------------------------------------------

    def _finish(
        self,
        run: Run,
        error: BaseException | None,
        successor: str | list[str] | None,
        attributes: Mapping[str, Any] | None,
        successor_later: bool = False,
    ) -> None:
        """Close the run's span, restore the context and record its metrics."""
        if run.forks != _forks:  # begun before this process was forked: the parent ends it
            self._close(run, end_span=False)
            return
        recording = run.recording
        try:
            ended = time.perf_counter()
            duration = ended - run.started
            error_type = None if error is None else self._errors.error_type(error)
            if run.in_flight is not None:  # a node run, fully started
                self._probe.stop(run)
            if recording:
                self._end_attributes(run, ended, successor, attributes)
                if error is not None:
                    self._errors.mark(run.span, error, error_type)
                if run.end_attributes:
                    self._spans.set_attributes(run.span, run.end_attributes)
            self._record_metrics(run, duration, error_type)
        except Exception as internal:
            report_internal_error("finishing a run", internal)
        finally:
            held = successor_later and recording
            if held:
                run.end_time = time.time_ns()
            self._close(run, end_span=not held)
        if self._top_level_run_ended is not None and _is_top_level_here(run):
            self._top_level_run_ended()  # a pool worker delivers before the pool can end it

    def _resolve_successor(self, run: Run, successor: str | list[str] | None) -> None:
        """End the span a run's end left open, at the time the run ended."""
        if run.end_time is None:
            return
        try:
            end_time, run.end_time = run.end_time, None
            if successor is not None:
                self._spans.set_attributes(run.span, {semconv.NODE_SUCCESSOR: successor})
            run.span.end(end_time=end_time)
        except Exception as internal:
            report_internal_error("ending a span", internal)

    def _close(self, run: Run, *, end_span: bool = True) -> None:
        try:
            if run.token is not None:
                context.detach(run.token)
            # The run's context holds the run: dropped here, the pair (and the
            # engine's objects the run refers to) is freed at once, not by the
            # cyclic garbage collector.
            run.token = run.context = None
            if end_span and not run.unsampled:  # an unsampled run's span records nothing
                run.span.end()
        except Exception as internal:
            report_internal_error("closing a span", internal)

    def _end_attributes(
        self,
        run: Run,
        ended: float,
        successor: str | list[str] | None,
        attributes: Mapping[str, Any] | None,
    ) -> None:
        end_attributes = run.end_attributes
        if attributes:
            end_attributes.update(attributes)
        if successor is not None:
            end_attributes[semconv.NODE_SUCCESSOR] = successor
        if run.attempts:
            end_attributes[semconv.NODE_ATTEMPTS] = run.attempts
        if run.batch_size is not None:
            end_attributes[semconv.BATCH_SIZE] = run.batch_size
        if run.in_flight is not None and self._probe.measures:
            self._probe.annotate(run, end_attributes)
        if run.phases is not None or run.phase is not None:
            self._phase_telemetry(run, ended, end_attributes)

    def _phase_telemetry(self, run: Run, ended: float, attributes: dict[str, Any]) -> None:
        """Phase durations and phase spans, each opt-in on its own (both off by default)."""
        phases = list(run.phases or ())
        if run.phase is not None:  # still open: it ends with the run
            phases.append((run.phase[0], run.phase[1], ended))
        if self.settings.phase_durations:
            for phase, start, end in phases:
                attributes[semconv.phase_duration(phase)] = end - start
        if phases and self.settings.phase_spans:
            self._phase_spans(run, phases)

    def _phase_spans(self, run: Run, phases: list[tuple[str, float, float]]) -> None:
        """Phase spans drawn after the fact from the measured boundaries."""
        origin_ns = getattr(run.span, "start_time", None) or time.time_ns()
        parent = trace.set_span_in_context(run.span)
        for phase, start, end in phases:
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
        if error_type is None:  # one series per place, found once
            series = self._node_series.get(place)
            if series is None:
                series = self._node_series[place] = self._node_points.series(
                    place, place.attributes
                )
        else:
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


def _with_id(attributes: dict[str, Any], node_id: str | None) -> dict[str, Any]:
    if node_id is not None:
        attributes[semconv.NODE_ID] = node_id
    return attributes


def _sampled_parent(parent: Run | None, parent_context: context.Context) -> bool:
    """Whether ``parent``'s span is the current one of ``parent_context`` and sampled: read
    once per parent run (a flow's nodes all ask)."""
    if parent is None or parent_context is not parent.context:
        return False
    sampled = parent.sampled
    if sampled is None:
        sampled = parent.sampled = bool(parent.span.get_span_context().trace_flags.sampled)
    return sampled


def _is_top_level_here(run: Run) -> bool:
    """The outermost run of this process: no parent, or one begun in the process this one
    was forked from (a pool made inside a node runs its tasks under that node)."""
    return not run.is_item and (run.parent is None or run.parent.forks != run.forks)


def _node_metric_attributes(info: NodeInfo, parent: Run | None) -> dict[str, Any]:
    """Low-cardinality attributes for a node's metric points."""
    attributes = {semconv.ENGINE: info.engine, semconv.NODE_NAME: info.name}
    if parent is not None and parent.flow_name is not None:
        attributes[semconv.GEN_AI_WORKFLOW_NAME] = parent.flow_name
    if info.category:
        attributes[semconv.CATEGORY] = info.category
    return attributes


def _links(targets: Iterable[Run | trace.SpanContext]) -> list[Link]:
    contexts = (target.reference if isinstance(target, Run) else target for target in targets)
    return [Link(span_context) for span_context in contexts if span_context.is_valid]


def _is_unsampled_local(span: trace.Span) -> bool:
    """Whether the span is one of this process's, valid, not sampled, not recording."""
    span_context = span.get_span_context()
    return not (
        span_context.trace_flags.sampled
        or span_context.is_remote
        or not span_context.is_valid
        or span.is_recording()
    )


def _with_error(attributes: Mapping[str, Any] | None, error_type: str | None) -> Mapping[str, Any]:
    if error_type is None:
        return attributes or {}
    return {**(attributes or {}), semconv.ERROR_TYPE: error_type}


def _count_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_count_fork)
