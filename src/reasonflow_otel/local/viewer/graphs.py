"""The flow graphs of one trace, as the run page draws them.

Each distinct graph (a workflow and its ``reasonflow.flow.graph`` attribute) is drawn once per
trace however often it ran: a sub-flow in a loop, or a fan-out of sub-applications, is one
panel with visit counts. A node counts its runs. An edge counts the transitions the spans
show, in the same run of the graph (the same flow run, or the same batch item): a run of its
target in the wave that follows a run of its source (the runs that start once the source has
ended, until one of them ends), and for an engine that records the action a node chose
(PocketFlow), with that action. In a sequence that is the next step; after a fan-out, every
branch; at a join, every branch that ends before it. An edge that no span shows was not
taken, whatever the engine would have chosen next (a run halted before its next step, or a
step that failed); a routing miss is kept with the node where it happened.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reasonflow_otel import semconv
from reasonflow_otel.local.store import SpanRecord
from reasonflow_otel.local.tree import TreeNode, root_label


def flow_graphs(flows: list[TreeNode]) -> list[dict[str, Any]]:
    """One panel per distinct graph among ``flows`` (flow spans in tree order)."""
    panels: dict[tuple[str, str], GraphPanel | None] = {}
    for flow in flows:
        text = str(flow.span.attributes[semconv.FLOW_GRAPH])
        key = (root_label(flow.span), text)
        if key not in panels:
            panels[key] = GraphPanel.parse(key[0], text)
        panel = panels[key]
        if panel is not None:
            panel.add_run(flow)
    return [panel.document() for panel in panels.values() if panel is not None]


@dataclass
class GraphPanel:
    """A graph and what every run of it in one trace did on it."""

    workflow: str
    truncated: bool
    nodes: dict[str, Mapping[str, Any]]  # id -> the attribute's node
    edges: list[Mapping[str, Any]]
    flow_span_ids: list[str] = field(default_factory=list)
    visits: dict[str, list[SpanRecord]] = field(default_factory=dict)  # node id -> its runs
    edge_runs: list[int] = field(default_factory=list)
    misses: list[dict[str, Any]] = field(default_factory=list)

    joining: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # -> edge indexes

    @classmethod
    def parse(cls, workflow: str, text: str) -> GraphPanel | None:
        """The graph of the attribute's JSON; None if it cannot be read."""
        try:
            graph = json.loads(text)
            nodes = {str(node["id"]): node for node in graph["nodes"]}
            edges = [edge for edge in graph["edges"] if isinstance(edge, dict)]
            truncated = bool(graph.get("truncated", False))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        panel = cls(workflow, truncated, nodes, edges, edge_runs=[0] * len(edges))
        for index, edge in enumerate(edges):
            key = (str(edge.get("source")), str(edge.get("target")))
            panel.joining.setdefault(key, []).append(index)
        return panel

    def add_run(self, flow: TreeNode) -> None:
        """Count one run of the graph: its node runs and the transitions between them."""
        self.flow_span_ids.append(flow.span.span_id)
        ended = not flow.span.failed and not flow.span.attributes.get(semconv.INTERRUPTED)
        for sequence in _graph_runs(flow):
            for step in sequence:
                node_id = _node_id(step)
                self.visits.setdefault(node_id, []).append(step)
                miss = routing_miss(step)
                if miss is not None:
                    self.misses.append({**miss, "node_id": node_id})
            self._count_transitions(sequence)
            self._count_terminals(sequence, ended)

    def _count_terminals(self, steps: list[SpanRecord], ended: bool) -> None:
        """Edges from an entry point (a node of no class with no incoming edge, such as
        LangGraph's ``__start__``) to the first wave of steps, and from the last wave to an
        exit point (no class, no outgoing edge: ``__end__``) when the run ended normally."""
        if not steps:
            return
        first_end = min(step.end_ns for step in steps)
        last_start = max(step.start_ns for step in steps)
        for step in steps:
            node_id = _node_id(step)
            if step.start_ns < first_end:
                for entry in self.entries:
                    self._count_edge(entry, node_id, None)
            if ended and step.end_ns >= last_start:
                for exit_point in self.exits:
                    self._count_edge(node_id, exit_point, None)

    def _count_transitions(self, steps: list[SpanRecord]) -> None:
        """A step feeds the next wave: the runs that start once it has ended, until one of
        them ends (in a sequence, the next step; after a fan-out, every branch)."""
        starts = [step.start_ns for step in steps]  # steps are in start order
        for source in steps:
            deadline: int | None = None
            for following in steps[bisect.bisect_left(starts, source.end_ns) :]:
                if deadline is not None and following.start_ns >= deadline:
                    break
                end = following.end_ns
                deadline = end if deadline is None else min(deadline, end)
                action = source.attributes.get(semconv.NODE_ACTION)
                self._count_edge(_node_id(source), _node_id(following), action)

    def _count_edge(self, source: str, target: str, action: Any) -> None:
        """One run of the edge from ``source`` to ``target``; when the engine records the
        action the source chose (PocketFlow), the edge labelled with it, else none (several
        edges can join two nodes, and an action with no edge there did not lead there)."""
        joining = self.joining.get((source, target), [])
        if action is not None:
            joining = [index for index in joining if self.edges[index].get("action") == action]
        if joining:
            self.edge_runs[joining[0]] += 1

    @property
    def entries(self) -> list[str]:
        """Entry points: nodes of no class that no edge leads to."""
        targets = {target for _, target in self.joining}
        return [node_id for node_id in self._terminals() if node_id not in targets]

    @property
    def exits(self) -> list[str]:
        """Exit points: nodes of no class that no edge leaves."""
        sources = {source for source, _ in self.joining}
        return [node_id for node_id in self._terminals() if node_id not in sources]

    def _terminals(self) -> list[str]:
        return [node_id for node_id, node in self.nodes.items() if is_terminal(node)]

    def document(self) -> dict[str, Any]:
        return {
            "span_id": self.flow_span_ids[0],
            "span_ids": self.flow_span_ids,
            "runs": len(self.flow_span_ids),
            "workflow": self.workflow,
            "truncated": self.truncated,
            "nodes": [
                _node_document(node, self.visits.get(node_id, []))
                for node_id, node in self.nodes.items()
            ],
            "edges": [
                {
                    "source": str(edge.get("source")),
                    "target": str(edge.get("target")),
                    "action": str(edge.get("action")),
                    "runs": runs,
                    "taken": runs > 0,
                }
                for edge, runs in zip(self.edges, self.edge_runs, strict=True)
            ],
            "routing_misses": self.misses,
        }


def routing_miss(span: SpanRecord) -> dict[str, Any] | None:
    """The node's action had no successor (the flow ended there), from the recorder's event."""
    for event in span.events:
        if event.name == semconv.EVENT_ROUTING_MISS:
            return {
                "node": str(span.attributes.get(semconv.NODE_NAME, span.name)),
                "span_id": span.span_id,
                "action": str(event.attributes.get(semconv.NODE_ACTION, "")),
                "expected": list(event.attributes.get(semconv.NODE_AVAILABLE_ACTIONS, ())),
            }
    return None


def is_batch_item(span: SpanRecord) -> bool:
    """One item of a batch node or flow (not a flow or node run of its own)."""
    return semconv.BATCH_INDEX in span.attributes and span.flow_name is None and not span.is_node


def _graph_runs(flow: TreeNode) -> list[list[SpanRecord]]:
    """The node runs of each run of the graph, in start order: the flow's own, and one
    sequence per item of a batch flow (which runs its graph once per item)."""
    own: list[SpanRecord] = []
    items: list[list[SpanRecord]] = []
    for child in flow.children:
        if semconv.NODE_ID in child.span.attributes:
            own.append(child.span)
        elif is_batch_item(child.span):
            items += _graph_runs(child)
    return [own, *items]


def _node_id(span: SpanRecord) -> str:
    return str(span.attributes[semconv.NODE_ID])


def is_terminal(node: Mapping[str, Any]) -> bool:
    """A graph's entry or exit point, not a node that runs (LangGraph's ``__start__`` and
    ``__end__``): the adapter gives it no class."""
    return not node.get("class")


def _node_document(node: Mapping[str, Any], runs: list[SpanRecord]) -> dict[str, Any]:
    status = "not_run" if not runs else "error" if any(s.failed for s in runs) else "ok"
    if is_terminal(node):
        status = "terminal"
    return {
        "id": str(node.get("id")),
        "name": str(node.get("name")),
        "class": str(node.get("class")),
        "runs": len(runs),
        "duration_s": sum(span.duration for span in runs),
        "status": status,
        "span_ids": [span.span_id for span in runs],
    }
