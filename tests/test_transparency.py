"""Instrumentation changes nothing the application can see.

Each scenario is a realistic flow run twice, once on the bare engine and once
instrumented; return value, shared store, routing, exec calls, retry counters,
warnings and exceptions must be the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pocketflow
import pytest

Trail = list[str]
Scenario = Callable[[Trail, dict[str, Any]], Any]


@dataclass
class Outcome:
    """Everything the application can observe of one run."""

    result: Any
    shared: dict[str, Any]
    trail: Trail
    warnings: list[tuple[type[Warning], str]]
    error: tuple[type[BaseException], tuple[Any, ...]] | None
    stdout: str


def observe(scenario: Scenario) -> Outcome:
    """Run a scenario with fresh state; every warning is recorded, none is filtered."""
    trail: Trail = []
    shared: dict[str, Any] = {}
    result, error = None, None
    stdout = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(stdout):
        warnings.simplefilter("always")
        try:
            result = scenario(trail, shared)
        except Exception as raised:
            error = (type(raised), raised.args)
    seen = [(warning.category, str(warning.message)) for warning in caught]
    return Outcome(result, shared, trail, seen, error, stdout.getvalue())


class Step(pocketflow.Node):
    """Logs each phase (with the retry counter) to a trail that all copies share."""

    def __init__(self, trail: Trail, label: str, **options: Any) -> None:
        super().__init__(**options)
        self.trail, self.label = trail, label

    def prep(self, shared: dict[str, Any]) -> dict[str, Any]:
        self.trail.append(f"{self.label}.prep")
        return shared

    def exec(self, shared: dict[str, Any]) -> Any:
        self.trail.append(f"{self.label}.exec#{self.cur_retry}")

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
        self.trail.append(f"{self.label}.post={exec_res!r}")
        return exec_res


class Route(Step):
    """A step whose exec result is the given action."""

    def __init__(self, trail: Trail, label: str, action: Any) -> None:
        super().__init__(trail, label)
        self.action = action

    def exec(self, shared: dict[str, Any]) -> Any:
        super().exec(shared)
        return self.action


# --- Scenarios ----------------------------------------------------------------------------


def support_chat(trail: Trail, shared: dict[str, Any]) -> Any:
    """Branching on actions, with a loop back for a clarifying question."""

    class Understand(Step):
        def exec(self, shared: dict[str, Any]) -> str:
            super().exec(shared)
            shared["turns"] = shared.get("turns", 0) + 1
            return "clarify" if shared["turns"] < 2 else "refund"

    class Answer(Step):
        def exec(self, shared: dict[str, Any]) -> str:
            super().exec(shared)
            shared.setdefault("said", []).append(self.label)
            return "listen"

    understand = Understand(trail, "understand")
    clarify = Answer(trail, "clarify")
    understand - "clarify" >> clarify
    clarify - "listen" >> understand
    understand - "refund" >> Answer(trail, "refund")
    return pocketflow.Flow(start=understand).run(shared)


class Flaky(Step):
    """Fails the first ``failures`` attempts of each run; falls back when ``fallback`` is set."""

    def __init__(
        self, trail: Trail, label: str, failures: int, fallback: Any = None, **options: Any
    ) -> None:
        super().__init__(trail, label, **options)
        self.failures, self.fallback = failures, fallback

    def exec(self, shared: dict[str, Any]) -> None:
        super().exec(shared)
        if self.cur_retry < self.failures:
            raise ConnectionError(f"{self.label} refused attempt {self.cur_retry + 1}")

    def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
        self.trail.append(f"{self.label}.fallback({exc})")
        if self.fallback is None:
            raise exc
        return self.fallback


def retries_then_success(trail: Trail, shared: dict[str, Any]) -> Any:
    fetch = Flaky(trail, "fetch", failures=2, max_retries=3)
    fetch >> Step(trail, "store")
    return pocketflow.Flow(start=fetch).run(shared)


def fallback_rescues(trail: Trail, shared: dict[str, Any]) -> Any:
    fetch = Flaky(trail, "fetch", failures=9, fallback="cached", max_retries=2)
    fetch - "cached" >> Step(trail, "warn-stale")
    return pocketflow.Flow(start=fetch).run(shared)


def retries_exhausted(trail: Trail, shared: dict[str, Any]) -> Any:
    fetch = Flaky(trail, "fetch", failures=9, max_retries=3)
    fetch >> Step(trail, "never")
    return pocketflow.Flow(start=fetch).run(shared)


def batch_with_flaky_items(trail: Trail, shared: dict[str, Any]) -> Any:
    class Translate(pocketflow.BatchNode):
        def prep(self, shared: dict[str, Any]) -> list[str]:
            return ["hola", "ciao", "salut"]

        def exec(self, word: str) -> str:
            trail.append(f"translate {word}#{self.cur_retry}")
            if word == "ciao" and self.cur_retry == 0:
                raise TimeoutError("translator busy")
            return word.upper()

        def post(self, shared: dict[str, Any], words: list[str], out: list[str]) -> str:
            shared["translated"] = out
            return "done"

    return pocketflow.Flow(start=Translate(max_retries=2)).run(shared)


def batch_flow_per_document(trail: Trail, shared: dict[str, Any]) -> Any:
    class Index(Step):
        def exec(self, shared: dict[str, Any]) -> None:
            super().exec(shared)
            shared.setdefault("indexed", []).append(dict(self.params))

    class Documents(pocketflow.BatchFlow):
        def prep(self, shared: dict[str, Any]) -> list[dict[str, Any]]:
            return [{"doc": "a.md"}, {"doc": "b.md", "lang": "de"}]

    flow = Documents(start=Index(trail, "index"))
    flow.set_params({"lang": "en"})
    return flow.run(shared)


def nested_flows(trail: Trail, shared: dict[str, Any]) -> Any:
    """The inner flow's last action routes the outer flow."""
    inner = pocketflow.Flow(start=pocketflow.Flow(start=Route(trail, "decide", "escalate")))
    inner - "escalate" >> Step(trail, "page")
    return pocketflow.Flow(start=inner).run(shared)


def async_parallel_research(trail: Trail, shared: dict[str, Any]) -> Any:
    class Search(pocketflow.AsyncParallelBatchNode):
        async def prep_async(self, shared: dict[str, Any]) -> list[str]:
            return ["papers", "wiki", "news"]

        async def exec_async(self, source: str) -> str:
            for turn in range(len(source)):
                trail.append(f"{self.params['topic']}/{source} turn {turn}")
                await asyncio.sleep(0)
            if source == "wiki" and "wiki" not in shared.setdefault("failed", []):
                shared["failed"].append(source)
                raise TimeoutError("wiki slow")
            return source

        async def post_async(self, shared: dict[str, Any], prep_res: Any, found: list[str]):
            shared.setdefault("found", []).append(found)

    class Topics(pocketflow.AsyncParallelBatchFlow):
        async def prep_async(self, shared: dict[str, Any]) -> list[dict[str, str]]:
            return [{"topic": "sky"}, {"topic": "sea"}]

    return asyncio.run(Topics(start=Search(max_retries=2)).run_async(shared))


def error_in_post_of_nested_node(trail: Trail, shared: dict[str, Any]) -> Any:
    class Save(Step):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
            super().post(shared, prep_res, exec_res)
            raise PermissionError(13, "read-only store")

    save = Save(trail, "save")
    save >> Step(trail, "never")
    return pocketflow.Flow(start=pocketflow.Flow(start=save)).run(shared)


def action_not_found(trail: Trail, shared: dict[str, Any]) -> Any:
    route = Route(trail, "route", "unknown-intent")
    route - "faq" >> Step(trail, "faq")
    return pocketflow.Flow(start=route).run(shared)


def node_with_successors_run_alone(trail: Trail, shared: dict[str, Any]) -> Any:
    single = Step(trail, "single")
    single >> Step(trail, "ignored")
    return single.run(shared)


def async_node_with_successors_run_alone(trail: Trail, shared: dict[str, Any]) -> Any:
    class Ping(pocketflow.AsyncNode):
        async def exec_async(self, prep_res: None) -> str:
            trail.append("ping")
            return "pong"

    ping = Ping()
    ping >> Ping()
    return asyncio.run(ping.run_async(shared))


def async_node_in_sync_flow(trail: Trail, shared: dict[str, Any]) -> Any:
    return pocketflow.Flow(start=pocketflow.AsyncNode()).run(shared)


def unhashable_action(trail: Trail, shared: dict[str, Any]) -> Any:
    route = Route(trail, "route", ["not", "hashable"])
    route >> Step(trail, "next")
    return pocketflow.Flow(start=route).run(shared)


def quit_on_q(trail: Trail, shared: dict[str, Any]) -> Any:
    """The usual chat loop: "q" calls ``sys.exit(0)`` from a node; the app catches it."""

    class Prompt(Step):
        def exec(self, shared: dict[str, Any]) -> str:
            super().exec(shared)
            answer = shared.setdefault("inputs", ["hello", "weather?", "q"]).pop(0)
            if answer == "q":
                print("bye")
                sys.exit(0)
            print(f"you said {answer}")
            return "again"

    prompt = Prompt(trail, "prompt")
    prompt - "again" >> prompt
    try:
        pocketflow.Flow(start=prompt).run(shared)
    except SystemExit as exit_:
        return ("exit", exit_.code)
    return None


def interrupted(trail: Trail, shared: dict[str, Any]) -> Any:
    """Ctrl-C in a node: the same KeyboardInterrupt reaches the app, no retry is made."""

    class Wait(Step):
        def exec(self, shared: dict[str, Any]) -> None:
            super().exec(shared)
            raise KeyboardInterrupt

    try:
        pocketflow.Flow(start=Wait(trail, "wait", max_retries=3)).run(shared)
    except KeyboardInterrupt as interrupt:
        return ("interrupted", interrupt.args)
    return None


SCENARIOS = [
    support_chat,
    retries_then_success,
    fallback_rescues,
    retries_exhausted,
    batch_with_flaky_items,
    batch_flow_per_document,
    nested_flows,
    async_parallel_research,
    error_in_post_of_nested_node,
    action_not_found,
    node_with_successors_run_alone,
    async_node_with_successors_run_alone,
    async_node_in_sync_flow,
    unhashable_action,
    quit_on_q,
    interrupted,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
def test_an_instrumented_run_is_indistinguishable_from_a_bare_one(make_telemetry, scenario):
    bare = observe(scenario)
    telemetry = make_telemetry()
    traced = observe(scenario)

    assert traced == bare
    assert telemetry.spans(), "the instrumented run produced no spans"


def test_the_scenarios_cover_what_they_claim():
    """The bare outcomes themselves, so a scenario cannot silently stop exercising its case."""
    assert observe(support_chat).shared == {"turns": 2, "said": ["clarify", "refund"]}
    assert observe(retries_then_success).trail[1:5] == [
        "fetch.exec#0",
        "fetch.exec#1",
        "fetch.exec#2",
        "fetch.post=None",
    ]
    assert "fetch.post='cached'" in observe(fallback_rescues).trail
    assert observe(retries_exhausted).error == (ConnectionError, ("fetch refused attempt 3",))
    assert observe(batch_with_flaky_items).trail == [
        "translate hola#0",
        "translate ciao#0",
        "translate ciao#1",
        "translate salut#0",
    ]
    assert observe(batch_flow_per_document).shared["indexed"] == [
        {"lang": "en", "doc": "a.md"},
        {"lang": "de", "doc": "b.md"},
    ]
    assert observe(nested_flows).trail[-1] == "page.post=None"
    research = observe(async_parallel_research)
    assert research.shared["failed"] == ["wiki"]
    assert research.trail[:3] == ["sky/papers turn 0", "sky/wiki turn 0", "sky/news turn 0"]
    assert observe(error_in_post_of_nested_node).error == (PermissionError, (13, "read-only store"))
    assert observe(action_not_found).warnings == [
        (UserWarning, "Flow ends: 'unknown-intent' not found in ['faq']")
    ]
    assert observe(node_with_successors_run_alone).warnings == [
        (UserWarning, "Node won't run successors. Use Flow.")
    ]
    assert observe(async_node_with_successors_run_alone).warnings == [
        (UserWarning, "Node won't run successors. Use AsyncFlow.")
    ]
    assert observe(async_node_in_sync_flow).error == (RuntimeError, ("Use run_async.",))
    assert observe(unhashable_action).error == (TypeError, ("unhashable type: 'list'",))
    quit = observe(quit_on_q)
    assert (quit.result, quit.stdout) == (("exit", 0), "you said hello\nyou said weather?\nbye\n")
    assert observe(interrupted).result == ("interrupted", ())
    assert observe(interrupted).trail == ["wait.prep", "wait.exec#0"]


# --- Waiting between retries --------------------------------------------------------------


def retries_with_wait(trail: Trail, shared: dict[str, Any]) -> Any:
    return pocketflow.Flow(start=Flaky(trail, "fetch", failures=2, max_retries=4, wait=2)).run(
        shared
    )


def async_retries_with_wait(trail: Trail, shared: dict[str, Any]) -> Any:
    class AsyncFlaky(pocketflow.AsyncNode):
        async def exec_async(self, prep_res: None) -> str:
            trail.append("attempt")
            if trail.count("attempt") < 3:
                raise ConnectionError("refused")
            return "ok"

    node = AsyncFlaky(max_retries=4, wait=3)
    return asyncio.run(pocketflow.AsyncFlow(start=node).run_async(shared))


@pytest.mark.parametrize(
    ("scenario", "sleeps"),
    [
        (retries_with_wait, ["sleep 2", "sleep 2"]),
        (async_retries_with_wait, ["sleep 3", "sleep 3"]),
    ],
)
def test_retries_wait_exactly_as_the_engine_does(monkeypatch, make_telemetry, scenario, sleeps):
    """Each sleep is logged to the trail instead of slept, so its place in the run shows."""
    trails: list[Trail] = []

    def logged_sleep(seconds: float) -> None:
        trails[-1].append(f"sleep {seconds}")

    async def logged_async_sleep(seconds: float) -> None:
        logged_sleep(seconds)

    def with_sleep_log(trail: Trail, shared: dict[str, Any]) -> Any:
        trails.append(trail)
        return scenario(trail, shared)

    monkeypatch.setattr(time, "sleep", logged_sleep)
    monkeypatch.setattr(asyncio, "sleep", logged_async_sleep)
    bare = observe(with_sleep_log)
    make_telemetry()
    traced = observe(with_sleep_log)

    assert traced == bare
    assert [entry for entry in bare.trail if entry.startswith("sleep")] == sleeps


class Freed(pocketflow.Node):
    """A node that says when the engine's copy of it is freed."""

    freed = 0

    def __del__(self) -> None:
        type(self).freed += 1


@pytest.mark.parametrize("sampled", [True, False], ids=["sampled", "unsampled"])
def test_the_engines_node_copies_are_freed_when_they_end_not_by_the_garbage_collector(
    make_telemetry, sampled
):
    """No reference cycle per run: with the cyclic collector off, every copy PocketFlow
    made of a node is freed as the run ends, as it is without instrumentation."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    make_telemetry(sampler=ALWAYS_ON if sampled else ALWAYS_OFF)
    first = Freed()
    first >> Freed() >> Freed()
    flow = pocketflow.Flow(start=first)
    gc.collect()
    gc.disable()
    try:
        Freed.freed = 0
        for _ in range(5):
            flow.run({})
        freed = Freed.freed
    finally:
        gc.enable()
    assert freed == 15  # 5 runs of 3 copies
