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

An action's successor is the one Burr itself resolves (``Graph.get_next_node``,
observed): Burr resolves it right after the step, before the next one or before
halting, and the action's span, ended then, takes it at the time the step
ended. Nothing here evaluates a transition condition: a successor Burr never
resolves during the run is left out, unless the graph fixes it (no transition
out: the end; an unconditional first transition: its target).

Sub-applications (``MapStates``, ``MapActions``, ``SubGraphTask``, any app run
inside an action) nest under the action that runs them: the action's run is
current, ``asyncio.gather`` copies it into each task, and the thread context
brought along by the base instrumentor carries it into Burr's thread pool.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import weakref
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from wrapt import wrap_function_wrapper

import reasonflow_otel.recorder as recording
from reasonflow_otel import semconv
from reasonflow_otel.guard import report_internal_error, safe_str
from reasonflow_otel.instrumentation.base import EngineInstrumentor
from reasonflow_otel.recorder import BoundedCache, FlowGraph, GraphNode, NodeInfo, Recorder, Run

ENGINE = "burr"
_instruments = ("apache-burr >= 0.40, < 0.50",)

_APPLICATION = "burr.core.application"
_ACTION = "burr.core.action"
_GRAPH = "burr.core.graph"
# States awaiting their successor kept before those of collected apps are dropped.
_AWAITING_BOUND = 1024
_TRACING = "burr.visibility.tracing"
_CALLS = ("Application.run", "Application.step", "Application.arun", "Application.astep")
_ITERATIONS = (
    ("Application.iterate", "iterate"),
    ("Application.stream_iterate", "iterate"),
    ("Application.aiterate", "aiterate"),
    ("Application.astream_iterate", "aiterate"),
)
_STREAMED_STEPS = (
    "_run_single_step_streaming_action",
    "_run_multi_step_streaming_action",
    "_arun_single_step_streaming_action",
    "_arun_multi_step_streaming_action",
)
# Every (module, attribute) wrapped, for ``uninstrument()``.
_TARGETS = (
    *((_APPLICATION, name) for name in _CALLS),
    *((_APPLICATION, name) for name, _ in _ITERATIONS),
    (_APPLICATION, "Application.stream_result"),
    (_APPLICATION, "Application.astream_result"),
    (_APPLICATION, "Application._step"),
    (_APPLICATION, "Application._astep"),
    (_APPLICATION, "Application._process_inputs"),
    (_GRAPH, "Graph.get_next_node"),
    *((_APPLICATION, name) for name in _STREAMED_STEPS),
    (_ACTION, "StreamingResultContainer.__init__"),
    (_ACTION, "AsyncStreamingResultContainer.__init__"),
    (_TRACING, "ActionSpanTracer.__enter__"),
    (_TRACING, "ActionSpanTracer.__exit__"),
    (_TRACING, "ActionSpanTracer.__aenter__"),
    (_TRACING, "ActionSpanTracer.__aexit__"),
)


class BurrInstrumentor(EngineInstrumentor):
    """Traces and meters every Burr application run, action, stream and user span.

    ``instrument(tracer_provider=..., meter_provider=..., settings=...)``; with no
    providers the global ones are used. Needs no ``with_hooks`` or ``with_tracker``.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _wrap(self, recorder: Recorder) -> None:
        _BurrAdapter(recorder).install()

    def _unwrap(self) -> None:
        for module, name in _TARGETS:
            recording.unwrap(module, name)


class _BurrAdapter:
    """Maps Burr's calls to recorder calls."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._captures_state = recorder.captures("state")
        self._names_changed_keys = recorder.settings.state_key_names
        self._partition_key_mode = recorder.settings.partition_key
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
        # Per app, the last step whose successor Burr has not resolved yet.
        self._unresolved: weakref.WeakKeyDictionary[Any, _Unresolved] = weakref.WeakKeyDictionary()
        # The same, by the state Burr will resolve from (it keeps that very object).
        self._by_state: weakref.WeakValueDictionary[int, _Unresolved] = (
            weakref.WeakValueDictionary()
        )
        # Its keys in a plain dict: ``get_next_node``'s gate, asked several times per step,
        # is then one C call (a collected app's entry goes when its state is asked about).
        self._awaiting: dict[int, None] = {}

    def install(self) -> None:
        app_call = {"end": self._end_call, "fail": self._fail_call}
        for name in _CALLS:
            recording.wrap(_APPLICATION, name, self._begin_call, **app_call)
        for name, shape in _ITERATIONS:
            recording.wrap(
                _APPLICATION,
                name,
                self._begin_iteration,
                self._end_app,
                self._fail_app,
                shape=shape,
                item=self._handed_out,
            )
        for name in ("Application.stream_result", "Application.astream_result"):
            recording.wrap(
                _APPLICATION, name, self._begin_stream, self._end_stream, self._fail_call
            )
        for name in ("Application._step", "Application._astep"):
            recording.wrap(_APPLICATION, name, self._begin_step, self._end_step, self._fail_step)
        recording.wrap(
            _APPLICATION, "Application._process_inputs", self._inputs, gate=self._pending.__len__
        )
        recording.wrap(
            _GRAPH,
            "Graph.get_next_node",
            self._resolving,
            self._resolved,
            _ignore,
            gate=self._awaiting.__len__,
        )
        for name in _STREAMED_STEPS:  # the generator is replaced: wrapt itself, no bracket
            wrap_function_wrapper(_APPLICATION, name, self._streamed_step)
        for name, built in (
            ("StreamingResultContainer.__init__", self._container_built),
            ("AsyncStreamingResultContainer.__init__", self._async_container_built),
        ):
            recording.wrap(_ACTION, name, _itself, built, _ignore, gate=_always)
        for name in ("ActionSpanTracer.__enter__", "ActionSpanTracer.__aenter__"):
            recording.wrap(_TRACING, name, self._user_span_entering, self._open_user_span, _ignore)
        for name in ("ActionSpanTracer.__exit__", "ActionSpanTracer.__aexit__"):
            recording.wrap(_TRACING, name, self._close_user_span, gate=_always)

    # --- Application runs: the outermost public call on an app ------------------------

    def _begin_call(self, app: Any, args: tuple, kwargs: dict) -> _AppCall | None:
        if _is_run_of(recording.current_run(), app):  # an inner call (``iterate`` calling ``step``)
            return None
        spawner = self._spawner(app)
        scope = _entered(spawner.current()) if spawner is not None else None
        run = self._start_app(app, attach=True)
        if run is None:
            _leave(scope)
            return None
        return _AppCall(run, scope)

    def _end_call(self, call: _AppCall, result: Any) -> None:
        self._finish_app(call.run)
        _leave(call.scope)

    def _fail_call(self, call: _AppCall, error: BaseException) -> None:
        self._finish_app(call.run, error)
        _leave(call.scope)

    def _begin_iteration(self, app: Any, args: tuple, kwargs: dict) -> Run | None:
        """The run covers the whole iteration, from its first step."""
        return self._start_app(app, attach=True)

    def _handed_out(self, run: Run, item: Any) -> None:
        """A step goes to the consumer, who may keep the iteration paused: its span ends
        now, without a successor Burr would resolve only when the consumer resumes."""
        self._settle(run.owner)

    def _end_app(self, run: Run, result: Any) -> None:
        self._finish_app(run)

    def _fail_app(self, run: Run, error: BaseException) -> None:
        self._finish_app(run, error)

    def _begin_stream(self, app: Any, args: tuple, kwargs: dict) -> _AppCall | None:
        """``stream_result``: the run goes on in the stream it returns."""
        run = self._start_app(app, attach=False)
        return None if run is None else _AppCall(run, _entered(run.current()))

    def _end_stream(self, call: _AppCall, result: Any) -> None:
        """A streamed action ends the run with its last item; anything else ends it now."""
        _leave(call.scope)
        steps = getattr(_second(result), "streaming_result_generator", None)
        if isinstance(steps, _TracedSteps):
            run = call.run
            steps.end.then(lambda state, error: self._finish_app(run, error, state))
        else:
            self._finish_app(call.run)

    def _spawner(self, app: Any) -> Run | None:
        """The step that spawned ``app`` when the context lost it: an executor thread that
        does not carry context (the thread instrumentation is off, or a custom executor)."""
        if recording.current_run() is not None:
            return None
        pointer = app.spawning_parent_pointer
        return None if pointer is None else self._steps.get((pointer.app_id, pointer.sequence_id))

    def _start_app(self, app: Any, *, attach: bool) -> Run | None:
        if not is_instrumentation_enabled() or _running(app):
            return None
        try:
            info = self._app_info(app)
            attributes = self._identity_attributes(app.uid, app.partition_key)
        except Exception as error:
            report_internal_error("describing a Burr application", error)
            return None
        run = self._recorder.begin(
            info, app, attributes=attributes, graph=lambda: _graph(app), attach=attach
        )
        if run is not None and self._captures_state:
            run.capture("state", semconv.STATE_BEFORE, _user_state(app.state))
        return run

    def _finish_app(self, run: Run, error: BaseException | None = None, state: Any = None) -> None:
        """``state``: the final one when a stream ends (Burr stores it in the app just after)."""
        app = run.owner
        self._settle(app)
        if error is not None:
            run.fail(error)
            return
        if self._captures_state:
            run.capture(
                "state", semconv.STATE_AFTER, _user_state(app.state if state is None else state)
            )
        run.end()

    def _identity_attributes(self, app_id: str, partition_key: str | None) -> dict[str, Any]:
        """The app's id, and its partition key as ``REASONFLOW_OTEL_PARTITION_KEY`` allows."""
        attributes: dict[str, Any] = {semconv.APP_ID: app_id}
        mode = self._partition_key_mode
        if partition_key is not None and mode == "raw":
            attributes[semconv.APP_PARTITION_KEY] = partition_key
        elif partition_key is not None and mode == "hash":
            digest = hashlib.sha256(partition_key.encode()).hexdigest()
            attributes[semconv.APP_PARTITION_KEY_HASH] = digest
        return attributes

    # --- Actions ---------------------------------------------------------------------------

    def _begin_step(self, app: Any, args: tuple, kwargs: dict) -> _PendingStep | None:
        """``_step`` or ``_astep`` is about to choose an action and run it.

        The action's run opens when Burr hands the chosen action to ``_process_inputs``,
        so transition conditions are evaluated by Burr alone, as often as without us.
        None when ``_astep`` hands a sync action to ``_step``: that is the same step.
        """
        if app in self._pending:
            return None
        pending = self._pending[app] = _PendingStep(app)
        return pending

    def _end_step(self, pending: _PendingStep, outcome: Any) -> None:
        self._pending.pop(pending.app, None)
        if pending.step is not None:
            state = outcome[2] if isinstance(outcome, tuple) and len(outcome) == 3 else None
            self._step_done(pending.step, pending.app, state, None)

    def _fail_step(self, pending: _PendingStep, error: BaseException) -> None:
        self._pending.pop(pending.app, None)
        if pending.step is not None:
            self._step_done(pending.step, pending.app, None, error)

    def _inputs(self, app: Any, args: tuple, kwargs: dict) -> None:
        """``_process_inputs(inputs, action)``: the first sight of the action a step runs."""
        pending = self._pending.get(app)
        if pending is not None and pending.step is None:
            action = args[1] if len(args) > 1 else kwargs.get("action")
            pending.step = self._open_step(app, action, attach=True)

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
        run = self._recorder.begin(
            action_description.info,
            app,
            node_key=action_description.info.name,
            attributes=attributes,
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
        if error is not None:
            run.fail(error)
            return
        if state is None or not run.recording:
            run.end()
            return
        self._state_changed(run, step.action.writes)
        if self._captures_state:
            run.capture("state", semconv.STATE_AFTER, _user_state(state))
        successor = _fixed_successor(app, run.info.name)
        if successor is not None:
            run.end(successor=successor)
            return
        self._settle(app)
        unresolved = self._unresolved[app] = _Unresolved(app, run, run.info.name, state)
        self._by_state[id(state)] = unresolved
        self._awaiting[id(state)] = None
        if len(self._awaiting) > _AWAITING_BOUND:
            self._prune_awaiting()
        run.end(successor_later=True)

    def _state_changed(self, run: Run, changed_keys: tuple[str, ...]) -> None:
        """A ``gen_ai.execution.state.changed`` event: how many keys, and (opt-in) which."""
        attributes: dict[str, Any] = {semconv.STATE_CHANGED_COUNT: len(changed_keys)}
        if self._names_changed_keys:
            attributes[semconv.STATE_CHANGED_KEYS] = [safe_str(key) for key in changed_keys]
        run.add_event(semconv.EVENT_STATE_CHANGED, attributes)

    # --- Successors: what Burr itself resolves after a step ------------------------------------

    def _resolving(self, graph: Any, args: tuple, kwargs: dict) -> _Unresolved | None:
        """``get_next_node(prior_step, state, entrypoint)`` from the state a step produced."""
        prior_step = args[0] if args else kwargs.get("prior_step")
        state = args[1] if len(args) > 1 else kwargs.get("state")
        if id(state) not in self._awaiting:  # another app's step awaits: not this state
            return None
        unresolved = self._by_state.get(id(state))
        if unresolved is None:  # its app was collected unresolved
            self._awaiting.pop(id(state), None)
            return None
        if unresolved.state is not state or unresolved.action != prior_step:
            return None
        return unresolved

    def _resolved(self, unresolved: _Unresolved, following: Any) -> None:
        app = unresolved.app()
        if app is not None and self._unresolved.get(app) is unresolved:
            del self._unresolved[app]
            self._forget_state(unresolved)
            name = semconv.SUCCESSOR_END if following is None else str(following.name)
            unresolved.run.resolve_successor(name)

    def _settle(self, app: Any) -> None:
        """The app's last step keeps no successor Burr did not resolve (its span ends)."""
        unresolved = self._unresolved.pop(app, None)
        if unresolved is not None:
            self._forget_state(unresolved)
            unresolved.run.resolve_successor(None)

    def _prune_awaiting(self) -> None:
        """Drop the states of apps collected while their step awaited a successor."""
        live = dict.fromkeys(list(self._by_state.keys()))
        if len(live) * 2 < len(self._awaiting):
            self._awaiting.clear()  # the same dict: the gate holds its ``__len__``
            self._awaiting.update(live)

    def _forget_state(self, unresolved: _Unresolved) -> None:
        self._by_state.pop(id(unresolved.state), None)
        self._awaiting.pop(id(unresolved.state), None)

    # --- Streamed actions ------------------------------------------------------------------

    def _streamed_step(self, wrapped: Any, _: Any, args: tuple, kwargs: dict) -> Any:
        generator = wrapped(*args, **kwargs)
        started = self._start_streamed(kwargs)
        if started is None:
            return generator
        run, end = started
        steps = _TracedAsyncSteps if inspect.isasyncgen(generator) else _TracedSyncSteps
        return steps(run, generator, end.is_final, end)

    def _start_streamed(self, kwargs: dict) -> tuple[Run, _StreamEnd] | None:
        """Burr calls these with keywords, inside the app's ``stream_result``."""
        parent = recording.current_run()
        action = kwargs.get("action")
        if not is_instrumentation_enabled() or action is None or not _is_app_run(parent):
            return None
        app = parent.owner  # type: ignore[union-attr]
        step = self._open_step(app, action, attach=False)
        if step is None:
            return None
        return step.run, _StreamEnd(lambda state, error: self._step_done(step, app, state, error))

    @staticmethod
    def _container_built(container: Any, result: Any) -> None:
        """A consumer that stops early makes Burr call the container's callback: end then."""
        steps = container.streaming_result_generator
        if isinstance(steps, _TracedSyncSteps):
            callback = container._callback

            def stop_then_call_back(result: Any, state: Any, exc: Any = None) -> Any:
                steps.stop(exc)
                return callback(result, state, exc)

            container._callback = stop_then_call_back

    @staticmethod
    def _async_container_built(container: Any, result: Any) -> None:
        steps = container.streaming_result_generator
        if isinstance(steps, _TracedAsyncSteps):
            callback = container._callback

            async def stop_then_call_back(result: Any, state: Any, exc: Any = None) -> Any:
                steps.stop(exc)
                return await callback(result, state, exc)

            container._callback = stop_then_call_back

    # --- User spans (__tracer, @trace) -----------------------------------------------------

    @staticmethod
    def _user_span_entering(tracer: Any, args: tuple, kwargs: dict) -> Any:
        return tracer if recording.current_run() is not None else None

    def _open_user_span(self, tracer: Any, result: Any) -> None:
        """After Burr's own ``__enter__``: the user's span nests under the action's."""
        self._recorder.begin(NodeInfo.span(ENGINE, str(tracer.span_name)), tracer)

    @staticmethod
    def _close_user_span(tracer: Any, args: tuple, kwargs: dict) -> None:
        """Before Burr's own ``__exit__``; nothing else to do around the call."""
        run = recording.current_run()
        if run is not None and run.owner is tracer:
            error = args[1] if len(args) > 1 and isinstance(args[1], BaseException) else None
            if error is None:
                run.end()
            else:
                run.fail(error)

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


class _AppCall(NamedTuple):
    """An application run and the context entered around its call (a spawner's), if any."""

    run: Run
    scope: contextlib.AbstractContextManager[Any] | None


class _Unresolved:
    """A step whose span waits for the successor Burr resolves from ``state``."""

    __slots__ = ("__weakref__", "action", "app", "run", "state")

    def __init__(self, app: Any, run: Run, action: str, state: Any) -> None:
        self.app = weakref.ref(app)
        self.run = run
        self.action = action
        self.state = state


class _PendingStep:
    """A step between ``_step`` starting and its action being known."""

    __slots__ = ("app", "step")

    def __init__(self, app: Any) -> None:
        self.app = app
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


class _TracedSteps:
    """An iterator over a streamed action's generator whose run ends with its final item.

    Burr stops pulling once the generator yields its final item (leaving it
    paused): the run (begun with ``attach=False``) is current while an item is
    computed, and ``end(error)`` is called once: when an item is final, when the
    generator raises or ends, or when this iterator is closed or collected. A
    consumer stopping early is no error.
    """

    def __init__(
        self,
        run: Run,
        generator: Any,
        is_last: Callable[[Any], bool],
        end: _StreamEnd,
    ) -> None:
        self.end = end
        self._run = run
        self._generator = generator
        self._is_last = is_last
        self._done = False

    def _scope(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext() if self._done else self._run.current()

    def _after(self, item: Any) -> Any:
        if not self._done and self._is_last(item):
            self._end(None)
        return item

    def stop(self, error: BaseException | None = None) -> None:
        """The consumer is done with the stream (Burr's container says so): end now."""
        self._end(error)

    def _end(self, error: BaseException | None) -> None:
        if not self._done:
            self._done = True
            self.end(None if isinstance(error, GeneratorExit) else error)

    def __del__(self) -> None:
        self._end(None)  # abandoned before its last item: the run ends, not as a failure


class _TracedSyncSteps(_TracedSteps):
    def __iter__(self) -> _TracedSyncSteps:
        return self

    def __next__(self) -> Any:
        try:
            with self._scope():
                item = next(self._generator)
        except BaseException as error:
            self._end(None if isinstance(error, StopIteration) else error)
            raise
        return self._after(item)

    def close(self) -> None:
        try:
            self._generator.close()
        finally:
            self._end(None)


class _TracedAsyncSteps(_TracedSteps):
    def __aiter__(self) -> _TracedAsyncSteps:
        return self

    async def __anext__(self) -> Any:
        try:
            with self._scope():
                item = await self._generator.__anext__()
        except BaseException as error:
            self._end(None if isinstance(error, StopAsyncIteration) else error)
            raise
        return self._after(item)

    async def aclose(self) -> None:
        try:
            await self._generator.aclose()
        finally:
            self._end(None)


def _entered(
    scope: contextlib.AbstractContextManager[Any],
) -> contextlib.AbstractContextManager[Any]:
    scope.__enter__()
    return scope


def _leave(scope: contextlib.AbstractContextManager[Any] | None) -> None:
    if scope is not None:
        scope.__exit__(None, None, None)


def _itself(instance: Any, args: tuple, kwargs: dict) -> Any:
    return instance


def _ignore(token: Any, outcome: Any) -> None:
    """Nothing to report: the engine handles this outcome itself."""


def _always() -> bool:
    return True


def _is_app_run(run: Run | None) -> bool:
    return run is not None and run.info.is_flow and run.info.engine == ENGINE


def _is_run_of(run: Run | None, app: Any) -> bool:
    return run is not None and run.owner is app and run.info.is_flow


def _running(app: Any) -> bool:
    """Whether a call on ``app`` is already recording it (an inner call: run -> iterate)."""
    run = recording.current_run()
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


def _fixed_successor(app: Any, action_name: str) -> str | None:
    """The successor the graph alone decides, evaluating nothing: the end when no
    transition leaves the action, the target of an unconditional first one; else None."""
    from burr.core.action import default

    for transition in app.graph.transitions:
        if transition.from_.name == action_name:
            return str(transition.to.name) if transition.condition is default else None
    return semconv.SUCCESSOR_END


def _user_state(state: Any) -> dict[str, Any]:
    """The state without Burr's internal ``__`` keys (sequence id, prior step)."""
    return {key: value for key, value in state.get_all().items() if not key.startswith("__")}


def _second(result: Any) -> Any:
    return result[1] if isinstance(result, tuple) and len(result) == 2 else None
