"""LangGraph adapter: the only module that knows LangGraph's internals.

LangGraph's callbacks are LangChain's: every node and every channel writer becomes a
callback run, payloads travel with them, and they give no attempt number, no
interrupt and no Send index. So nothing here uses callbacks; five of LangGraph's
own functions are wrapped, once, and restored by ``uninstrument()``:

===================================================  ===========================================
LangGraph                                            what it becomes
===================================================  ===========================================
``Pregel.stream`` / ``Pregel.astream``               one graph run (``invoke_workflow {name}``)
                                                     per call: ``invoke``, ``ainvoke``, ``batch``
                                                     and a subgraph node all go through them
``run_with_retry`` / ``arun_with_retry`` (as         one node run per task, every attempt of a
``langgraph.pregel._runner`` imports them)           ``RetryPolicy`` inside it
``langgraph.pregel._retry._reset_interrupt_counter``  the next attempt of a retried task begins
                                                     (called only on a retry, inside its
                                                     ``except``: the error being retried); older
                                                     releases without it get no retry events
===================================================  ===========================================

A task runs inside its graph's stream, and LangGraph copies the context into its
thread pool and its asyncio tasks, so each node, parallel or not, nests under its
graph and a span the node opens nests under the node. ``GraphInterrupt`` and
``ParentCommand`` are control flow, not errors. Nothing is added to a run's config and
no reference to a task, loop or config is kept: a resumed run finds the interrupted
one by its thread id only.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from reasonflow_otel import semconv
from reasonflow_otel.instrumentation.base import EngineInstrumentor
from reasonflow_otel.recorder import (
    BoundedCache,
    FlowGraph,
    GraphNode,
    NodeInfo,
    Recorder,
    Run,
    current_run,
    unwrap,
    wrap,
)

ENGINE = "langgraph"
_instruments = ("langgraph >= 1.0, < 1.3",)

_PREGEL = "langgraph.pregel.main"
_RUNNER = "langgraph.pregel._runner"
_RETRY = "langgraph.pregel._retry"
_RETRY_HOOK = "_reset_interrupt_counter"  # since a 1.2 release
_BRANCH = "branch:to:"
_TASKS = "__pregel_tasks"  # where a node's Send objects are written
_PUSH = "__pregel_push"  # the first element of a Send task's path
_START = "__start__"  # the task mapping a run's input to channels: no node
_END = "__end__"


class LangGraphInstrumentor(EngineInstrumentor):
    """Traces and meters every LangGraph graph run, node run, retry and interrupt.

    ``instrument(tracer_provider=..., meter_provider=..., settings=...)``; with no
    providers the global ones are used. Needs no callbacks and changes no config.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _wrap(self, recorder: Recorder) -> None:
        from langgraph.errors import GraphInterrupt, ParentCommand
        from langgraph.types import Command

        recorder.control_flow(GraphInterrupt, attribute=semconv.INTERRUPTED)
        recorder.control_flow(ParentCommand, attribute=semconv.COMMAND_TO_PARENT)
        adapter = _LangGraphAdapter(recorder, GraphInterrupt, Command)
        wrap(_PREGEL, "Pregel.stream", adapter.begin_graph)
        wrap(_PREGEL, "Pregel.astream", adapter.begin_graph)
        wrap(_RUNNER, "run_with_retry", adapter.begin_task, adapter.end_task, adapter.fail_task)
        wrap(_RUNNER, "arun_with_retry", adapter.begin_task, adapter.end_task, adapter.fail_task)
        if _retry_hook() is not None:
            wrap(_RETRY, _RETRY_HOOK, adapter.retrying)

    def _unwrap(self) -> None:
        unwrap(_PREGEL, "Pregel.stream")
        unwrap(_PREGEL, "Pregel.astream")
        unwrap(_RUNNER, "run_with_retry")
        unwrap(_RUNNER, "arun_with_retry")
        if _retry_hook() is not None:
            unwrap(_RETRY, _RETRY_HOOK)


class _LangGraphAdapter:
    """Maps LangGraph's calls to recorder calls."""

    def __init__(self, recorder: Recorder, interrupt: type[BaseException], command: type) -> None:
        self._recorder = recorder
        self._interrupt = interrupt
        self._command = command
        self._captures_state = recorder.captures("state")
        self._captures_updates = recorder.captures("exec")
        self._infos: BoundedCache[tuple[str, str, bool], NodeInfo] = BoundedCache()
        self._graphs: weakref.WeakKeyDictionary[Any, FlowGraph] = weakref.WeakKeyDictionary()
        # Thread id -> the interrupted top-level graph run's reference, until it is resumed.
        self._waiting: BoundedCache[str, Any] = BoundedCache()

    # --- Graph runs --------------------------------------------------------------------

    def begin_graph(self, graph: Any, args: tuple, kwargs: dict) -> Run | None:
        """``stream(input, config, ...)``: a graph run; a top-level run continuing its thread
        (``Command(resume=...)`` or no input) links to the run that was interrupted there."""
        graph_input = args[0] if args else kwargs.get("input")
        configurable = _configurable(args[1] if len(args) > 1 else kwargs.get("config"))
        thread_id = _thread_id(configurable)
        attributes = None
        links: tuple[Any, ...] = ()
        if thread_id is not None:
            attributes = {semconv.GEN_AI_CONVERSATION_ID: thread_id}
            resumes = graph_input is None or isinstance(graph_input, self._command)
            if resumes and _outermost(current_run()):
                links = self._resumed(thread_id)
        run = self._recorder.begin(
            self._info(graph.name, type(graph).__name__, is_flow=True),
            graph,
            attributes=attributes,
            graph=lambda: self._graph(graph),
            links=links,
        )
        if run is not None and self._captures_state and graph_input is not None:
            run.capture("state", semconv.STATE_BEFORE, graph_input)
        return run

    def _resumed(self, thread_id: str) -> tuple[Any, ...]:
        reference = self._waiting.pop(thread_id, None)
        return () if reference is None else (reference,)

    # --- Node runs ---------------------------------------------------------------------

    def begin_task(self, _: Any, args: tuple, kwargs: dict) -> tuple[Run, Any] | None:
        """``run_with_retry(task, retry_policy, ...)``: the node's run, current while it runs."""
        task = args[0]
        name = task.name
        if name == _START:
            return None
        graph_run = _graph_run(current_run())
        path = task.path
        attributes = None
        if path and path[0] == _PUSH and len(path) > 1 and isinstance(path[1], int):
            attributes = {semconv.BATCH_INDEX: path[1]}  # the Send's index in its step
        run = self._recorder.begin(
            self._info(name, _node_class(graph_run, name), is_flow=False),
            node_key=name,
            attributes=attributes,
        )
        if run is None:
            return None
        if self._captures_state:
            run.capture("state", semconv.STATE_BEFORE, task.input)
        return run, task

    def end_task(self, token: tuple[Run, Any], _: Any) -> None:
        run, task = token
        successor = None
        if run.recording:
            writes = tuple(task.writes)
            successor = _successor(writes)
            if self._captures_updates:
                run.capture("exec", semconv.NODE_EXEC_RESULT, _updates(writes))
        run.end(successor=successor)

    def fail_task(self, token: tuple[Run, Any], error: BaseException) -> None:
        run, task = token
        if isinstance(error, self._interrupt):
            self._interrupted(run, task)
        run.fail(error)

    def _interrupted(self, run: Run, task: Any) -> None:
        """A node interrupted: its graph too; a top-level graph waits for its resume."""
        graph_run = _graph_run(run)
        if graph_run is None:
            return
        graph_run.set_attributes({semconv.INTERRUPTED: True})
        thread_id = _thread_id(_configurable(task.config))
        if thread_id is not None and _outermost(graph_run.parent):
            self._waiting[thread_id] = graph_run.reference

    def retrying(self, _: Any, args: tuple, kwargs: dict) -> None:
        """LangGraph is about to retry the current node: the next attempt begins."""
        run = current_run()
        failed = sys.exc_info()[1]
        if run is not None and failed is not None and _is_node(run):
            run.attempt((run.attempts or 1) + 1, failed=failed)
        return None  # nothing to end: LangGraph's function runs untouched

    # --- What a graph and a node are ----------------------------------------------------

    def _info(self, name: str, class_name: str, *, is_flow: bool) -> NodeInfo:
        key = (name, class_name, is_flow)
        info = self._infos.get(key)
        if info is None:
            kind = "graph" if is_flow else "node"
            info = self._infos[key] = NodeInfo(ENGINE, name, class_name, kind, is_flow=is_flow)
        return info

    def _graph(self, graph: Any) -> FlowGraph:
        """Once per compiled graph: its nodes and edges as LangGraph draws them."""
        try:
            return self._graphs[graph]
        except KeyError:
            described = self._graphs[graph] = _flow_graph(graph)
            return described
        except TypeError:  # a graph class neither hashable nor weakly referable
            return _flow_graph(graph)


def _retry_hook() -> Any:
    """LangGraph's retry module if it has the function called on each retry, else None."""
    from langgraph.pregel import _retry

    return _retry if hasattr(_retry, _RETRY_HOOK) else None


def _flow_graph(graph: Any) -> FlowGraph:
    drawn = graph.get_graph()
    nodes = tuple(
        GraphNode(key, node.name, "" if key in (_START, _END) else type(node.data).__name__)
        for key, node in drawn.nodes.items()
    )
    edges = tuple(
        (edge.source, edge.target, _edge_label(edge.data, edge.conditional)) for edge in drawn.edges
    )
    return FlowGraph(nodes, edges)


def _edge_label(data: Any, conditional: bool) -> str:
    if data is not None:
        return str(data)
    return "conditional" if conditional else "default"


def _node_class(graph_run: Run | None, name: str) -> str:
    """The class of what the node runs (a function's ``RunnableCallable``, a subgraph's
    compiled graph); ``task`` for a functional-API task, which is no node of a graph."""
    nodes = getattr(graph_run.owner, "nodes", None) if graph_run is not None else None
    node = nodes.get(name) if isinstance(nodes, Mapping) else None
    return type(node.bound).__name__ if node is not None else "task"


def _graph_run(run: Run | None) -> Run | None:
    """The innermost LangGraph graph run at or above ``run``."""
    while run is not None and not (run.info.is_flow and run.info.engine == ENGINE):
        run = run.parent
    return run


def _is_node(run: Run) -> bool:
    return run.info.engine == ENGINE and not run.info.is_flow


def _outermost(run: Run | None) -> bool:
    """Whether a graph run begun under ``run`` is no subgraph (no LangGraph node above)."""
    while run is not None:
        if _is_node(run):
            return False
        run = run.parent
    return True


def _configurable(config: Any) -> Mapping[str, Any]:
    configurable = config.get("configurable") if isinstance(config, Mapping) else None
    return configurable if isinstance(configurable, Mapping) else {}


def _thread_id(configurable: Mapping[str, Any]) -> str | None:
    thread_id = configurable.get("thread_id")
    return None if thread_id is None else str(thread_id)


def _successor(writes: Iterable[tuple[str, Any]]) -> str | list[str] | None:
    """The nodes a task's writes trigger next (its edges' targets and its Sends' nodes),
    sorted: LangGraph writes a fan-out's edges in set order."""
    targets: list[str] = []
    for channel, value in writes:
        if channel.startswith(_BRANCH):
            target = channel[len(_BRANCH) :]
        elif channel == _TASKS:
            target = getattr(value, "node", None)
        else:
            continue
        if isinstance(target, str) and target not in targets:
            targets.append(target)
    if not targets:
        return None
    return targets[0] if len(targets) == 1 else sorted(targets)


def _updates(writes: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The state updates a task wrote (its routing writes left out)."""
    return [
        (channel, value)
        for channel, value in writes
        if not channel.startswith(_BRANCH) and channel != _TASKS
    ]
