"""PocketFlow adapter: the only module that knows PocketFlow's internals.

PocketFlow's ``Flow`` runs a ``copy.copy`` of every node, so wrapping instances
would miss every run; all wrapping is done once on the classes, with wrapt (so
wrapped async methods still look like coroutine functions), and undone by
``uninstrument()``:

========================================  ==========================================
PocketFlow method                         what it becomes
========================================  ==========================================
``BaseNode._run``, ``Flow._run``,         one span per node or flow run
``BatchFlow._run`` and the async
``_run_async`` variants
``Flow._orch``, ``AsyncFlow._orch_async`` one child span per parameter set of a batch
                                          flow
``BaseNode._exec``, ``BatchNode._exec``   the exec phase boundary (phase durations),
and async batch variants                  batch size
``Node._exec``, ``AsyncNode._exec``       the retry loop: attempts, retry events,
                                          fallback; one child span per batch item
========================================  ==========================================

PocketFlow keeps the retry counter in a local variable, so the two retry loops
are run here with the same statements as the engine's (pocketflow/__init__.py,
``Node._exec`` and ``AsyncNode._exec``) plus calls to the recorder; the tests
compare results, routing and exceptions with the bare engine side by side.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from wrapt import wrap_function_wrapper

from reasonflow_otel import semconv
from reasonflow_otel.guard import report_internal_error
from reasonflow_otel.instrumentation.base import EngineInstrumentor
from reasonflow_otel.recorder import FlowGraph, GraphNode, NodeInfo, Recorder, Run, current_run

ENGINE = "pocketflow"
_instruments = ("pocketflow >= 0.0.1, < 0.1",)


class PocketFlowInstrumentor(EngineInstrumentor):
    """Traces and meters every PocketFlow flow, node, batch item and retry.

    ``instrument(tracer_provider=..., meter_provider=..., settings=...)``; with no
    providers the global ones are used.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _wrap(self, recorder: Recorder) -> None:
        import pocketflow

        adapter = _PocketFlowAdapter(recorder)
        for owner, method, wrapper in adapter.wrappers(pocketflow):
            wrap_function_wrapper(owner, method, wrapper)

    def _unwrap(self) -> None:
        import pocketflow

        for owner, method, _ in _PocketFlowAdapter.wrappers_of(pocketflow, None):
            unwrap(owner, method)


class _PocketFlowAdapter:
    """Maps PocketFlow's calls to recorder calls."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._captured = recorder.captured_phases
        self._infos: dict[tuple[type, str], NodeInfo] = {}
        self._class_names: dict[type, str] = {}
        self._kinds: tuple[tuple[type, str], ...] = ()

    def wrappers(self, pocketflow: Any) -> list[tuple[type, str, Any]]:
        self._kinds = _kinds_of(pocketflow)
        return self.wrappers_of(pocketflow, self)

    @staticmethod
    def wrappers_of(pocketflow: Any, adapter: _PocketFlowAdapter | None) -> list:
        """Every (class, method, wrapper) pair; wrappers are None when unwrapping."""

        def bound(name: str) -> Any:
            return getattr(adapter, name) if adapter is not None else None

        pf = pocketflow
        return [
            (pf.BaseNode, "_run", bound("run")),
            (pf.Flow, "_run", bound("run")),
            (pf.BatchFlow, "_run", bound("run")),
            (pf.AsyncNode, "_run_async", bound("run_async")),
            (pf.AsyncFlow, "_run_async", bound("run_async")),
            (pf.AsyncBatchFlow, "_run_async", bound("run_async")),
            (pf.AsyncParallelBatchFlow, "_run_async", bound("run_async")),
            (pf.Flow, "_orch", bound("param_set")),
            (pf.AsyncFlow, "_orch_async", bound("param_set_async")),
            (pf.BaseNode, "_exec", bound("exec_phase")),
            (pf.BatchNode, "_exec", bound("batch_exec")),
            (pf.AsyncBatchNode, "_exec", bound("batch_exec_async")),
            (pf.AsyncParallelBatchNode, "_exec", bound("batch_exec_async")),
            (pf.Node, "_exec", bound("attempts")),
            (pf.AsyncNode, "_exec", bound("attempts_async")),
        ]

    # --- Flow and node runs ----------------------------------------------------

    def run(self, wrapped: Any, node: Any, args: tuple, kwargs: dict) -> Any:
        run = self._start(node)
        if run is None:
            return wrapped(*args, **kwargs)
        self._capture_shared(run, args, kwargs, ended=False)
        try:
            action = wrapped(*args, **kwargs)
        except BaseException as error:
            self._capture_shared(run, args, kwargs, ended=True)
            self._recorder.finish(run, error=error)
            raise
        self._capture_shared(run, args, kwargs, ended=True)
        self._finish(run, node, action)
        return action

    async def run_async(self, wrapped: Any, node: Any, args: tuple, kwargs: dict) -> Any:
        run = self._start(node)
        if run is None:
            return await wrapped(*args, **kwargs)
        self._capture_shared(run, args, kwargs, ended=False)
        try:
            action = await wrapped(*args, **kwargs)
        except BaseException as error:
            self._capture_shared(run, args, kwargs, ended=True)
            self._recorder.finish(run, error=error)
            raise
        self._capture_shared(run, args, kwargs, ended=True)
        self._finish(run, node, action)
        return action

    def _start(self, node: Any) -> Run | None:
        if not is_instrumentation_enabled():
            return None
        try:
            info = self._info(node)
            start_attributes = None
            if not info.is_flow and hasattr(node, "max_retries"):
                start_attributes = {semconv.NODE_MAX_RETRIES: node.max_retries}
            return self._recorder.start(
                info,
                node,
                node_key=id(node.successors),
                start_attributes=start_attributes,
                graph=(lambda: self._graph(node)) if info.is_flow else None,
            )
        except Exception as error:
            report_internal_error("describing a PocketFlow node", error)
            return None

    def _finish(self, run: Run, node: Any, action: Any) -> None:
        self._capture(run, "post", action)
        action_name = "default" if action is None else action if isinstance(action, str) else None
        successor = None
        parent = run.parent
        if parent is not None and parent.info.is_flow and run.span.is_recording():
            try:
                following = node.successors.get(action or "default")
                successor = self._name(following) if following else semconv.SUCCESSOR_END
            except Exception:  # an unhashable action: the engine reports it, not us
                successor = None
        self._recorder.finish(run, action=action_name, successor=successor)

    # --- Parameter sets of batch flows -------------------------------------------

    def param_set(self, wrapped: Any, flow: Any, args: tuple, kwargs: dict) -> Any:
        item = self._start_item(flow, args, kwargs)
        if item is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as error:
            self._recorder.finish(item, error=error)
            raise
        self._recorder.finish(item)
        return result

    async def param_set_async(self, wrapped: Any, flow: Any, args: tuple, kwargs: dict) -> Any:
        item = self._start_item(flow, args, kwargs)
        if item is None:
            return await wrapped(*args, **kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as error:
            self._recorder.finish(item, error=error)
            raise
        self._recorder.finish(item)
        return result

    def _start_item(self, flow: Any, args: tuple, kwargs: dict) -> Run | None:
        """A child span when a batch flow runs its graph for one parameter set."""
        params = args[1] if len(args) > 1 else kwargs.get("params")
        run = _own_run(flow)
        if run is None or params is None:
            return None
        return self._recorder.start_item(run, params)

    # --- The exec phase -------------------------------------------------------------

    def exec_phase(self, wrapped: Any, node: Any, args: tuple, kwargs: dict) -> Any:
        run = _own_run(node)
        if run is None:
            return wrapped(*args, **kwargs)
        self._recorder.exec_started(run)
        self._capture(run, "prep", args[0] if args else None)
        result = wrapped(*args, **kwargs)
        self._recorder.exec_ended(run)  # only when exec returned: see _phases_reached
        self._capture(run, "exec", result)
        return result

    def batch_exec(self, wrapped: Any, node: Any, args: tuple, kwargs: dict) -> Any:
        run = _own_run(node)
        if run is None:
            return wrapped(*args, **kwargs)
        _begin_batch(self._recorder, run)
        self._capture(run, "prep", args[0] if args else None)
        try:
            result = wrapped(*args, **kwargs)
        finally:
            _count_batch(run)
        self._recorder.exec_ended(run)
        self._capture(run, "exec", result)
        return result

    async def batch_exec_async(self, wrapped: Any, node: Any, args: tuple, kwargs: dict) -> Any:
        run = _own_run(node)
        if run is None:
            return await wrapped(*args, **kwargs)
        _begin_batch(self._recorder, run)
        self._capture(run, "prep", args[0] if args else None)
        try:
            result = await wrapped(*args, **kwargs)
        finally:
            _count_batch(run)
        self._recorder.exec_ended(run)
        self._capture(run, "exec", result)
        return result

    # --- The retry loops -------------------------------------------------------------

    def attempts(self, wrapped: Any, node: Any, args: tuple, kwargs: dict) -> Any:
        run = _own_run(node)
        if run is None or len(args) != 1 or kwargs:
            return wrapped(*args, **kwargs)
        (prep_res,) = args
        if run.batch_size is None:
            self._recorder.exec_started(run)
            self._capture(run, "prep", prep_res)
            result = self._retry_loop(run, node, prep_res)
            self._recorder.exec_ended(run)
            self._capture(run, "exec", result)
            return result
        item = self._recorder.start_item(run)
        if item is None:
            return wrapped(*args, **kwargs)
        self._capture(item, "prep", prep_res)
        try:
            result = self._retry_loop(item, node, prep_res)
        except BaseException as error:
            self._recorder.finish(item, error=error)
            raise
        self._capture(item, "exec", result)
        self._recorder.finish(item)
        return result

    def _retry_loop(self, run: Run, node: Any, prep_res: Any) -> Any:
        """``Node._exec`` statement for statement, with the recorder told of each attempt."""
        for node.cur_retry in range(node.max_retries):  # noqa: B020 (as the engine does)
            try:
                result = node.exec(prep_res)
            except Exception as error:
                if node.cur_retry == node.max_retries - 1:
                    self._recorder.attempts_used(run, node.cur_retry + 1)
                    result = node.exec_fallback(prep_res, error)
                    self._recorder.fallback_used(run, node.cur_retry + 1, error)
                    return result
                self._recorder.attempt_failed(run, node.cur_retry + 1, error)
                if node.wait > 0:
                    time.sleep(node.wait)
            else:
                self._recorder.attempts_used(run, node.cur_retry + 1)
                return result
        return None

    async def attempts_async(self, wrapped: Any, node: Any, args: tuple, kwargs: dict) -> Any:
        run = _own_run(node)
        if run is None or len(args) != 1 or kwargs:
            return await wrapped(*args, **kwargs)
        (prep_res,) = args
        if run.batch_size is None:
            self._recorder.exec_started(run)
            self._capture(run, "prep", prep_res)
            result = await self._retry_loop_async(run, node, prep_res)
            self._recorder.exec_ended(run)
            self._capture(run, "exec", result)
            return result
        item = self._recorder.start_item(run)
        if item is None:
            return await wrapped(*args, **kwargs)
        self._capture(item, "prep", prep_res)
        try:
            result = await self._retry_loop_async(item, node, prep_res)
        except BaseException as error:
            self._recorder.finish(item, error=error)
            raise
        self._capture(item, "exec", result)
        self._recorder.finish(item)
        return result

    async def _retry_loop_async(self, run: Run, node: Any, prep_res: Any) -> Any:
        """``AsyncNode._exec`` statement for statement, with the recorder told of attempts."""
        for attempt in range(node.max_retries):
            try:
                result = await node.exec_async(prep_res)
            except Exception as error:
                if attempt == node.max_retries - 1:
                    self._recorder.attempts_used(run, attempt + 1)
                    result = await node.exec_fallback_async(prep_res, error)
                    self._recorder.fallback_used(run, attempt + 1, error)
                    return result
                self._recorder.attempt_failed(run, attempt + 1, error)
                if node.wait > 0:
                    await asyncio.sleep(node.wait)
            else:
                self._recorder.attempts_used(run, attempt + 1)
                return result
        return None

    # --- Payload capture (opt-in: with it off, each call is one truth test) -------------

    def _capture(self, run: Run, phase: str, value: Any) -> None:
        if self._captured:
            self._recorder.capture(run, phase, value)

    def _capture_shared(self, run: Run, args: tuple, kwargs: dict, *, ended: bool) -> None:
        """The shared store is the first argument of ``_run`` and ``_run_async``."""
        if self._captured:
            store = args[0] if args else kwargs.get("shared")
            self._recorder.capture_shared(run, store, ended=ended)

    # --- What a node is -----------------------------------------------------------------

    def _name(self, node: Any) -> str:
        """A ``name`` the user gave the node wins over its class name."""
        name = node.__dict__.get("name")
        if isinstance(name, str) and name:
            return name
        cls = type(node)
        class_name = self._class_names.get(cls)
        if class_name is None:
            declared = getattr(cls, "name", None)
            class_name = declared if isinstance(declared, str) and declared else cls.__name__
            self._class_names[cls] = class_name
        return class_name

    def _info(self, node: Any) -> NodeInfo:
        cls = type(node)
        name = self._name(node)
        info = self._infos.get((cls, name))
        if info is None:
            kind = next(kind for base, kind in self._kinds if isinstance(node, base))
            info = NodeInfo(ENGINE, name, cls.__name__, kind, is_flow=kind.endswith("flow"))
            self._infos[(cls, name)] = info
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


def _own_run(node: Any) -> Run | None:
    """The current run if it is this node's (not an enclosing node's)."""
    run = current_run()
    return run if run is not None and run.owner is node else None


def _begin_batch(recorder: Recorder, run: Run) -> None:
    run.batch_size = 0  # from here on, each retry loop is one item
    recorder.exec_started(run)


def _count_batch(run: Run) -> None:
    """Items started so far, also when one of them raised."""
    run.batch_size = run.next_item_index
