"""The engine's own code runs: variants of PocketFlow's loops keep working, and are observed.

PocketFlow's repository after release 0.0.3 sets ``self.cur_retry`` in
``AsyncNode._exec`` too; :class:`CurrentAsyncNode` overrides ``_exec`` exactly
like that. A user's batch node that maps items over a thread pool calling
``Node._exec`` keeps its item spans and per-item retry events. Each is also run
bare and instrumented side by side.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pocketflow
import pytest
from opentelemetry.trace import StatusCode
from support.spans import events, outline


class CurrentAsyncNode(pocketflow.AsyncNode):
    """``AsyncNode._exec`` as in PocketFlow's repository after 0.0.3 (it sets ``cur_retry``)."""

    async def _exec(self, prep_res: Any) -> Any:
        for self.cur_retry in range(self.max_retries):  # noqa: B020 (the engine's statement)
            try:
                return await self.exec_async(prep_res)
            except Exception as e:
                if self.cur_retry == self.max_retries - 1:
                    return await self.exec_fallback_async(prep_res, e)
                if self.wait > 0:
                    await asyncio.sleep(self.wait)
        return None


class AskModel(CurrentAsyncNode):
    """Reads ``self.cur_retry`` in ``exec_async``, as PocketFlow's docs tell users they may."""

    async def prep_async(self, shared: dict[str, Any]) -> list[int]:
        return shared.setdefault("retries_seen", [])

    async def exec_async(self, seen: list[int]) -> str:
        seen.append(self.cur_retry)
        if self.cur_retry < 2:
            raise TimeoutError(f"model timed out on try {self.cur_retry}")
        return "answer"

    async def post_async(self, shared: dict[str, Any], seen: list[int], answer: str) -> str:
        shared["answer"] = answer
        return "done"


def ask_model(shared: dict[str, Any]) -> Any:
    return asyncio.run(pocketflow.AsyncFlow(start=AskModel(max_retries=3)).run_async(shared))


class TranslateOnThreads(pocketflow.BatchNode):
    """A user batch node: items on a thread pool, each through the engine's ``Node._exec``."""

    def prep(self, shared: dict[str, Any]) -> list[str]:
        return ["hola", "ciao", "salut"]

    def _exec(self, items: list[str]) -> list[str]:
        with ThreadPoolExecutor(max_workers=3) as pool:
            return list(pool.map(lambda item: pocketflow.Node._exec(self, item), items))

    def exec(self, word: str) -> str:
        tries = self.params.setdefault(word, [])  # per word: cur_retry is shared by the threads
        tries.append(len(tries))
        if word == "ciao" and len(tries) == 1:
            raise ConnectionError("translator busy")
        return word.upper()

    def post(self, shared: dict[str, Any], words: list[str], out: list[str]) -> None:
        shared["translated"] = out
        shared["tries"] = {word: self.params[word] for word in words}


def translate_on_threads(shared: dict[str, Any]) -> Any:
    return TranslateOnThreads(max_retries=2).run(shared)


def side_by_side(make_telemetry: Any, scenario: Any, **settings: Any) -> tuple[Any, Any]:
    bare_shared: dict[str, Any] = {}
    bare = scenario(bare_shared)
    telemetry = make_telemetry(**settings)
    traced_shared: dict[str, Any] = {}
    traced = scenario(traced_shared)
    assert (traced, traced_shared) == (bare, bare_shared)
    return telemetry, traced_shared


def retry_event(attempt: int, error_type: str, message: str) -> dict[str, Any]:
    return {"reasonflow.attempt": attempt, "error.type": error_type, "exception.message": message}


def test_an_async_retry_loop_that_sets_cur_retry_runs_as_the_engine_wrote_it(make_telemetry):
    telemetry, shared = side_by_side(make_telemetry, ask_model, phase_durations=True)

    assert shared == {"retries_seen": [0, 1, 2], "answer": "answer"}
    node = telemetry.span("AskModel")
    assert events(node, "reasonflow.retry") == [
        retry_event(1, "TimeoutError", "model timed out on try 0"),
        retry_event(2, "TimeoutError", "model timed out on try 1"),
    ]
    assert node.attributes["reasonflow.node.attempts"] == 3
    assert node.attributes["reasonflow.node.fallback"] is False
    assert node.status.status_code is StatusCode.UNSET
    assert "reasonflow.node.exec.duration" in node.attributes


def test_a_batch_node_on_a_thread_pool_keeps_item_spans_and_per_item_retries(make_telemetry):
    telemetry, shared = side_by_side(make_telemetry, translate_on_threads)

    assert shared["translated"] == ["HOLA", "CIAO", "SALUT"]
    node = telemetry.span("TranslateOnThreads")
    items = telemetry.children(node)
    assert [item.name for item in items] == ["TranslateOnThreads item"] * 3
    assert sorted(item.attributes["reasonflow.batch.index"] for item in items) == [0, 1, 2]
    assert node.attributes["reasonflow.batch.size"] == 3
    retried = [item for item in items if events(item, "reasonflow.retry")]
    assert len(retried) == 1
    assert events(retried[0], "reasonflow.retry") == [
        retry_event(1, "ConnectionError", "translator busy")
    ]
    assert sorted(item.attributes["reasonflow.node.attempts"] for item in items) == [1, 1, 2]


def test_an_exec_override_handing_on_to_the_engine_is_one_exec_phase_and_one_attempt(
    make_telemetry,
):
    telemetry = make_telemetry(phase_durations=True)

    class Logged(pocketflow.Node):
        def _exec(self, prep_res: Any) -> Any:
            self.params["log"].append("before")
            return super()._exec(prep_res)

    class Careful(Logged):
        def exec(self, prep_res: Any) -> str:
            return "careful"

    class Checked(Careful):
        def exec(self, prep_res: Any) -> str:
            return super().exec(prep_res) + ", checked"

    log: list[str] = []
    node = Checked()
    node.set_params({"log": log})
    assert node.run({}) is None

    span = telemetry.span("Checked")
    assert log == ["before"]
    assert telemetry.children(span) == []
    assert span.attributes["reasonflow.node.attempts"] == 1
    assert events(span, "reasonflow.retry") == []
    assert "reasonflow.node.exec.duration" in span.attributes


def test_a_batch_override_handing_its_items_on_still_has_one_span_per_item(telemetry):
    class Upper(pocketflow.BatchNode):
        def prep(self, shared: dict[str, Any]) -> list[str]:
            return ["a", "b"]

        def _exec(self, items: list[str]) -> list[str]:
            return [result + "!" for result in super()._exec(items)]

        def exec(self, item: str) -> str:
            return item.upper()

        def post(self, shared: dict[str, Any], items: list[str], out: list[str]) -> None:
            shared["out"] = out

    shared: dict[str, Any] = {}
    Upper().run(shared)

    assert shared["out"] == ["A!", "B!"]
    assert outline(telemetry) == ["Upper", "  Upper item", "  Upper item"]
    assert telemetry.span("Upper").attributes["reasonflow.batch.size"] == 2


def test_when_the_fallback_raises_the_last_attempts_error_is_kept_as_an_event(telemetry):
    class Lookup(pocketflow.Node):
        def exec(self, prep_res: Any) -> str:
            raise ConnectionError(f"lookup refused attempt {self.cur_retry + 1}")

        def exec_fallback(self, prep_res: Any, exc: Exception) -> str:
            raise LookupError("no cached answer")

    with pytest.raises(LookupError):
        pocketflow.Flow(start=Lookup(max_retries=2)).run({})

    node = telemetry.span("Lookup")
    assert events(node, "reasonflow.retry") == [
        retry_event(1, "ConnectionError", "lookup refused attempt 1")
    ]
    assert events(node, "reasonflow.fallback_failed") == [
        retry_event(2, "ConnectionError", "lookup refused attempt 2")
    ]
    assert events(node, "reasonflow.fallback") == []
    assert node.attributes["error.type"] == "LookupError"
    assert [point.value for point in telemetry.metric_points("reasonflow.node.fallbacks")] == []


def test_the_engines_default_fallback_reraising_adds_no_second_event(telemetry):
    class Lookup(pocketflow.Node):
        def exec(self, prep_res: Any) -> str:
            raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        pocketflow.Flow(start=Lookup()).run({})

    node = telemetry.span("Lookup")
    assert events(node, "reasonflow.fallback_failed") == []
    assert len(events(node, "exception")) == 1


def test_exec_called_outside_any_run_is_the_original_call(telemetry):
    class Direct(pocketflow.Node):
        def exec(self, prep_res: Any) -> str:
            return f"direct {prep_res}"

    pocketflow.Flow(start=Direct()).run({})  # the class is wrapped from here on
    telemetry.exporter.clear()

    assert Direct()._exec("call") == "direct call"
    assert Direct().exec("call") == "direct call"
    assert telemetry.spans() == []
