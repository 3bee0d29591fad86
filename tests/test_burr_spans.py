"""Span names, parents and attributes of Burr application runs, actions and user spans."""
# ruff: noqa: F401, F811  (pytest fixtures imported from support.burr_apps)

from __future__ import annotations

import asyncio
import contextvars
import gc
import hashlib
import json
import threading

import burr.core.application
import pytest
from burr.core import ApplicationBuilder, State, action
from burr.tracking.client import LocalTrackingClient
from burr.visibility import trace
from opentelemetry.trace import StatusCode
from support.burr_apps import (
    ENGINE,
    Flaky,
    async_streamer,
    burr_telemetry,
    count,
    counter,
    make_burr_telemetry,
    streamer,
)
from support.spans import events, outline, stable_attributes

from reasonflow_otel import semconv
from reasonflow_otel.instrumentation.burr import BurrInstrumentor

COUNTER_GRAPH = {
    "nodes": [
        {"id": "0", "name": "count", "class": "FunctionBasedAction"},
        {"id": "1", "name": "check", "class": "FunctionBasedAction"},
        {"id": "2", "name": "done", "class": "FunctionBasedAction"},
    ],
    "edges": [
        {"source": "0", "target": "0", "action": "n < 2"},
        {"source": "0", "target": "1", "action": "default"},
        {"source": "1", "target": "2", "action": "default"},
    ],
}
COUNTER_RUN = ["invoke_workflow count", "  count", "  count", "  check", "  done"]


def app_attributes(app_id: str, name: str = "count") -> dict:
    return {
        **ENGINE,
        "reasonflow.node.name": name,
        "reasonflow.node.class": "Application",
        "reasonflow.node.kind": "application",
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": name,
        "reasonflow.app.id": app_id,
    }


def test_a_run_is_one_span_with_a_child_per_action_and_the_graph(burr_telemetry):
    app = counter(app_id="app-1")
    action_, _, state = app.run(halt_after=["done"])
    assert (action_.name, state["done"]) == ("done", True)
    assert outline(burr_telemetry) == COUNTER_RUN
    run = burr_telemetry.span("invoke_workflow count")
    attributes = stable_attributes(run)
    assert json.loads(attributes.pop("reasonflow.flow.graph")) == COUNTER_GRAPH
    assert attributes == app_attributes("app-1")
    assert run.status.status_code is StatusCode.UNSET
    first, second, check, done = burr_telemetry.children(run)
    assert stable_attributes(first) == {
        **ENGINE,
        "reasonflow.node.name": "count",
        "reasonflow.node.class": "FunctionBasedAction",
        "reasonflow.node.kind": "action",
        "reasonflow.node.id": "0",
        "reasonflow.node.sequence_id": 0,
        "reasonflow.node.reads": ("n",),
        "reasonflow.node.writes": ("n",),
        "reasonflow.node.successor": "count",
    }
    assert [span.attributes["reasonflow.node.sequence_id"] for span in (second, check, done)] == [
        1,
        2,
        3,
    ]
    assert [span.attributes["reasonflow.node.successor"] for span in (second, check, done)] == [
        "check",
        "done",
        "__end__",
    ]
    assert check.attributes["reasonflow.node.reads"] == ("n", "fail")


def test_each_outermost_call_is_one_run_and_steps_resume_the_sequence(burr_telemetry):
    app = counter()
    app.step()
    app.run(halt_before=["check"])
    assert outline(burr_telemetry) == [
        "invoke_workflow count",
        "  count",
        "invoke_workflow count",
        "  count",
    ]
    assert [s.attributes.get("reasonflow.node.sequence_id") for s in burr_telemetry.spans()] == [
        0,
        None,
        1,
        None,
    ]


def test_async_runs_and_steps(burr_telemetry):
    async def main():
        app = counter()
        await app.astep()
        return await app.arun(halt_after=["done"])

    _, _, state = asyncio.run(main())
    assert state["done"] is True
    assert outline(burr_telemetry) == [
        "invoke_workflow count",
        "  count",
        "invoke_workflow count",
        "  count",
        "  check",
        "  done",
    ]


def test_a_failing_action_fails_its_span_and_the_run_with_the_same_exception(burr_telemetry):
    app = counter(fail=True)
    with pytest.raises(Flaky) as raised:
        app.run(halt_after=["done"])
    assert outline(burr_telemetry) == ["invoke_workflow count", "  count", "  count", "  check"]
    for name in ("check", "invoke_workflow count"):
        span = burr_telemetry.span(name)
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "Flaky: n=2"
        assert span.attributes["error.type"] == "Flaky"
        assert events(span, "exception")[0]["exception.type"].endswith("Flaky")
    assert "reasonflow.node.successor" not in burr_telemetry.span("check").attributes
    bare = _bare_failure()
    assert (type(raised.value), raised.value.args) == (type(bare), bare.args)


def _bare_failure() -> BaseException:
    with pytest.raises(Flaky) as raised:
        counter(fail=True).run(halt_after=["done"])
    return raised.value


def test_an_async_failure_propagates_the_same_object(burr_telemetry):
    error = Flaky("async")

    @action(reads=[], writes=[])
    async def explode(state: State) -> State:
        raise error

    app = ApplicationBuilder().with_actions(explode=explode).with_state().with_entrypoint("explode")

    async def main():
        await app.build().arun(halt_after=["explode"])

    with pytest.raises(Flaky) as raised:
        asyncio.run(main())
    assert raised.value is error
    assert burr_telemetry.span("explode").attributes["error.type"] == "Flaky"
    assert burr_telemetry.span("invoke_workflow explode").status.status_code is StatusCode.ERROR


def test_iterate_is_one_run_over_the_whole_iteration(burr_telemetry):
    app = counter()
    seen = []
    for action_, _, _ in app.iterate(halt_after=["done"]):
        seen.append(action_.name)
        assert "invoke_workflow count" not in [span.name for span in burr_telemetry.spans()]
    assert seen == ["count", "count", "check", "done"]
    assert outline(burr_telemetry) == COUNTER_RUN
    run = burr_telemetry.span("invoke_workflow count")
    assert all(child.end_time <= run.end_time for child in burr_telemetry.children(run))


def test_iterate_left_early_ends_its_run_when_closed_or_collected(burr_telemetry):
    app = counter()
    iteration = app.iterate(halt_after=["done"])
    next(iteration)
    assert [span.name for span in burr_telemetry.spans()] == ["count"]
    del iteration
    gc.collect()
    assert outline(burr_telemetry) == ["invoke_workflow count", "  count"]
    assert burr_telemetry.span("invoke_workflow count").status.status_code is StatusCode.UNSET


def test_aiterate_is_one_run_over_the_whole_iteration(burr_telemetry):
    async def main():
        app = counter()
        return [action_.name async for action_, _, _ in app.aiterate(halt_after=["done"])]

    assert asyncio.run(main()) == ["count", "count", "check", "done"]
    assert outline(burr_telemetry) == COUNTER_RUN


def test_a_streamed_action_ends_with_its_last_item(burr_telemetry):
    app = streamer()
    action_, container = app.stream_result(halt_after=["speak"])
    assert action_.name == "speak"
    assert burr_telemetry.spans() == []
    words = [item["word"] for item in container]
    _, state = container.get()
    assert (words, state["words"]) == (["one", "two", "three"], ["one", "two", "three"])
    assert outline(burr_telemetry) == ["invoke_workflow speak", "  speak"]
    speak = burr_telemetry.span("speak")
    assert speak.attributes["reasonflow.node.kind"] == "streaming_action"
    assert speak.attributes["reasonflow.node.successor"] == "shout"
    assert events(speak, semconv.EVENT_STATE_CHANGED) == [{semconv.STATE_CHANGED_COUNT: 1}]


def test_a_stream_left_early_ends_its_spans_without_error(burr_telemetry):
    app = streamer()
    _, container = app.stream_result(halt_after=["speak"])
    for item in container:
        assert item == {"word": "one"}
        break
    gc.collect()
    assert outline(burr_telemetry) == ["invoke_workflow speak", "  speak"]
    assert all(s.status.status_code is StatusCode.UNSET for s in burr_telemetry.spans())


def test_an_async_stream_ends_with_its_last_item(burr_telemetry):
    async def main():
        app = async_streamer()
        _, container = await app.astream_result(halt_after=["speak"])
        words = [item["word"] async for item in container]
        assert [span.name for span in burr_telemetry.spans()] == ["speak", "invoke_workflow speak"]
        await container.get()
        return words

    assert asyncio.run(main()) == ["one", "two", "three"]
    assert outline(burr_telemetry) == ["invoke_workflow speak", "  speak"]


def test_stream_result_fast_forwards_inside_one_run(burr_telemetry):
    app = streamer()
    _, container = app.stream_result(halt_after=["shout"])
    _, state = container.get()
    assert state["shout"] == "ONE TWO THREE"
    assert outline(burr_telemetry) == ["invoke_workflow speak", "  speak", "  shout"]


def test_stream_iterate_is_one_run_over_every_stream(burr_telemetry):
    app = streamer()
    names = []
    for action_, container in app.stream_iterate(halt_after=["shout"]):
        names.append(action_.name)
        list(container)
    assert names == ["speak", "shout"]
    assert outline(burr_telemetry) == ["invoke_workflow speak", "  speak", "  shout"]


def test_astream_iterate_is_one_run_over_every_stream(burr_telemetry):
    async def main():
        app = async_streamer()
        names = []
        async for action_, container in app.astream_iterate(halt_after=["shout"]):
            names.append(action_.name)
            await container.get()
        return names

    assert asyncio.run(main()) == ["speak", "shout"]
    assert outline(burr_telemetry) == ["invoke_workflow speak", "  speak", "  shout"]


def test_tracer_and_trace_spans_are_children_of_the_action(burr_telemetry):
    @trace()
    def helper(x: int) -> int:
        return x * 2

    @action(reads=[], writes=["y"])
    def traced(state: State, __tracer) -> State:
        with __tracer("outer"), __tracer("inner"):
            y = helper(2)
        try:
            with __tracer("broken"):
                raise KeyError("k")
        except KeyError:
            pass
        return state.update(y=y)

    app = ApplicationBuilder().with_actions(traced=traced).with_state().with_entrypoint("traced")
    assert app.build().run(halt_after=["traced"])[2]["y"] == 4
    assert outline(burr_telemetry) == [
        "invoke_workflow traced",
        "  traced",
        "    outer",
        "      inner",
        "        helper",
        "    broken",
    ]
    assert stable_attributes(burr_telemetry.span("inner")) == ENGINE
    broken = burr_telemetry.span("broken")
    assert broken.status.status_code is StatusCode.ERROR
    assert broken.attributes["error.type"] == "KeyError"


def test_async_tracer_spans_are_children_of_the_action(burr_telemetry):
    @action(reads=[], writes=["y"])
    async def traced(state: State, __tracer) -> State:
        async with __tracer("waiting"):
            await asyncio.sleep(0)
        return state.update(y=1)

    async def main():
        app = ApplicationBuilder().with_actions(traced=traced).with_state()
        await app.with_entrypoint("traced").build().arun(halt_after=["traced"])

    asyncio.run(main())
    assert outline(burr_telemetry) == ["invoke_workflow traced", "  traced", "    waiting"]


def test_state_change_events_count_keys_and_name_them_when_allowed(make_burr_telemetry):
    telemetry = make_burr_telemetry(state_key_names="true")
    counter().run(halt_after=["done"])
    assert events(telemetry.span("check"), semconv.EVENT_STATE_CHANGED) == [
        {semconv.STATE_CHANGED_COUNT: 1, semconv.STATE_CHANGED_KEYS: ("checked",)}
    ]


def test_state_is_captured_only_when_asked_redacted_and_bounded(make_burr_telemetry):
    telemetry = make_burr_telemetry(capture="state", capture_max_length="40")
    app = counter()
    app.update_state(app.state.update(api_key="sk-secret"))
    app.run(halt_after=["check"])
    first = next(s for s in telemetry.spans() if s.name == "count")
    assert first.attributes[semconv.STATE_AFTER] == (
        '{"n":1,"fail":false,"api_key":"[REDACTED]"}'[:39] + "…"
    )
    run = telemetry.span("invoke_workflow count")
    assert run.attributes[semconv.STATE_BEFORE].startswith('{"n":0,')


def test_no_state_is_captured_by_default(burr_telemetry):
    counter().run(halt_after=["done"])
    for span in burr_telemetry.spans():
        assert not {semconv.STATE_BEFORE, semconv.STATE_AFTER} & set(span.attributes)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("omit", {}),
        ("hash", {semconv.APP_PARTITION_KEY_HASH: hashlib.sha256(b"user-7").hexdigest()}),
        ("raw", {semconv.APP_PARTITION_KEY: "user-7"}),
    ],
)
def test_the_partition_key_is_hashed_by_default_omitted_or_kept(
    make_burr_telemetry, mode, expected
):
    telemetry = make_burr_telemetry(partition_key=mode)
    counter(app_id="a", partition_key="user-7").step()
    run = telemetry.span("invoke_workflow count")
    keys = {semconv.APP_PARTITION_KEY, semconv.APP_PARTITION_KEY_HASH}
    assert {k: v for k, v in run.attributes.items() if k in keys} == expected


def test_the_name_comes_from_the_tracker_project_then_the_setting(make_burr_telemetry, tmp_path):
    telemetry = make_burr_telemetry(burr_application_name="counter_app")
    counter().step()
    tracked = (
        ApplicationBuilder()
        .with_actions(count=count)
        .with_transitions()
        .with_state(n=0)
        .with_entrypoint("count")
        .with_tracker(LocalTrackingClient(project="billing", storage_dir=str(tmp_path)))
        .build()
    )
    tracked.step()
    names = [s.name for s in telemetry.spans() if s.name.startswith("invoke_workflow")]
    assert names == ["invoke_workflow counter_app", "invoke_workflow billing"]


def test_uninstrument_restores_every_method_exactly(make_burr_telemetry):
    application = burr.core.application
    originals = {
        name: application.Application.__dict__[name]
        for name in ("run", "arun", "step", "astep", "iterate", "_step", "_astep", "stream_result")
    }
    streaming = application._run_single_step_streaming_action
    instrumentor = BurrInstrumentor()
    make_burr_telemetry()
    assert application.Application.__dict__["run"] is not originals["run"]
    instrumentor.uninstrument()
    for name, original in originals.items():
        assert application.Application.__dict__[name] is original
    assert application._run_single_step_streaming_action is streaming


def test_results_are_identical_bare_and_instrumented(make_burr_telemetry):
    def outcome():
        action_, result, state = counter().run(halt_after=["done"])
        _, container = streamer().stream_result(halt_after=["shout"])
        return action_.name, result, state.get_all(), container.get()[0]

    bare = outcome()
    make_burr_telemetry()
    assert outcome() == bare


def test_a_streamed_run_records_the_state_the_stream_ended_with(make_burr_telemetry):
    telemetry = make_burr_telemetry(capture="state")
    _, container = streamer("a b").stream_result(halt_after=["speak"])
    container.get()
    expected = '{"text":"a b","words":["a","b"]}'
    assert telemetry.span("speak").attributes[semconv.STATE_AFTER] == expected
    run = telemetry.span("invoke_workflow speak")
    assert run.attributes[semconv.STATE_BEFORE] == '{"text":"a b"}'
    assert run.attributes[semconv.STATE_AFTER] == expected


def test_an_iteration_never_started_leaves_nothing_open(burr_telemetry):
    iteration = counter().iterate(halt_after=["done"])
    del iteration
    gc.collect()
    assert burr_telemetry.spans() == []
    assert burr_telemetry.metric_points(semconv.METRIC_FLOW_DURATION) == []


def test_an_async_iteration_closed_early_ends_its_run_at_once(burr_telemetry):
    async def main():
        iteration = counter().aiterate(halt_after=["done"])
        async for _ in iteration:
            break
        await iteration.aclose()
        return [span.name for span in burr_telemetry.spans()]

    assert asyncio.run(main()) == ["count", "invoke_workflow count"]


def test_a_stream_consumed_in_another_thread_or_task_detaches_nothing_across(
    burr_telemetry, caplog
):
    _, container = streamer().stream_result(halt_after=["speak"])
    # Burr's own bookkeeping needs its context variables in the consuming thread.
    worker = threading.Thread(target=contextvars.copy_context().run, args=(container.get,))
    worker.start()
    worker.join()

    async def main():
        _, stream = await async_streamer().astream_result(halt_after=["speak"])
        await asyncio.create_task(stream.get())

    asyncio.run(main())
    assert outline(burr_telemetry) == ["invoke_workflow speak", "  speak"] * 2
    assert [r.getMessage() for r in caplog.records if "detach" in r.getMessage()] == []
