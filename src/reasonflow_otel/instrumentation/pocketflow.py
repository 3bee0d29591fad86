"""PocketFlow adapter: the only module that knows PocketFlow's internals.

The engine's own code runs: no loop of PocketFlow's (retries, batches,
orchestration) is copied here. Wrappers only observe the calls the engine makes,
on classes (``Flow`` runs a ``copy.copy`` of every node, and a batch node may run
items on a thread pool):

================================================  ============================================
method                                            what it becomes
================================================  ============================================
``_run`` / ``_run_async`` of ``BaseNode``,        one span per node or flow run
``Flow``, ``BatchFlow``, ``AsyncNode`` and the
async flows (at ``instrument()``)
``Flow._orch``, ``AsyncFlow._orch_async``         one child span per parameter set of a
(at ``instrument()``)                             batch flow
``_exec`` of every class a node's class           the outermost call brackets the exec phase;
inherits it from (at the first run of the         in a batch node, each inner call with
class)                                            another argument is one item span
``exec``, ``exec_async``, ``exec_fallback``,      attempts: an ``exec`` call that raised and
``exec_fallback_async`` of every class that       is followed by another is a retry; a
defines them (at the first run of the class)      fallback call ends the attempts
================================================  ============================================

What a run needs between those calls (attempts so far, the pending error, the
exec phase in progress) lives in a per-run state; with no run in progress
anywhere, every wrapper's first test sends it straight to the original.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from reasonflow_otel import semconv
from reasonflow_otel.guard import safe_str
from reasonflow_otel.instrumentation.base import EngineInstrumentor
from reasonflow_otel.recorder import (
    BoundedCache,
    FlowGraph,
    GraphNode,
    NodeInfo,
    Run,
    current_run,
    unwrap,
    wrap,
)

if TYPE_CHECKING:  # annotations only
    from reasonflow_otel.recorder import Recorder

ENGINE = "pocketflow"
_instruments = ("pocketflow >= 0.0.1, < 0.1",)
# Methods wrapped where a node's class (or a base of it) defines them.
EXEC_METHODS = ("_exec",)
ATTEMPT_METHODS = ("exec", "exec_async")
FALLBACK_METHODS = ("exec_fallback", "exec_fallback_async")
BATCH_KINDS = frozenset({"batch", "async_batch", "async_parallel_batch"})
# How deep a derived flow name looks into start nodes that are flows themselves.
NAME_DEPTH = 3
# What each phase's captured result is called on the span.
CAPTURE_ATTRIBUTES = {
    "prep": semconv.NODE_PREP_RESULT,
    "exec": semconv.NODE_EXEC_RESULT,
    "post": semconv.NODE_POST_RESULT,
}


class PocketFlowInstrumentor(EngineInstrumentor):
    """Traces and meters every PocketFlow flow, node, batch item and retry.

    ``instrument(tracer_provider=..., meter_provider=..., settings=...)``; with no
    providers the global ones are used.
    """

    _adapter: _PocketFlowAdapter | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _wrap(self, recorder: Recorder) -> None:
        import pocketflow

        self._adapter = _PocketFlowAdapter(recorder, pocketflow)
        self._adapter.install()

    def _unwrap(self) -> None:
        if self._adapter is not None:
            self._adapter.uninstall()
            self._adapter = None


class _RunState:
    """What the adapter tracks of one node, flow or item run between engine calls."""

    __slots__ = (
        "attempts",
        "batch",
        "busy",
        "exec_input",
        "fallback",
        "in_exec",
        "node",
        "pending",
        "run",
        "shared",
    )

    def __init__(self, run: Run, node: Any, batch: bool = False) -> None:
        self.run = run
        self.node = node
        self.batch = batch
        self.in_exec = False  # inside the outermost _exec of this run
        self.exec_input: Any = None  # its argument: an inner call with the same is a pass-through
        self.attempts = 0
        self.fallback = False  # the result came from the fallback
        self.pending: BaseException | None = None  # the last attempt's error, not yet judged
        self.busy = False  # inside exec or a fallback: nested calls (super()) are not attempts
        self.shared: Any = None  # the shared store, kept only while capture is on


class _PocketFlowAdapter:
    """Maps PocketFlow's calls to recorder calls."""

    def __init__(self, recorder: Recorder, pocketflow: Any) -> None:
        self._recorder = recorder
        self._captured = any(recorder.captures(kind) for kind in ("prep", "exec", "post", "shared"))
        self._pf = pocketflow
        self._wrapped: list[tuple[type, str]] = []
        self._states: dict[Run, _RunState] = {}
        # The gate of wrappers that only matter inside a run: none in progress, no work.
        self._in_a_run = self._states.__len__
        # ``_exec`` shows the exec phase (phase telemetry, prep/exec capture) and a batch
        # node's items: with neither phase nor capture on, only batch runs need it.
        self._batch_runs: dict[Run, _RunState] = {}
        observes_exec = recorder.times_phases or self._captured
        self._exec_gate = self._in_a_run if observes_exec else self._batch_runs.__len__
        self._prepared: set[type] = set()
        self._prepare_lock = threading.Lock()
        self._infos: BoundedCache[tuple[type, str], NodeInfo] = BoundedCache()
        # Classes whose nodes are named by the class (no ``name`` of their own).
        self._class_infos: BoundedCache[type, NodeInfo] = BoundedCache()
        self._max_retries: BoundedCache[Any, dict[str, Any]] = BoundedCache()
        self._class_names: dict[type, str] = {}
        self._kinds = _kinds_of(pocketflow)
        self._engine_flows = frozenset(cls for cls, kind in self._kinds if kind.endswith("flow"))

    def install(self) -> None:
        """The run and orchestration wrappers; exec wrappers follow per node class."""
        pf = self._pf
        run = (self._run_begin, self._run_end, self._run_fail, is_instrumentation_enabled)
        param_set = (self._param_set_begin, None, None, self._in_a_run)
        for owner in (pf.BaseNode, pf.Flow, pf.BatchFlow):
            self._wrap(owner, "_run", *run)
        for owner in (pf.AsyncNode, pf.AsyncFlow, pf.AsyncBatchFlow, pf.AsyncParallelBatchFlow):
            self._wrap(owner, "_run_async", *run)
        self._wrap(pf.Flow, "_orch", *param_set)
        self._wrap(pf.AsyncFlow, "_orch_async", *param_set)

    def uninstall(self) -> None:
        """Every original back on its class, latest first."""
        with self._prepare_lock:
            for owner, name in reversed(self._wrapped):
                unwrap(owner, name)
            self._wrapped.clear()
            self._prepared.clear()

    def _wrap(self, owner: type, name: str, begin: Any, end: Any, fail: Any, gate: Any) -> None:
        """Wrap the function ``owner`` itself defines as ``name``, once."""
        if (owner, name) in self._wrapped or not inspect.isfunction(vars(owner).get(name)):
            return
        wrap(owner, name, begin, end, fail, gate=gate)
        self._wrapped.append((owner, name))

    def _prepare(self, cls: type) -> None:
        """Wrap the exec methods of ``cls`` and its bases, each defining class once."""
        with self._prepare_lock:
            if cls in self._prepared:
                return
            in_a_run = self._in_a_run
            observed = (
                (
                    EXEC_METHODS,
                    (self._exec_begin, self._exec_end, self._exec_fail, self._exec_gate),
                ),
                (
                    ATTEMPT_METHODS,
                    (self._attempt_begin, self._attempt_end, self._attempt_fail, in_a_run),
                ),
                (
                    FALLBACK_METHODS,
                    (self._fallback_begin, self._fallback_end, self._fallback_fail, in_a_run),
                ),
            )
            for owner in cls.__mro__[:-1]:  # not object
                for names, callbacks in observed:
                    for name in names:
                        if name in vars(owner):
                            self._wrap(owner, name, *callbacks)
            self._prepared.add(cls)

    def _own_state(self, node: Any) -> _RunState | None:
        """The state of the current run if it is this node's (not an enclosing node's)."""
        state = self._states.get(current_run())  # type: ignore[arg-type]
        return state if state is not None and state.node is node else None

    # --- Flow and node runs ------------------------------------------------------

    def _run_begin(self, node: Any, args: tuple, kwargs: dict) -> _RunState | None:
        info = self._info(node)
        start_attributes = None
        if not info.is_flow and hasattr(node, "max_retries"):
            start_attributes = self._retries_attribute(node.max_retries)
        run = self._recorder.begin(
            info,
            node,
            node_key=id(node.successors),
            attributes=start_attributes,
            graph=(lambda: self._graph(node)) if info.is_flow else None,
        )
        if run is None:
            return None
        cls = type(node)
        if cls not in self._prepared and not run.info.is_flow:
            self._prepare(cls)
        state = _RunState(run, node, run.info.kind in BATCH_KINDS)
        self._states[run] = state
        if state.batch:
            self._batch_runs[run] = state
        if self._captured:  # the shared store is the argument of _run and _run_async
            state.shared = _first_argument(args, kwargs)
            self._capture_shared(state, ended=False)
        return state

    def _run_end(self, state: _RunState, action: Any) -> None:
        self._forget(state)
        self._finish(state, action)

    def _run_fail(self, state: _RunState, error: BaseException) -> None:
        self._forget(state)
        _fail(state, error)

    def _forget(self, state: _RunState) -> None:
        """The run ended: its state goes (after the shared store's capture, if on)."""
        run = state.run
        self._states.pop(run, None)
        if state.batch:
            self._batch_runs.pop(run, None)
        if self._captured:
            self._capture_shared(state, ended=True)

    def _retries_attribute(self, max_retries: Any) -> dict[str, Any]:
        """``{reasonflow.node.max_retries: n}``, one dict per value (the recorder copies it)."""
        try:
            attributes = self._max_retries.get(max_retries)
        except TypeError:  # an unhashable max_retries
            return {semconv.NODE_MAX_RETRIES: max_retries}
        if attributes is None:
            attributes = self._max_retries[max_retries] = {semconv.NODE_MAX_RETRIES: max_retries}
        return attributes

    def _finish(self, state: _RunState, action: Any) -> None:
        run = state.run
        if not run.recording:  # nothing below would show
            run.end()
            return
        self._capture(run, "post", action)
        attributes = _attempt_attributes(state)
        action_name = "default" if action is None else action if isinstance(action, str) else None
        if action_name is not None:
            attributes[semconv.NODE_ACTION] = action_name
        successor = None
        parent = run.parent
        if parent is not None and parent.info.is_flow:
            try:
                successor = self._successor(run, state.node, action, attributes)
            except Exception:  # an unhashable action: the engine reports it, not us
                successor = None
        run.end(successor=successor, attributes=attributes)

    def _successor(self, run: Run, node: Any, action: Any, attributes: dict[str, Any]) -> str:
        """The next node's name; at a routing miss (the engine warns, then ends) it is noted."""
        following = node.successors.get(action or "default")
        if following:
            return self._name(following)
        if node.successors:
            missed = "default" if action is None else safe_str(action)
            available = [str(key) for key in node.successors]
            attributes[semconv.NODE_ROUTING_MISS] = True
            attributes[semconv.NODE_AVAILABLE_ACTIONS] = available
            run.add_event(
                semconv.EVENT_ROUTING_MISS,
                {semconv.NODE_ACTION: missed, semconv.NODE_AVAILABLE_ACTIONS: available},
            )
        return semconv.SUCCESSOR_END

    # --- Parameter sets of batch flows -----------------------------------------------

    def _param_set_begin(self, flow: Any, args: tuple, kwargs: dict) -> Run | None:
        """A child span when a batch flow runs its graph for one parameter set."""
        params = args[1] if len(args) > 1 else kwargs.get("params")
        state = self._own_state(flow)
        if state is None or params is None:
            return None
        return self._recorder.begin_item(state.run, params)

    # --- The exec phase and batch items -------------------------------------------------

    def _exec_begin(self, node: Any, args: tuple, kwargs: dict) -> _RunState | None:
        """The outermost ``_exec`` of a run is its exec phase; in a batch, inner ones are items."""
        state = self._own_state(node)
        if state is None or state.run.is_item:
            return None
        prep_res = _first_argument(args, kwargs)
        if not state.in_exec:
            self._enter_exec(state, prep_res)
            return state
        if not state.batch or prep_res is state.exec_input:
            return None  # a subclass's _exec handing its argument on to the base class
        item = self._recorder.begin_item(state.run)
        if item is None:
            return None
        item_state = _RunState(item, node)
        self._states[item] = item_state
        self._capture(item, "prep", prep_res)
        return item_state

    def _enter_exec(self, state: _RunState, prep_res: Any) -> None:
        state.in_exec, state.exec_input = True, prep_res
        if state.batch:
            state.run.batch_size = 0
        state.run.mark_phase("prep", "exec")
        self._capture(state.run, "prep", prep_res)

    def _exec_end(self, state: _RunState, result: Any) -> None:
        run = state.run
        if run.is_item:
            self._states.pop(run, None)
            self._capture(run, "exec", result)
            run.end(attributes=_attempt_attributes(state))
            return
        self._leave_exec(state)
        run.mark_phase("exec", "post")  # only when exec returned: the post phase follows
        self._capture(run, "exec", result)

    def _exec_fail(self, state: _RunState, error: BaseException) -> None:
        if state.run.is_item:
            self._states.pop(state.run, None)
            _fail(state, error)
        else:
            self._leave_exec(state)

    @staticmethod
    def _leave_exec(state: _RunState) -> None:
        state.in_exec, state.exec_input = False, None
        if state.batch:  # items started so far, also when one of them raised
            state.run.batch_size = state.run.next_item_index

    # --- Attempts, retries and fallbacks -------------------------------------------------

    def _attempt_begin(self, node: Any, args: tuple, kwargs: dict) -> _RunState | None:
        """An ``exec`` call: after a failed one, the engine is retrying."""
        state = self._own_state(node)
        if state is None or state.busy:
            return None
        state.attempts += 1
        state.run.attempt(state.attempts, failed=state.pending)
        state.pending = None
        state.busy = True
        return state

    @staticmethod
    def _attempt_end(state: _RunState, result: Any) -> None:
        state.busy = False

    @staticmethod
    def _attempt_fail(state: _RunState, error: BaseException) -> None:
        state.busy = False
        if isinstance(error, Exception):  # what the engine's retry loop catches
            state.pending = error

    def _fallback_begin(self, node: Any, args: tuple, kwargs: dict) -> _RunState | None:
        """An ``exec_fallback`` call: the attempts are over."""
        state = self._own_state(node)
        if state is None or state.busy:
            return None
        if state.pending is None:  # called without a failed exec seen: its own argument
            error = args[1] if len(args) > 1 else kwargs.get("exc")
            state.pending = error if isinstance(error, BaseException) else None
        state.busy = True
        return state

    def _fallback_end(self, state: _RunState, result: Any) -> None:
        state.busy = False
        error, state.pending = state.pending, None
        if error is not None:  # every attempt failed and the fallback rescued the run
            state.fallback = True
            state.run.add_event(
                semconv.EVENT_FALLBACK,
                {semconv.ATTEMPT: state.attempts},
                error=error,
                metric=semconv.METRIC_NODE_FALLBACKS,
            )

    def _fallback_fail(self, state: _RunState, raised: BaseException) -> None:
        state.busy = False
        error, state.pending = state.pending, None
        if error is not None and raised is not error:  # the last attempt's error, kept as an event
            state.run.add_event(
                semconv.EVENT_FALLBACK_FAILED, {semconv.ATTEMPT: state.attempts}, error=error
            )

    # --- Payload capture (opt-in: with it off, each call is one truth test) -------------

    def _capture(self, run: Run, phase: str, value: Any) -> None:
        if self._captured:
            run.capture(phase, CAPTURE_ATTRIBUTES[phase], value)

    def _capture_shared(self, state: _RunState, *, ended: bool) -> None:
        if self._captured:
            attribute = semconv.SHARED_AFTER if ended else semconv.SHARED_BEFORE
            state.run.capture("shared", attribute, state.shared)

    # --- What a node is -----------------------------------------------------------------

    def _name(self, node: Any, depth: int = 0) -> str:
        """A ``name`` the user gave wins, then the class's; the engine's flows derive one.

        An anonymous ``Flow(start=FetchCart())`` is ``Flow(FetchCart)``: a name a
        person can tell apart, from classes only (low cardinality).
        """
        name = node.__dict__.get("name")
        if isinstance(name, str) and name:
            return name
        cls = type(node)
        class_name = self._class_names.get(cls)
        if class_name is None:
            declared = getattr(cls, "name", None)
            class_name = declared if isinstance(declared, str) and declared else cls.__name__
            self._class_names[cls] = class_name
        if cls in self._engine_flows and depth < NAME_DEPTH:
            start = getattr(node, "start_node", None)
            if start is not None:
                return f"{class_name}({self._name(start, depth + 1)})"
        return class_name

    def _info(self, node: Any) -> NodeInfo:
        cls = type(node)
        # Named by its class alone (no name of its own, not an engine flow named after its
        # start node): one lookup.
        by_class = "name" not in node.__dict__ and cls not in self._engine_flows
        if by_class:
            info = self._class_infos.get(cls)
            if info is not None:
                return info
        name = self._name(node)
        info = self._infos.get((cls, name))
        if info is None:
            kind = next(kind for base, kind in self._kinds if isinstance(node, base))
            info = NodeInfo(ENGINE, name, cls.__name__, kind, is_flow=kind.endswith("flow"))
            self._infos[(cls, name)] = info
        if by_class:
            self._class_infos[cls] = info
        return info

    def _graph(self, flow: Any) -> FlowGraph:
        """Nodes reachable from the start node, keyed like running copies are."""
        nodes: list[GraphNode] = []
        edges: list[tuple[int, int, str]] = []
        seen: set[int] = set()
        pending = [flow.start_node] if flow.start_node is not None else []
        while pending:
            node = pending.pop(0)
            key = id(node.successors)  # copy.copy shares the successors dict
            if key in seen:
                continue
            seen.add(key)
            nodes.append(GraphNode(key, self._name(node), type(node).__name__))
            for action, following in node.successors.items():
                edges.append((key, id(following.successors), action))
                pending.append(following)
        return FlowGraph(tuple(nodes), tuple(edges))


def _kinds_of(pf: Any) -> tuple[tuple[type, str], ...]:
    """Node kinds, most specific class first."""
    return (
        (pf.AsyncParallelBatchFlow, "async_parallel_batch_flow"),
        (pf.AsyncBatchFlow, "async_batch_flow"),
        (pf.AsyncFlow, "async_flow"),
        (pf.BatchFlow, "batch_flow"),
        (pf.Flow, "flow"),
        (pf.AsyncParallelBatchNode, "async_parallel_batch"),
        (pf.AsyncBatchNode, "async_batch"),
        (pf.AsyncNode, "async"),
        (pf.BatchNode, "batch"),
        (pf.BaseNode, "node"),
    )


def _attempt_attributes(state: _RunState) -> dict[str, Any]:
    """Whether the fallback produced the result, on runs that made attempts."""
    return {semconv.NODE_FALLBACK: state.fallback} if state.attempts else {}


def _fail(state: _RunState, error: BaseException) -> None:
    state.run.set_attributes(_attempt_attributes(state))
    state.run.fail(error)


def _first_argument(args: tuple, kwargs: dict) -> Any:
    """The one argument of ``_exec`` and ``_run``, passed by position or by keyword."""
    if args:
        return args[0]
    return next(iter(kwargs.values()), None)
