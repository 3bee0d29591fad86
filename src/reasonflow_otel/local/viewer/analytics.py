"""Workflow analytics for the viewer, fed one span at a time as the trace file streams by.

On top of :class:`~reasonflow_otel.local.stats.Stats` (the figures ``reasonflow-otel stats``
prints), each workflow gets its steps (the nodes and nested flows it ran directly), their share
of the workflow's time, how the latest run of each compares with its own history, a trend of
recent runs, and a prediction of the next run's duration.

A node span is written before its flow's span (children end first), so a step waits, in a
small per-trace table, until the span of its flow arrives. Memory grows with the number of
workflows and steps, and with the runs still waiting for their flow, never with all spans.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from reasonflow_otel import semconv
from reasonflow_otel.local.stats import RunStats, Stats
from reasonflow_otel.local.store import SpanRecord

RECENT_RUNS = 20  # the runs a prediction is drawn from
TREND_POINTS = 200  # runs per workflow kept for the resource trend
SHOWN = 5  # bottlenecks and slow steps listed per workflow
MAX_OPEN_TRACES = 10_000  # traces whose root has not arrived yet; the oldest are dropped
PREDICTION_BASIS = f"p50 and p95 of the last {RECENT_RUNS} runs (nearest rank)"


@dataclass(slots=True)
class Run:
    """One run of a flow or node, as a step of its workflow.

    A flow run without its own CPU time and memory growth (a top-level flow) gets the sums
    over the steps it ran; a nested flow measures its own.
    """

    name: str
    is_flow: bool
    start_ns: int
    duration: float
    failed: bool
    cpu_s: float | None
    memory_growth_bytes: int | None
    retries: int
    fallback: bool
    routing_miss: bool
    sums_steps: bool  # a flow run that did not measure its own resources

    @classmethod
    def of(cls, span: SpanRecord, name: str, is_flow: bool) -> Run:
        attributes = span.attributes
        cpu = attributes.get(semconv.NODE_CPU_TIME)
        growth = attributes.get(semconv.NODE_MEMORY_GROWTH)
        return cls(
            name=name,
            is_flow=is_flow,
            start_ns=span.start_ns,
            duration=span.duration,
            failed=span.failed,
            cpu_s=None if cpu is None else float(cpu),
            memory_growth_bytes=None if growth is None else int(growth),
            retries=span.retries,
            fallback=bool(attributes.get(semconv.NODE_FALLBACK)),
            routing_miss=bool(attributes.get(semconv.NODE_ROUTING_MISS)),
            sums_steps=is_flow and cpu is None and growth is None,
        )

    def include(self, step: Run) -> None:
        """Count a step's resources in this flow run's, unless the flow measured its own."""
        if not self.sums_steps:
            return
        if step.cpu_s is not None:
            self.cpu_s = (self.cpu_s or 0.0) + step.cpu_s
        if step.memory_growth_bytes is not None:
            self.memory_growth_bytes = (self.memory_growth_bytes or 0) + step.memory_growth_bytes


@dataclass
class StepStats(RunStats):
    """Runs of one step of a workflow, or of the workflow itself."""

    kind: str = "node"
    retries: int = 0
    fallbacks: int = 0
    routing_misses: int = 0
    latest: Run | None = None  # the run that started last

    def add_run(self, run: Run) -> None:
        self.durations.add(run.duration)
        self.errors += run.failed
        if run.cpu_s is not None:
            self.cpu_seconds = (self.cpu_seconds or 0.0) + run.cpu_s
        if run.memory_growth_bytes is not None:
            self.memory_growth = (self.memory_growth or 0) + run.memory_growth_bytes
        self.retries += run.retries
        self.fallbacks += run.fallback
        self.routing_misses += run.routing_miss
        if self.latest is None or run.start_ns >= self.latest.start_ns:
            self.latest = run

    def report(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            **super().report(),
            "retries": self.retries,
            "fallbacks": self.fallbacks,
            "routing_misses": self.routing_misses,
        }


@dataclass
class Workflow:
    """A workflow's own runs and those of its steps."""

    runs: StepStats = field(default_factory=lambda: StepStats(kind="flow"))
    recent: deque[Run] = field(default_factory=lambda: deque(maxlen=TREND_POINTS))
    steps: dict[str, StepStats] = field(default_factory=dict)

    def add_run(self, run: Run) -> None:
        self.runs.add_run(run)
        self.recent.append(run)

    def add_step(self, step: Run) -> None:
        stats = self.steps.get(step.name)
        if stats is None:
            stats = self.steps[step.name] = StepStats(kind="flow" if step.is_flow else "node")
        stats.add_run(step)

    def report(self) -> dict[str, Any]:
        return {
            **self.runs.report(),
            "retries": sum(stats.retries for stats in self.steps.values()),
            "fallbacks": sum(stats.fallbacks for stats in self.steps.values()),
            "routing_misses": sum(stats.routing_misses for stats in self.steps.values()),
            "steps": {name: stats.report() for name, stats in sorted(self.steps.items())},
            "bottlenecks": self._bottlenecks(),
            "slower_than_usual": self._slower_than_usual(),
            "prediction": self._prediction(),
            "trend": [_trend_point(run) for run in sorted(self.recent, key=_start)],
        }

    def _bottlenecks(self) -> list[dict[str, Any]]:
        """The steps that take the largest share of the workflow's time."""
        total = self.runs.durations.total
        ranked = sorted(self.steps.items(), key=lambda item: -item[1].durations.total)
        return [
            {
                "step": name,
                "total_s": stats.durations.total,
                "share": stats.durations.total / total if total else 0.0,
            }
            for name, stats in ranked[:SHOWN]
        ]

    def _slower_than_usual(self) -> list[dict[str, Any]]:
        """Steps whose latest run took longest relative to their own p50 (2 runs or more)."""
        rows = []
        for name, stats in self.steps.items():
            if stats.durations.count < 2:
                continue
            usual = stats.durations.quantile(0.5)
            latest = stats.latest.duration if stats.latest else 0.0
            ratio = latest / usual if usual else 0.0
            rows.append({"step": name, "latest_s": latest, "p50_s": usual, "ratio": ratio})
        rows.sort(key=lambda row: (-row["ratio"], row["step"]))
        return rows[:SHOWN]

    def _prediction(self) -> dict[str, Any]:
        last = sorted(self.recent, key=_start)[-RECENT_RUNS:]
        recent = sorted(run.duration for run in last)
        return {
            "basis": PREDICTION_BASIS,
            "runs": len(recent),
            "p50_s": nearest_rank(recent, 0.5),
            "p95_s": nearest_rank(recent, 0.95),
        }


def nearest_rank(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of sorted values (0 when there are none)."""
    if not ordered:
        return 0.0
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def _start(run: Run) -> int:
    return run.start_ns


def _trend_point(run: Run) -> dict[str, Any]:
    return {
        "start": iso_time(run.start_ns),
        "duration_s": run.duration,
        "status": "error" if run.failed else "ok",
        "cpu_s": run.cpu_s,
        "memory_growth_bytes": run.memory_growth_bytes,
    }


def iso_time(time_ns: int) -> str:
    """UTC, to the microsecond: ``2026-12-01T04:36:57.422189Z``."""
    moment = datetime.fromtimestamp(time_ns // 1000 / 1e6, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _OpenTrace:
    """A trace whose root span has not arrived: its flow runs, and steps waiting for theirs."""

    flows: dict[str, tuple[str, Run]] = field(default_factory=dict)  # span id -> workflow, run
    waiting: dict[str, list[Run]] = field(default_factory=dict)  # parent span id -> steps


class Analytics:
    """:class:`Stats` plus per-workflow steps, bottlenecks, trends and predictions."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.workflows: dict[str, Workflow] = {}
        self._open: OrderedDict[str, _OpenTrace] = OrderedDict()

    def add(self, span: SpanRecord) -> None:
        self.stats.add(span)
        trace = self._open_trace(span.trace_id)
        flow_name = span.flow_name
        if flow_name is not None:
            run = Run.of(span, flow_name, is_flow=True)
            trace.flows[span.span_id] = (flow_name, run)
            for step in trace.waiting.pop(span.span_id, ()):
                self._attribute(trace, span.span_id, step)
            self._workflow(flow_name).add_run(run)
            self._attribute(trace, span.parent_id, run)
        elif span.is_node:
            name = str(span.attributes.get(semconv.NODE_NAME, span.name))
            self._attribute(trace, span.parent_id, Run.of(span, name, is_flow=False))
        elif span.span_id in trace.waiting:  # a batch flow's item: its steps belong higher up
            for step in trace.waiting.pop(span.span_id):
                self._attribute(trace, span.parent_id, step)
        if not span.parent_id:
            del self._open[span.trace_id]

    def _attribute(self, trace: _OpenTrace, parent_id: str, step: Run) -> None:
        """A step to the workflow run that is its parent, now or when that span arrives."""
        if not parent_id:
            return
        owner = trace.flows.get(parent_id)
        if owner is None:
            trace.waiting.setdefault(parent_id, []).append(step)
            return
        workflow, run = owner
        self._workflow(workflow).add_step(step)
        run.include(step)

    def _open_trace(self, trace_id: str) -> _OpenTrace:
        trace = self._open.get(trace_id)
        if trace is None:
            trace = self._open[trace_id] = _OpenTrace()
            if len(self._open) > MAX_OPEN_TRACES:
                self._open.popitem(last=False)
        return trace

    def _workflow(self, name: str) -> Workflow:
        workflow = self.workflows.get(name)
        if workflow is None:
            workflow = self.workflows[name] = Workflow()
        return workflow

    def report(self) -> dict[str, Any]:
        """``reasonflow-otel stats --json``, plus ``workflows``."""
        return {
            **self.stats.report(),
            "workflows": {name: w.report() for name, w in sorted(self.workflows.items())},
        }
