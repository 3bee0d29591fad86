"""Apache Burr adapter: the only module that knows Burr's internals.

Burr's lifecycle hooks cannot give a correct run span (its post-call hook gets
``exception=None`` when a call fails, and the ``iterate`` hooks fire around
creating the generator, not around the iteration) and are not copied to
sub-applications, so nothing here uses hooks: the application's methods are
wrapped on the class, with wrapt, once, and undone by ``uninstrument()``.

==============================================  ============================================
Burr                                            what it becomes
==============================================  ============================================
``Application.run``/``arun``/``step``/          one application run (``invoke_workflow
``astep``/``stream_result``/``astream_result``  {name}``) per outermost call on an app
``Application.iterate``/``aiterate``/           the same, covering the whole iteration
``stream_iterate``/``astream_iterate``
``Application._step``, ``Application._astep``   one run per executed action (once: ``_astep``
and ``_process_inputs``                         hands sync actions to ``_step``), opened when
                                                Burr hands the chosen action to
                                                ``_process_inputs``
``_run_single_step_streaming_action`` and the   one run per streamed action, ending with its
multi-step and async variants                   final item
``ActionSpanTracer.__enter__``/``__exit__``     a user span (``__tracer``, ``@trace``) under
and the async variants                          the action's span
==============================================  ============================================

Sub-applications (``MapStates``, ``MapActions``, ``SubGraphTask``, any app run
inside an action) nest under the action that runs them: the action's run is
current, ``asyncio.gather`` copies it into each task, and the thread context
brought along by the base instrumentor carries it into Burr's thread pool.
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Collection
from typing import Any, NamedTuple

from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from wrapt import wrap_function_wrapper

from reasonflow_otel import semconv
from reasonflow_otel.guard import report_internal_error
from reasonflow_otel.instrumentation.base import EngineInstrumentor
from reasonflow_otel.recorder import (
    BoundedCache,
    FlowGraph,
    GraphNode,
    NodeInfo,
    Recorder,
    Run,
    TracedAsyncStepIterator,
    TracedStepIterator,
    current,
    current_run,
    traced_async_generator,
    traced_generator,
)

ENGINE = "burr"
_instruments = ("apache-burr >= 0.40, < 0.50",)

_APPLICATION = "burr.core.application"
_ACTION = "burr.core.action"
_TRACING = "burr.visibility.tracing"
# (module, attribute, adapter method) for every wrapper.
_TARGETS = (
    (_APPLICATION, "Application.run", "call"),
    (_APPLICATION, "Application.step", "call"),
    (_APPLICATION, "Application.arun", "call_async"),
    (_APPLICATION, "Application.astep", "call_async"),
    (_APPLICATION, "Application.iterate", "iteration"),
    (_APPLICATION, "Application.stream_iterate", "iteration"),
    (_APPLICATION, "Application.aiterate", "async_iteration"),
    (_APPLICATION, "Application.astream_iterate", "async_iteration"),
    (_APPLICATION, "Application.stream_result", "stream"),
    (_APPLICATION, "Application.astream_result", "stream_async"),
    (_APPLICATION, "Application._step", "step"),
    (_APPLICATION, "Application._astep", "step_async"),
    (_APPLICATION, "Application._process_inputs", "inputs"),
    (_APPLICATION, "_run_single_step_streaming_action", "streamed_step"),
    (_APPLICATION, "_run_multi_step_streaming_action", "streamed_step"),
    (_APPLICATION, "_arun_single_step_streaming_action", "streamed_step_async"),
    (_APPLICATION, "_arun_multi_step_streaming_action", "streamed_step_async"),
    (_ACTION, "StreamingResultContainer.__init__", "container"),
    (_ACTION, "AsyncStreamingResultContainer.__init__", "container_async"),
    (_TRACING, "ActionSpanTracer.__enter__", "span_enter"),
    (_TRACING, "ActionSpanTracer.__exit__", "span_exit"),
    (_TRACING, "ActionSpanTracer.__aenter__", "span_enter_async"),
    (_TRACING, "ActionSpanTracer.__aexit__", "span_exit_async"),
)


class BurrInstrumentor(EngineInstrumentor):
    """Traces and meters every Burr application run, action, stream and user span.

    ``instrument(tracer_provider=..., meter_provider=..., settings=...)``; with no
    providers the global ones are used. Needs no ``with_hooks`` or ``with_tracker``.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _wrap(self, recorder: Recorder) -> None:
        adapter = _BurrAdapter(recorder)
        for module, name, method in _TARGETS:
            wrap_function_wrapper(module, name, getattr(adapter, method))

    def _unwrap(self) -> None:
        for module, name, _ in _TARGETS:
            owner_path, _, attribute = name.rpartition(".")
            owner: Any = importlib.import_module(module)
            if owner_path:
                owner = getattr(owner, owner_path)
            unwrap(owner, attribute)


class _BurrAdapter:
    """Maps Burr's calls to recorder calls."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._captures_state = "state" in recorder.captured_phases
        self._application_name = recorder.settings.burr_application_name
        self._infos: BoundedCache[tuple[str, str, str], NodeInfo] = BoundedCache()
        # What each action is, described once per action object (apps copy their actions).
        self._actions: weakref.WeakKeyDictionary[Any, _ActionDescription] = (
            weakref.WeakKeyDictionary()
        )
        # Running steps by (app id, sequence id): where spawned sub-applications belong.
        self._steps: dict[tuple[str, int | None], Run] = {}
        # Apps inside ``_step``/``_astep`` whose action's run opens at ``_process_inputs``.
        self._pending: dict[Any, _PendingStep] = {}

    # --- Application runs: the outermost public call on an app ------------------------

    def call(self, wrapped: Any, app: Any, args: tuple, kwargs: dict) -> Any:
        if _is_run_of(current_run(), app):  # an inner call (``iterate`` calling ``step``)
            return wrapped(*args, **kwargs)
        spawner = self._spawner(app)
        if spawner is not None:
            with current(spawner):
                return self._call(wrapped, app, args, kwargs)
        return self._call(wrapped, app, args, kwargs)

    def _call(self, wrapped: Any, app: Any, args: tuple, kwargs: dict) -> Any:
        run = self._start_app(app, attach=True)
        if run is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as error:
            self._recorder.finish(run, error=error)
            raise
        self._finish_app(run, app)
        return result

    async def call_async(self, wrapped: Any, app: Any, args: tuple, kwargs: dict) -> Any:
        run = self._start_app(app, attach=True)
        if run is None:
            return await wrapped(*args, **kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as error:
            self._recorder.finish(run, error=error)
            raise
        self._finish_app(run, app)
        return result

    def iteration(self, wrapped: Any, app: Any, args: tuple, kwargs: dict) -> Any:
        return self._traced_iteration(app, wrapped(*args, **kwargs))

    def async_iteration(self, wrapped: Any, app: Any, args: tuple, kwargs: dict) -> Any:
        return self._traced_async_iteration(app, wrapped(*args, **kwargs))

    def _traced_iteration(self, app: Any, generator: Any) -> Any:
        """The run starts at the first step: a generator never started leaves nothing open."""
        run = self._start_app(app, attach=False)
        if run is not None:
            generator = traced_generator(self._recorder, run, generator)
        return (yield from generator)

    async def _traced_async_iteration(self, app: Any, generator: Any) -> Any:
        run = self._start_app(app, attach=False)
        if run is not None:
            generator = traced_async_generator(self._recorder, run, generator)
        try:
            async for item in generator:
                yield item
        finally:
            await generator.aclose()  # closed early: the run ends now, not at loop shutdown

    def stream(self, wrapped: Any, app: Any, args: tuple, kwargs: dict) -> Any:
        run = self._start_app(app, attach=False)
        if run is None:
            return wrapped(*args, **kwargs)
        try:
            with current(run):
                result = wrapped(*args, **kwargs)
        except BaseException as error:
            self._recorder.finish(run, error=error)
            raise
        self._hand_to_stream(run, app, result)
        return result

    async def stream_async(self, wrapped: Any, app: Any, args: tuple, kwargs: dict) -> Any:
        run = self._start_app(app, attach=False)
        if run is None:
            return await wrapped(*args, **kwargs)
        try:
            with current(run):
                result = await wrapped(*args, **kwargs)
        except BaseException as error:
            self._recorder.finish(run, error=error)
            raise
        self._hand_to_stream(run, app, result)
        return result

    def _hand_to_stream(self, run: Run, app: Any, result: Any) -> None:
        """A streamed action ends the run with its last item; anything else ends it now."""
        steps = getattr(_second(result), "streaming_result_generator", None)
        if isinstance(steps, (TracedStepIterator, TracedAsyncStepIterator)):
            steps.end.then(lambda state, error: self._finish_app(run, app, error, state))
        else:
            self._finish_app(run, app)

    def _spawner(self, app: Any) -> Run | None:
        """The step that spawned ``app`` when the context lost it: an executor thread that
        does not carry context (the thread instrumentation is off, or a custom executor)."""
        if current_run() is not None:
            return None
        pointer = app.spawning_parent_pointer
        return None if pointer is None else self._steps.get((pointer.app_id, pointer.sequence_id))

    def _start_app(self, app: Any, *, attach: bool) -> Run | None:
        if not is_instrumentation_enabled() or _running(app):
            return None
        try:
            info = self._app_info(app)
            run = self._recorder.start(
                info,
                app,
                start_attributes=self._recorder.identity_attributes(app.uid, app.partition_key),
                graph=lambda: _graph(app),
                attach=attach,
            )
        except Exception as error:
            report_internal_error("describing a Burr application", error)
            return None
        if self._captures_state:
            self._recorder.capture_state(run, _user_state(app.state), ended=False)
        return run

    def _finish_app(
        self, run: Run, app: Any, error: BaseException | None = None, state: Any = None
    ) -> None:
        """``state``: the final one when a stream ends (Burr stores it in the app just after)."""
        if self._captures_state and error is None:
            self._recorder.capture_state(run, _user_state(app.state if state is None else state))
        self._recorder.finish(run, error=error)

    # --- Actions ---------------------------------------------------------------------------

    def step(self, wrapped: Any, app: Any, args: tuple, kwargs: dict) -> Any:
        pending = self._begin_step(app)
        if pending is None:
            return wrapped(*args, **kwargs)
        try:
            outcome = wrapped(*args, **kwargs)
        except BaseException as error:
            self._end_step(pending, app, None, error)
            raise
        self._end_step(pending, app, outcome, None)
        return outcome

    async def step_async(self, wrapped: Any, app: Any, args: tuple, kwargs: dict) -> Any:
        pending = self._begin_step(app)
        if pending is None:
            return await wrapped(*args, **kwargs)
        try:
            outcome = await wrapped(*args, **kwargs)
        except BaseException as error:
            self._end_step(pending, app, None, error)
            raise
        self._end_step(pending, app, outcome, None)
        return outcome

    def inputs(self, wrapped: Any, app: Any, args: tuple, kwargs: dict) -> Any:
        """``_process_inputs(inputs, action)``: the first sight of the action a step runs."""
        pending = self._pending.get(app)
        if pending is not None and pending.step is None:
            action = args[1] if len(args) > 1 else kwargs.get("action")
            pending.step = self._open_step(app, action, attach=True)
        return wrapped(*args, **kwargs)

    def _begin_step(self, app: Any) -> _PendingStep | None:
        """``_step`` or ``_astep`` is about to choose an action and run it.

        The action's run opens when Burr hands the chosen action to ``_process_inputs``,
        so transition conditions are evaluated by Burr alone, as often as without us.
        None when ``_astep`` hands a sync action to ``_step``: that is the same step.
        """
        if not is_instrumentation_enabled() or app in self._pending:
            return None
        pending = self._pending[app] = _PendingStep()
        return pending

    def _end_step(
        self, pending: _PendingStep, app: Any, outcome: Any, error: BaseException | None
    ) -> None:
        self._pending.pop(app, None)
        step = pending.step
        if step is not None:
            state = outcome[2] if isinstance(outcome, tuple) and len(outcome) == 3 else None
            self._step_done(step, app, state, error)

    def _open_step(self, app: Any, action: Any, *, attach: bool) -> _ActionStep | None:
        try:
            action_description = self._describe_action(action)
            sequence_id = app.sequence_id
            attributes = {
                semconv.NODE_SEQUENCE_ID: sequence_id,
                semconv.NODE_READS: action_description.reads,
                semconv.NODE_WRITES: action_description.writes,
            }
        except Exception as error:
            report_internal_error("describing a Burr action", error)
            return None
        run = self._recorder.start(
            action_description.info,
            app,
            node_key=action_description.info.name,
            start_attributes=attributes,
            attach=attach,
        )
        if run is None:
            return None
        step = _ActionStep(run, action_description, (app.uid, sequence_id))
        self._steps[step.key] = run
        return step

    def _step_done(
        self, step: _ActionStep, app: Any, state: Any, error: BaseException | None
    ) -> None:
        run = step.run
        if self._steps.get(step.key) is run:
            del self._steps[step.key]
        successor = None
        if error is None and state is not None and run.span.is_recording():
            self._recorder.state_changed(run, step.action.writes)
            if self._captures_state:
                self._recorder.capture_state(run, _user_state(state))
            successor = _successor(app, run.info.name, state)
        self._recorder.finish(run, error=error, successor=successor)

    # --- Streamed actions ------------------------------------------------------------------

    def streamed_step(self, wrapped: Any, _: Any, args: tuple, kwargs: dict) -> Any:
        generator = wrapped(*args, **kwargs)
        started = self._start_streamed(kwargs)
        if started is None:
            return generator
        run, end = started
        return TracedStepIterator(run, generator, end.is_final, end)

    def streamed_step_async(self, wrapped: Any, _: Any, args: tuple, kwargs: dict) -> Any:
        generator = wrapped(*args, **kwargs)
        started = self._start_streamed(kwargs)
        if started is None:
            return generator
        run, end = started
        return TracedAsyncStepIterator(run, generator, end.is_final, end)

    def _start_streamed(self, kwargs: dict) -> tuple[Run, _StreamEnd] | None:
        """Burr calls these with keywords, inside the app's ``stream_result``."""
        parent = current_run()
        action = kwargs.get("action")
        if not is_instrumentation_enabled() or action is None or not _is_app_run(parent):
            return None
        app = parent.owner  # type: ignore[union-attr]
        step = self._open_step(app, action, attach=False)
        if step is None:
            return None
        return step.run, _StreamEnd(lambda state, error: self._step_done(step, app, state, error))

    def container(self, wrapped: Any, container: Any, args: tuple, kwargs: dict) -> None:
        """A consumer that stops early makes Burr call the container's callback: end then."""
        wrapped(*args, **kwargs)
        steps = container.streaming_result_generator
        if isinstance(steps, TracedStepIterator):
            callback = container._callback

            def stop_then_call_back(result: Any, state: Any, exc: Any = None) -> Any:
                steps.stop(exc)
                return callback(result, state, exc)

            container._callback = stop_then_call_back

    def container_async(self, wrapped: Any, container: Any, args: tuple, kwargs: dict) -> None:
        wrapped(*args, **kwargs)
        steps = container.streaming_result_generator
        if isinstance(steps, TracedAsyncStepIterator):
            callback = container._callback

            async def stop_then_call_back(result: Any, state: Any, exc: Any = None) -> Any:
                steps.stop(exc)
                return await callback(result, state, exc)

            container._callback = stop_then_call_back

    # --- User spans (__tracer, @trace) -----------------------------------------------------

    def span_enter(self, wrapped: Any, tracer: Any, args: tuple, kwargs: dict) -> Any:
        result = wrapped(*args, **kwargs)
        self._open_user_span(tracer)
        return result

    def span_exit(self, wrapped: Any, tracer: Any, args: tuple, kwargs: dict) -> Any:
        self._close_user_span(tracer, args)
        return wrapped(*args, **kwargs)

    async def span_enter_async(self, wrapped: Any, tracer: Any, args: tuple, kwargs: dict) -> Any:
        result = await wrapped(*args, **kwargs)
        self._open_user_span(tracer)
        return result

    async def span_exit_async(self, wrapped: Any, tracer: Any, args: tuple, kwargs: dict) -> Any:
        self._close_user_span(tracer, args)
        return await wrapped(*args, **kwargs)

    def _open_user_span(self, tracer: Any) -> None:
        if is_instrumentation_enabled() and current_run() is not None:
            self._recorder.start_span(str(tracer.span_name), tracer)

    def _close_user_span(self, tracer: Any, args: tuple) -> None:
        run = current_run()
        if run is not None and run.owner is tracer:
            error = args[1] if len(args) > 1 and isinstance(args[1], BaseException) else None
            self._recorder.finish(run, error=error)

    # --- What an application and an action are ------------------------------------------

    def _app_info(self, app: Any) -> NodeInfo:
        return self._info(_workflow_name(app, self._application_name), "Application", "application")

    def _describe_action(self, action: Any) -> _ActionDescription:
        """Once per action object (an app's actions are fixed when it is built)."""
        try:
            return self._actions[action]
        except KeyError:
            described = self._actions[action] = self._new_description(action)
            return described
        except TypeError:  # an action class neither hashable nor weakly referable
            return self._new_description(action)

    def _new_description(self, action: Any) -> _ActionDescription:
        kind = "streaming_action" if action.streaming else "action"
        info = self._info(action.name, type(action).__name__, kind)
        return _ActionDescription(info, tuple(action.reads), tuple(action.writes))

    def _info(self, name: str, class_name: str, kind: str) -> NodeInfo:
        key = (name, class_name, kind)
        info = self._infos.get(key)
        if info is None:
            info = NodeInfo(ENGINE, name, class_name, kind, is_flow=kind == "application")
            self._infos[key] = info
        return info


class _ActionDescription(NamedTuple):
    """An action as its steps' spans describe it."""

    info: NodeInfo
    reads: tuple[str, ...]
    writes: tuple[str, ...]


class _ActionStep(NamedTuple):
    """A running action: its run, what it is, and where spawned sub-applications find it."""

    run: Run
    action: _ActionDescription
    key: tuple[str, int | None]  # (app id, sequence id)


class _PendingStep:
    """A step between ``_step`` starting and its action being known."""

    __slots__ = ("step",)

    def __init__(self) -> None:
        self.step: _ActionStep | None = None


class _StreamEnd:
    """How a streamed action's run ends: with the final state it yielded, then the
    application run that was waiting for the stream, if any."""

    def __init__(self, finish_step: Any) -> None:
        self._finish_step = finish_step
        self._then: list[Any] = []
        self.final_state: Any = None

    def then(self, finish: Any) -> None:
        self._then.append(finish)

    def is_final(self, item: Any) -> bool:
        """Burr's streams yield (result, None) until the final (result, new state)."""
        if isinstance(item, tuple) and len(item) == 2 and item[1] is not None:
            self.final_state = item[1]
            return True
        return False

    def __call__(self, error: BaseException | None) -> None:
        self._finish_step(self.final_state, error)
        for finish in self._then:
            finish(self.final_state, error)


def _is_app_run(run: Run | None) -> bool:
    return run is not None and run.info.is_flow and run.info.engine == ENGINE


def _is_run_of(run: Run | None, app: Any) -> bool:
    return run is not None and run.owner is app and run.info.is_flow


def _running(app: Any) -> bool:
    """Whether a call on ``app`` is already recording it (an inner call: run -> iterate)."""
    run = current_run()
    while run is not None:
        if _is_run_of(run, app):
            return True
        run = run.parent
    return False


def _workflow_name(app: Any, configured: str) -> str:
    """A stable, low-cardinality name, never the app id.

    A spawned sub-application is named after its first action (it shares its
    parent's tracker); a top-level one after its tracker project, else the
    configured name, else its first declared action.
    """
    spawned = app.spawning_parent_pointer is not None
    if not spawned:
        tracker = getattr(app, "_tracker", None)
        project = getattr(tracker, "project_id", None) or getattr(tracker, "project", None)
        if isinstance(project, str) and project:
            return project
        if configured:
            return configured
    actions = app.graph.actions
    return str(actions[0].name) if actions else ENGINE


def _graph(app: Any) -> FlowGraph:
    """Actions in declaration order; transitions labelled with their condition."""
    graph = app.graph
    nodes = tuple(GraphNode(a.name, a.name, type(a).__name__) for a in graph.actions)
    edges = tuple((t.from_.name, t.to.name, str(t.condition.name)) for t in graph.transitions)
    return FlowGraph(nodes, edges)


def _successor(app: Any, action_name: str, state: Any) -> str | None:
    """The action the graph chooses after this one for this state (Burr's own rule)."""
    try:
        following = app.graph.get_next_node(action_name, state, app.entrypoint)
    except Exception:  # a condition that fails: Burr reports it at the next step
        return None
    return semconv.SUCCESSOR_END if following is None else str(following.name)


def _user_state(state: Any) -> dict[str, Any]:
    """The state without Burr's internal ``__`` keys (sequence id, prior step)."""
    return {key: value for key, value in state.get_all().items() if not key.startswith("__")}


def _second(result: Any) -> Any:
    return result[1] if isinstance(result, tuple) and len(result) == 2 else None
