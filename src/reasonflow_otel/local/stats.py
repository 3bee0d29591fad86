"""``reasonflow-otel stats``: per-node and per-flow figures from a stream of spans.

Memory does not grow with the number of spans: each node or flow keeps a few sums and a
:class:`DurationSketch`, whose quantiles are within 1% of the exact value.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from reasonflow_otel import semconv
from reasonflow_otel.local.store import SpanRecord
from reasonflow_otel.local.text import format_duration, format_table, plural

BOTTLENECKS_SHOWN = 5
QUANTILES = {"p50": 0.5, "p95": 0.95}


class DurationSketch:
    """Quantiles of non-negative values within a relative error, in bounded memory.

    Values are counted in buckets whose bounds grow geometrically by ``gamma`` (the DDSketch
    scheme): a bucket's midpoint is within ``relative_accuracy`` of every value in it, and
    1 µs to 1 day fits in about 1,300 buckets.
    """

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        self._gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._log_gamma = math.log(self._gamma)
        self._buckets: Counter[int] = Counter()
        self._zeros = 0
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        if value <= 0:
            self._zeros += 1
        else:
            self._buckets[math.ceil(math.log(value) / self._log_gamma)] += 1

    def quantile(self, q: float) -> float:
        """The nearest-rank ``q`` quantile (``q`` from 0 to 1), clamped to the exact min and max."""
        if self.count == 0:
            return 0.0
        rank = max(math.ceil(q * self.count), 1)
        seen = self._zeros
        if rank <= seen:
            return 0.0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if rank <= seen:
                estimate = 2 * self._gamma**index / (self._gamma + 1)
                return min(max(estimate, self.min), self.max)
        return self.max


@dataclass
class RunStats:
    """Runs of one node or flow."""

    durations: DurationSketch = field(default_factory=DurationSketch)
    errors: int = 0
    cpu_seconds: float | None = None  # None until a span reports CPU time
    memory_growth: int | None = None  # bytes; None until a span reports memory growth

    def add(self, span: SpanRecord) -> None:
        self.durations.add(span.duration)
        self.errors += span.failed
        cpu = span.attributes.get(semconv.NODE_CPU_TIME)
        if cpu is not None:
            self.cpu_seconds = (self.cpu_seconds or 0.0) + float(cpu)
        growth = span.attributes.get(semconv.NODE_MEMORY_GROWTH)
        if growth is not None:
            self.memory_growth = (self.memory_growth or 0) + int(growth)

    def report(self) -> dict[str, Any]:
        runs = self.durations.count
        return {
            "runs": runs,
            "errors": self.errors,
            "error_rate": self.errors / runs if runs else 0.0,
            "min_s": self.durations.min if runs else 0.0,
            **{f"{name}_s": self.durations.quantile(q) for name, q in QUANTILES.items()},
            "max_s": self.durations.max,
            "total_s": self.durations.total,
            "cpu_s": self.cpu_seconds,
            "memory_growth_bytes": self.memory_growth,
        }


@dataclass
class FailureStats:
    """Everything that went wrong with one ``error.type``."""

    failed_runs: int = 0
    retried_attempts: int = 0
    where: Counter[str] = field(default_factory=Counter)
    example: str = ""

    def report(self) -> dict[str, Any]:
        return {
            "failed_runs": self.failed_runs,
            "retried_attempts": self.retried_attempts,
            "where": dict(self.where.most_common()),
            "example": self.example,
        }


class Stats:
    """Per-node and per-flow figures, fed one span at a time."""

    def __init__(self) -> None:
        self.spans = 0
        self.flows: dict[str, RunStats] = {}
        self.nodes: dict[str, RunStats] = {}
        self.failures: dict[str, FailureStats] = {}
        self.routing_misses: Counter[str] = Counter()

    def add_all(self, spans: Iterable[SpanRecord]) -> Stats:
        for span in spans:
            self.add(span)
        return self

    def add(self, span: SpanRecord) -> None:
        self.spans += 1
        flow_name = span.flow_name
        if flow_name is not None:
            _group(self.flows, flow_name).add(span)
        elif span.is_node:
            node_name = str(span.attributes.get(semconv.NODE_NAME, span.name))
            _group(self.nodes, node_name).add(span)
            self._count_failures(span, node_name)
        for event in span.events:
            if event.name == semconv.EVENT_ROUTING_MISS:
                node_name = str(span.attributes.get(semconv.NODE_NAME, span.name))
                action = event.attributes.get(semconv.NODE_ACTION)
                self.routing_misses[f"{node_name} -> '{action}'"] += 1

    def _count_failures(self, span: SpanRecord, where: str) -> None:
        """A node's failure and failed attempts; flows only pass on their nodes' failures."""
        if span.failed:
            failure = self._failure(str(span.attributes.get(semconv.ERROR_TYPE, "_OTHER")))
            failure.failed_runs += 1
            failure.where[where] += 1
            failure.example = failure.example or span.status_message.removeprefix(
                f"{span.attributes.get(semconv.ERROR_TYPE)}: "
            )
        for event in span.events:
            if event.name == semconv.EVENT_RETRY:
                failure = self._failure(str(event.attributes.get(semconv.ERROR_TYPE, "_OTHER")))
                failure.retried_attempts += 1
                failure.where[where] += 1
                failure.example = failure.example or str(
                    event.attributes.get(semconv.EXCEPTION_MESSAGE, "")
                )

    def _failure(self, error_type: str) -> FailureStats:
        failure = self.failures.get(error_type)
        if failure is None:
            failure = self.failures[error_type] = FailureStats()
        return failure

    def report(self) -> dict[str, Any]:
        """Everything, JSON-ready; durations and CPU time in seconds."""
        node_time = sum(stats.durations.total for stats in self.nodes.values())
        slowest = sorted(self.nodes.items(), key=lambda item: -item[1].durations.total)
        return {
            "spans": self.spans,
            "flows": {name: stats.report() for name, stats in sorted(self.flows.items())},
            "nodes": {name: stats.report() for name, stats in sorted(self.nodes.items())},
            "bottlenecks": [
                {
                    "node": name,
                    "total_s": stats.durations.total,
                    "share": stats.durations.total / node_time if node_time else 0.0,
                }
                for name, stats in slowest[:BOTTLENECKS_SHOWN]
            ],
            "routing_misses": dict(self.routing_misses.most_common()),
            "failures": {
                error_type: failure.report()
                for error_type, failure in sorted(
                    self.failures.items(),
                    key=lambda item: -(item[1].failed_runs + item[1].retried_attempts),
                )
            },
        }


def _group(groups: dict[str, RunStats], name: str) -> RunStats:
    stats = groups.get(name)
    if stats is None:
        stats = groups[name] = RunStats()
    return stats


# --- Text ---------------------------------------------------------------------------------------

_COLUMNS = ("runs", "errors", "error %", "min", "p50", "p95", "max", "total", "cpu")


def render_stats(report: dict[str, Any]) -> list[str]:
    """The report as aligned text tables."""
    lines = [f"{report['spans']:,} spans"]
    for title, key in (("Flows", "flows"), ("Nodes", "nodes")):
        lines += ["", *_table(title, report[key])]
    if report["bottlenecks"]:
        lines += ["", "Bottlenecks (nodes by total time)"]
        lines += [
            f"  {rank}. {entry['node']}  {format_duration(entry['total_s'])}"
            f"  ({entry['share']:.1%} of node time)"
            for rank, entry in enumerate(report["bottlenecks"], start=1)
        ]
    if report["routing_misses"]:
        lines += ["", "Routing misses (node -> action with no successor; the flow ended)"]
        lines += [f"  {where}: {count:,}" for where, count in report["routing_misses"].items()]
    lines += ["", "Failures by error.type"]
    lines += [_failure_line(error_type, f) for error_type, f in report["failures"].items()]
    if not report["failures"]:
        lines.append("  none")
    return lines


def _table(title: str, groups: dict[str, dict[str, Any]]) -> list[str]:
    if not groups:
        return [title, "  none"]
    return format_table([[title, *_COLUMNS], *([name, *_row(f)] for name, f in groups.items())])


def _row(figures: dict[str, Any]) -> list[str]:
    durations = ("min_s", "p50_s", "p95_s", "max_s", "total_s", "cpu_s")
    return [
        f"{figures['runs']:,}",
        f"{figures['errors']:,}",
        f"{figures['error_rate']:.1%}",
        *(format_duration(figures[key]) if figures[key] is not None else "-" for key in durations),
    ]


def _failure_line(error_type: str, failure: dict[str, Any]) -> str:
    where = ", ".join(f"{name} ({count})" for name, count in failure["where"].items())
    example = f'  "{failure["example"]}"' if failure["example"] else ""
    return (
        f"  {error_type}: {plural(failure['failed_runs'], 'failed run')}, "
        f"{plural(failure['retried_attempts'], 'retried attempt')}  in {where}{example}"
    )
