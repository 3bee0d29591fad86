"""The run model: what runs (:class:`NodeInfo`, :class:`FlowGraph`) and a run in
progress (:class:`Run`), with the operations an adapter reports during a run.

A :class:`Run` is made by ``Recorder.begin``; its methods hand each report to the
recorder that made it. None of them raises into the application.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context, trace

from reasonflow_otel import semconv

RUN_KEY = context.create_key("reasonflow-otel-run")


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
    # A span user code asked for (see :meth:`span`).
    is_user_span: bool = field(init=False)

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
        object.__setattr__(self, "is_user_span", self.kind == semconv.SPAN_KIND_USER)

    @classmethod
    def span(cls, engine: str, name: str) -> NodeInfo:
        """A span user code asked for (``@trace`` in Burr): nested like a node, counted
        in no metric (it is not a node of the workflow)."""
        return cls(engine, name, "", semconv.SPAN_KIND_USER, is_flow=False)


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
    """One flow, node, batch-item or user-span run in progress."""

    __slots__ = (
        "attempts",
        "base_context",
        "batch_size",
        "context",
        "cpu_time",
        "end_attributes",
        "end_time",
        "flow_name",
        "forks",
        "in_flight",
        "info",
        "is_flow",
        "is_item",
        "is_node",
        "memory_growth",
        "metric_attributes",
        "next_item_index",
        "node_ids",
        "owner",
        "parent",
        "phase",
        "phases",
        "recorder",
        "sampled",
        "span",
        "started",
        "token",
        "unsampled",
        "usage",
    )

    def __init__(
        self,
        recorder: Any,
        info: NodeInfo,
        parent: Run | None,
        flow_name: str | None,
        forks: int,
        is_item: bool = False,
    ) -> None:
        self.recorder = recorder
        self.info = info
        self.forks = forks
        self.is_item = is_item
        self.owner: object = None
        self.parent = parent
        self.flow_name = flow_name
        self.span: trace.Span = trace.INVALID_SPAN
        self.token: object | None = None
        self.context: context.Context | None = None
        self.base_context: context.Context | None = None  # the context without this run
        self.node_ids: dict[Hashable, str] | None = None
        self.metric_attributes: Mapping[str, Any] | None = None
        self.in_flight: Any = None
        self.started = 0.0
        self.end_time: int | None = None  # wall clock (ns) of an end whose span waits
        # The resource probe's readings: at the start, then what the run used.
        self.cpu_time = 0.0
        self.memory_growth = 0
        self.usage: Any = None  # what the psutil probe reads besides
        # Children of this run would be dropped by the sampler (see Recorder._open).
        self.unsampled = False
        self.sampled: bool | None = None  # whether its span is sampled, once asked
        self.phase: tuple[str, float] | None = None  # the phase in progress and its start
        self.phases: list[tuple[str, float, float]] | None = None  # the phases that ended
        self.attempts = 0
        self.batch_size: int | None = None
        self.next_item_index = 0
        self.end_attributes: dict[str, Any] = {}
        # A flow run; a node run (a step of a flow, or alone): a flow nested in a flow is both.
        self.is_flow = info.is_flow and not is_item
        self.is_node = not is_item and (not info.is_flow or parent is not None)

    @property
    def recording(self) -> bool:
        """Whether the run's span is sampled: work only a span would show can be skipped."""
        return not self.unsampled and self.span.is_recording()

    @property
    def reference(self) -> trace.SpanContext:
        """What ``link`` needs of this run; small, and valid after the run ended."""
        return self.span.get_span_context()

    # --- Ending ---------------------------------------------------------------------

    def end(
        self,
        *,
        successor: str | list[str] | None = None,
        attributes: Mapping[str, Any] | None = None,
        successor_later: bool = False,
    ) -> None:
        """The run ended normally: span attributes, metric points, context restored.

        ``successor_later``: the engine resolves the successor after the run; the
        span stays open (ending at this time) until :meth:`resolve_successor`.
        """
        self.recorder._finish(self, None, successor, attributes, successor_later)

    def resolve_successor(self, successor: str | list[str] | None) -> None:
        """The successor of a run ended with ``successor_later`` (None: none known)."""
        self.recorder._resolve_successor(self, successor)

    def fail(self, error: BaseException) -> None:
        """The run ended by ``error`` (the caller re-raises it, the same object)."""
        self.recorder._finish(self, error, None, None)

    # --- During the run -----------------------------------------------------------------

    def attempt(self, number: int, failed: BaseException | None = None) -> None:
        """Attempt ``number`` (from 1) begins; ``failed``: the previous one's error, retried."""
        if failed is None:
            self.attempts = number
        else:
            self.recorder._attempt(self, number, failed)

    def add_event(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        error: BaseException | None = None,
        metric: str | None = None,
    ) -> None:
        """A span event; ``error`` describes an exception; ``metric`` also counts it."""
        self.recorder._event(self, name, attributes, error, metric)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Attributes on the run's span now (never on metrics: any cardinality is fine)."""
        self.recorder._set_attributes(self, attributes)

    def link(
        self, target: Run | trace.SpanContext, attributes: Mapping[str, Any] | None = None
    ) -> None:
        """A span link to another run, or to a run's ``reference`` kept after it ended."""
        self.recorder._link(self, target, attributes)

    def capture(self, kind: str, attribute: str, value: Any) -> None:
        """``value``, redacted and bounded, as ``attribute`` if capture of ``kind`` is on."""
        self.recorder._capture_value(self, kind, attribute, value)

    def mark_phase(self, ended: str, began: str | None = None) -> None:
        """Phase ``ended`` ends now (it began at the previous mark, or with the run) and
        ``began`` starts; one still open ends with the run. For opt-in phase telemetry."""
        if self.recorder.times_phases:
            self.recorder._mark_phase(self, ended, began)

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """This run (begun with ``attach=False``, or ended) current for a ``with`` block."""
        run_context = self.context
        if run_context is None:  # ended: its context was let go (see Recorder._close)
            run_context = context.set_value(RUN_KEY, self, self.base_context)
        token = context.attach(run_context)
        try:
            yield
        finally:
            context.detach(token)


def current_run() -> Run | None:
    """The innermost flow, node or item running in this context."""
    return context.get_current().get(RUN_KEY)  # type: ignore[return-value]


@functools.lru_cache(maxsize=128)
def _graph_json(graph: FlowGraph, max_length: int) -> str:
    """``graph.to_json``, once per distinct graph: a flow runs the same graph again and again."""
    return graph.to_json(max_length)
