"""Span names, parents and attributes of the async PocketFlow classes, parallel ones included."""

from __future__ import annotations

import asyncio
from typing import Any

import pocketflow
from opentelemetry.sdk.trace import ReadableSpan
from support.spans import outline, phase_durations, stable_attributes

ENGINE = {"reasonflow.engine": "pocketflow"}


def run(flow: pocketflow.AsyncFlow, shared: dict[str, Any]) -> Any:
    return asyncio.run(flow.run_async(shared))


async def yield_turns(turns: int) -> None:
    """Give the event loop ``turns`` turns: a deterministic interleaving, no clock."""
    for _ in range(turns):
        await asyncio.sleep(0)


# --- A research flow: plan (async), search the sources in parallel, write ---------------


class Plan(pocketflow.AsyncNode):
    async def prep_async(self, shared: dict[str, Any]) -> str:
        return shared["question"]

    async def exec_async(self, question: str) -> list[str]:
        await yield_turns(1)
        return ["wiki", "news", "papers"]

    async def post_async(self, shared: dict[str, Any], question: str, sources: list[str]) -> str:
        shared["sources"] = sources
        return "search"


class SearchSources(pocketflow.AsyncParallelBatchNode):
    """Each source takes a different number of loop turns, so items overlap."""

    async def prep_async(self, shared: dict[str, Any]) -> list[str]:
        return shared["sources"]

    async def exec_async(self, source: str) -> str:
        await yield_turns(len(source))
        return f"notes from {source}"

    async def post_async(self, shared: dict[str, Any], sources: list[str], notes: list[str]):
        shared["notes"] = notes


class Write(pocketflow.Node):
    """A synchronous node inside an async flow."""

    def prep(self, shared: dict[str, Any]) -> list[str]:
        return shared["notes"]

    def exec(self, notes: list[str]) -> str:
        return "; ".join(notes)

    def post(self, shared: dict[str, Any], notes: list[str], answer: str) -> None:
        shared["answer"] = answer


class Research(pocketflow.AsyncFlow):
    pass


def research_flow() -> Research:
    plan = Plan()
    plan - "search" >> SearchSources() >> Write()
    return Research(start=plan)


def test_async_flow_spans_parent_async_and_sync_nodes(make_telemetry):
    telemetry = make_telemetry(phase_durations=True)
    shared = {"question": "why is the sky blue?"}
    run(research_flow(), shared)

    assert shared["answer"] == "notes from wiki; notes from news; notes from papers"
    assert outline(telemetry) == [
        "invoke_workflow Research",
        "  Plan",
        "  SearchSources",
        "    SearchSources item",
        "    SearchSources item",
        "    SearchSources item",
        "  Write",
    ]
    flow = telemetry.span("invoke_workflow Research")
    assert flow.attributes["reasonflow.node.kind"] == "async_flow"
    assert flow.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert flow.attributes["gen_ai.workflow.name"] == "Research"
    plan = telemetry.span("Plan")
    assert stable_attributes(plan) == {
        **ENGINE,
        "reasonflow.node.name": "Plan",
        "reasonflow.node.class": "Plan",
        "reasonflow.node.kind": "async",
        "reasonflow.node.id": "0",
        "reasonflow.node.max_retries": 1,
        "reasonflow.node.action": "search",
        "reasonflow.node.successor": "SearchSources",
        "reasonflow.node.attempts": 1,
        "reasonflow.node.fallback": False,
    }
    assert list(phase_durations(plan)) == ["prep", "exec", "post"]
    assert telemetry.span("Write").attributes["reasonflow.node.kind"] == "node"


def test_parallel_items_are_children_of_their_node_never_of_a_sibling(telemetry):
    tracer = telemetry.tracer_provider.get_tracer("app")

    class TracedSearch(SearchSources):
        async def exec_async(self, source: str) -> str:
            with tracer.start_as_current_span(f"query {source}"):
                return await super().exec_async(source)

    plan = Plan()
    plan - "search" >> TracedSearch()
    run(Research(start=plan), {"question": "q"})

    node = telemetry.span("TracedSearch")
    assert node.attributes["reasonflow.node.kind"] == "async_parallel_batch"
    assert node.attributes["reasonflow.batch.size"] == 3
    items = telemetry.children(node)
    assert [item.attributes["reasonflow.batch.index"] for item in items] == [0, 1, 2]
    assert_overlapping(items)
    for item, source in zip(items, ["wiki", "news", "papers"], strict=True):
        [query] = telemetry.children(item)
        assert query.name == f"query {source}"


def assert_overlapping(spans: list[ReadableSpan]) -> None:
    """Every span started before the first one ended: they really ran concurrently."""
    first_end = min(span.end_time or 0 for span in spans)
    assert all((span.start_time or 0) < first_end for span in spans)


def test_async_batch_node_runs_items_one_after_another(telemetry):
    class SearchInTurn(pocketflow.AsyncBatchNode):
        async def prep_async(self, shared: dict[str, Any]) -> list[str]:
            return ["wiki", "news"]

        async def exec_async(self, source: str) -> str:
            await yield_turns(2)
            return source

    run(pocketflow.AsyncFlow(start=SearchInTurn()), {})

    node = telemetry.span("SearchInTurn")
    assert node.attributes["reasonflow.node.kind"] == "async_batch"
    assert node.attributes["reasonflow.batch.size"] == 2
    first, second = telemetry.children(node)
    assert first.end_time <= second.start_time
    assert [stable_attributes(item) for item in (first, second)] == [
        {
            **ENGINE,
            "reasonflow.node.name": "SearchInTurn",
            "reasonflow.batch.index": index,
            "reasonflow.node.attempts": 1,
            "reasonflow.node.fallback": False,
        }
        for index in range(2)
    ]


# --- Batch flows over parameter sets ------------------------------------------------------


class Forecast(pocketflow.AsyncNode):
    """Opens an app span naming its city, so the test can see which item ran it."""

    tracer: Any = None

    async def exec_async(self, prep_res: None) -> None:
        with self.tracer.start_as_current_span(f"forecast {self.params['city']}"):
            await yield_turns(len(self.params["city"]))


class AllCities(pocketflow.AsyncParallelBatchFlow):
    async def prep_async(self, shared: dict[str, Any]) -> list[dict[str, str]]:
        return [{"city": city} for city in shared["cities"]]


class CitiesInTurn(pocketflow.AsyncBatchFlow):
    async def prep_async(self, shared: dict[str, Any]) -> list[dict[str, str]]:
        return [{"city": city} for city in shared["cities"]]


def forecast_node(telemetry: Any) -> Forecast:
    node = Forecast()
    node.tracer = telemetry.tracer_provider.get_tracer("app")
    return node


def assert_one_item_per_city(telemetry: Any, flow_name: str, cities: list[str]) -> None:
    """Flow > one item per city (with its params) > Forecast > that city's app span."""
    flow = telemetry.span(f"invoke_workflow {flow_name}")
    items = telemetry.children(flow)
    assert [stable_attributes(item) for item in items] == [
        {
            **ENGINE,
            "reasonflow.node.name": flow_name,
            "gen_ai.workflow.name": flow_name,
            "reasonflow.batch.index": index,
            "reasonflow.params.city": city,
        }
        for index, city in enumerate(cities)
    ]
    for item, city in zip(items, cities, strict=True):
        [node] = telemetry.children(item)
        assert node.name == "Forecast"
        [forecast] = telemetry.children(node)
        assert forecast.name == f"forecast {city}"


def test_async_parallel_batch_flow_items_are_children_of_the_flow(telemetry):
    cities = ["Oslo", "Lima", "Reykjavik"]
    run(AllCities(start=forecast_node(telemetry)), {"cities": cities})

    flow = telemetry.span("invoke_workflow AllCities")
    assert flow.attributes["reasonflow.node.kind"] == "async_parallel_batch_flow"
    assert_one_item_per_city(telemetry, "AllCities", cities)
    assert_overlapping(telemetry.children(flow))


def test_async_batch_flow_items_run_one_after_another(telemetry):
    cities = ["Oslo", "Lima"]
    run(CitiesInTurn(start=forecast_node(telemetry)), {"cities": cities})

    flow = telemetry.span("invoke_workflow CitiesInTurn")
    assert flow.attributes["reasonflow.node.kind"] == "async_batch_flow"
    assert_one_item_per_city(telemetry, "CitiesInTurn", cities)
    first, second = telemetry.children(flow)
    assert first.end_time <= second.start_time


def test_flows_nest_inside_an_async_flow(telemetry):
    class Collect(pocketflow.Flow):
        pass

    class Refine(pocketflow.AsyncFlow):
        pass

    class Fetch(pocketflow.Node):
        pass

    plan = Plan()
    plan - "search" >> Collect(start=Fetch()) >> Refine(start=Refine(start=Plan()))
    run(Research(start=plan), {"question": "q"})

    assert outline(telemetry) == [
        "invoke_workflow Research",
        "  Plan",
        "  invoke_workflow Collect",
        "    Fetch",
        "  invoke_workflow Refine",
        "    invoke_workflow Refine",
        "      Plan",
    ]
    collect = telemetry.span("invoke_workflow Collect")
    assert collect.attributes["reasonflow.node.kind"] == "flow"
    assert collect.attributes["reasonflow.node.successor"] == "Refine"
