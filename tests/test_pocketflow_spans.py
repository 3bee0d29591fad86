"""Span names, parents and attributes of the synchronous PocketFlow classes."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pocketflow
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from support.spans import outline, phase_durations, stable_attributes

ENGINE = {"reasonflow.engine": "pocketflow"}


# --- An editorial flow: draft, review (loops back once), publish -------------------


class Draft(pocketflow.Node):
    def prep(self, shared: dict[str, Any]) -> int:
        return len(shared.setdefault("drafts", []))

    def exec(self, version: int) -> str:
        return f"draft v{version + 1}"

    def post(self, shared: dict[str, Any], prep_res: int, text: str) -> None:
        shared["drafts"].append(text)


class Review(pocketflow.Node):
    def prep(self, shared: dict[str, Any]) -> int:
        return len(shared["drafts"])

    def post(self, shared: dict[str, Any], drafts: int, exec_res: None) -> str:
        return "approve" if drafts >= 2 else "revise"


class Publish(pocketflow.Node):
    def post(self, shared: dict[str, Any], prep_res: None, exec_res: None) -> str:
        shared["published"] = shared["drafts"][-1]
        return "done"


class Editorial(pocketflow.Flow):
    pass


def editorial_flow() -> Editorial:
    draft, review = Draft(), Review()
    draft >> review
    review - "revise" >> draft
    review - "approve" >> Publish()
    return Editorial(start=draft)


EDITORIAL_GRAPH = {
    "nodes": [
        {"id": "0", "name": "Draft", "class": "Draft"},
        {"id": "1", "name": "Review", "class": "Review"},
        {"id": "2", "name": "Publish", "class": "Publish"},
    ],
    "edges": [
        {"source": "0", "target": "1", "action": "default"},
        {"source": "1", "target": "0", "action": "revise"},
        {"source": "1", "target": "2", "action": "approve"},
    ],
}


def node_attributes(name: str, kind: str = "node", **extra: Any) -> dict[str, Any]:
    """What every node span carries, plus the given reasonflow.node.* values."""
    attributes = {
        **ENGINE,
        "reasonflow.node.name": name,
        "reasonflow.node.class": name,
        "reasonflow.node.kind": kind,
    }
    attributes.update({f"reasonflow.node.{key}": value for key, value in extra.items()})
    return attributes


def test_flow_runs_as_one_internal_invoke_workflow_span(make_telemetry):
    telemetry = make_telemetry(phase_durations=True)  # nodes only, never flows
    shared: dict[str, Any] = {}
    assert editorial_flow().run(shared) == "done"

    flow = telemetry.span("invoke_workflow Editorial")
    assert flow.parent is None
    assert flow.kind is SpanKind.INTERNAL
    assert flow.status.status_code is StatusCode.UNSET
    graph = json.loads(flow.attributes["reasonflow.flow.graph"])
    assert graph == EDITORIAL_GRAPH
    assert stable_attributes(flow) == {
        **node_attributes("Editorial", kind="flow", action="done"),
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": "Editorial",
        "reasonflow.flow.graph": flow.attributes["reasonflow.flow.graph"],
    }
    assert phase_durations(flow) == {}


def test_each_node_run_is_a_child_span_in_routing_order(telemetry):
    editorial_flow().run({})

    assert outline(telemetry) == [
        "invoke_workflow Editorial",
        "  Draft",
        "  Review",
        "  Draft",
        "  Review",
        "  Publish",
    ]
    assert all(span.kind is SpanKind.INTERNAL for span in telemetry.spans())


def test_node_span_records_routing_retries_and_phase_durations(make_telemetry):
    telemetry = make_telemetry(phase_durations=True)
    editorial_flow().run({})

    flow = telemetry.span("invoke_workflow Editorial")
    first_review, second_review = (s for s in telemetry.children(flow) if s.name == "Review")
    common = {"id": "1", "max_retries": 1, "attempts": 1, "fallback": False}
    assert stable_attributes(first_review) == node_attributes(
        "Review", action="revise", successor="Draft", **common
    )
    assert stable_attributes(second_review) == node_attributes(
        "Review", action="approve", successor="Publish", **common
    )
    durations = phase_durations(second_review)
    assert list(durations) == ["prep", "exec", "post"]
    assert all(seconds >= 0 for seconds in durations.values())


def test_a_node_ending_the_flow_names_end_as_successor(telemetry):
    editorial_flow().run({})

    publish = telemetry.span("Publish")
    assert publish.attributes["reasonflow.node.action"] == "done"
    assert publish.attributes["reasonflow.node.successor"] == "__end__"
    assert publish.attributes["reasonflow.node.id"] == "2"


def test_node_ids_are_unique_and_stable_across_loops(telemetry):
    editorial_flow().run({})

    ids = {
        (span.name, span.attributes["reasonflow.node.id"])
        for span in telemetry.spans()
        if span.name != "invoke_workflow Editorial"
    }
    assert ids == {("Draft", "0"), ("Review", "1"), ("Publish", "2")}


def test_a_node_run_alone_is_a_root_span_without_flow_attributes(telemetry):
    shared = {"drafts": ["draft v1"]}
    Draft().run(shared)

    draft = telemetry.span("Draft")
    assert draft.parent is None
    assert stable_attributes(draft) == node_attributes(
        "Draft", action="default", max_retries=1, attempts=1, fallback=False
    )


def test_a_name_set_on_the_node_wins_over_the_class_name(telemetry):
    class Classify(pocketflow.Node):
        name = "classify-intent"

    answer = pocketflow.Node()
    answer.name = "answer"
    classify = Classify()
    classify >> answer
    pocketflow.Flow(start=classify).run({})

    assert outline(telemetry) == [
        "invoke_workflow Flow(classify-intent)",
        "  classify-intent",
        "  answer",
    ]
    classify_span = telemetry.span("classify-intent")
    assert classify_span.attributes["reasonflow.node.name"] == "classify-intent"
    assert classify_span.attributes["reasonflow.node.class"] == "Classify"
    assert classify_span.attributes["reasonflow.node.successor"] == "answer"
    assert telemetry.span("answer").attributes["reasonflow.node.class"] == "Node"
    graph = json.loads(
        telemetry.span("invoke_workflow Flow(classify-intent)").attributes["reasonflow.flow.graph"]
    )
    assert [node["name"] for node in graph["nodes"]] == ["classify-intent", "answer"]


def test_flow_graph_is_cut_by_whole_nodes_to_the_configured_length(make_telemetry):
    full_length = len(json.dumps(EDITORIAL_GRAPH, separators=(",", ":")))
    telemetry = make_telemetry(graph_max_length=full_length - 1)
    editorial_flow().run({})

    text = telemetry.span("invoke_workflow Editorial").attributes["reasonflow.flow.graph"]
    assert len(text) <= full_length - 1
    assert json.loads(text) == {
        "nodes": [{"id": "0", "name": "Draft", "class": "Draft"}],
        "edges": [],
        "truncated": True,
        "node_count": 3,
    }


def test_flow_graph_is_left_out_when_not_even_an_empty_graph_fits(make_telemetry):
    telemetry = make_telemetry(graph_max_length=10)
    editorial_flow().run({})

    assert "reasonflow.flow.graph" not in telemetry.span("invoke_workflow Editorial").attributes


# --- Batches ---------------------------------------------------------------------------


class SummarizeChunks(pocketflow.BatchNode):
    def prep(self, shared: dict[str, Any]) -> list[str]:
        return shared["chunks"]

    def exec(self, chunk: str) -> str:
        return chunk.upper()

    def post(self, shared: dict[str, Any], prep_res: list[str], summaries: list[str]) -> None:
        shared["summaries"] = summaries


def test_batch_node_has_one_child_span_per_item(telemetry):
    shared = {"chunks": ["alpha", "beta", "gamma"]}
    pocketflow.Flow(start=SummarizeChunks()).run(shared)

    assert shared["summaries"] == ["ALPHA", "BETA", "GAMMA"]
    assert outline(telemetry) == [
        "invoke_workflow Flow(SummarizeChunks)",
        "  SummarizeChunks",
        "    SummarizeChunks item",
        "    SummarizeChunks item",
        "    SummarizeChunks item",
    ]
    node = telemetry.span("SummarizeChunks")
    assert stable_attributes(node) == node_attributes(
        "SummarizeChunks",
        kind="batch",
        id="0",
        max_retries=1,
        action="default",
        successor="__end__",
    ) | {"reasonflow.batch.size": 3}
    items = telemetry.children(node)
    assert [stable_attributes(item) for item in items] == [
        {
            **ENGINE,
            "reasonflow.node.name": "SummarizeChunks",
            "reasonflow.batch.index": index,
            "reasonflow.node.attempts": 1,
            "reasonflow.node.fallback": False,
        }
        for index in range(3)
    ]


def test_batch_node_without_items_has_size_zero_and_no_item_spans(telemetry):
    shared: dict[str, Any] = {"chunks": []}
    pocketflow.Flow(start=SummarizeChunks()).run(shared)

    node = telemetry.span("SummarizeChunks")
    assert node.attributes["reasonflow.batch.size"] == 0
    assert telemetry.children(node) == []


class IndexFile(pocketflow.Node):
    def post(self, shared: dict[str, Any], prep_res: None, exec_res: None) -> None:
        shared.setdefault("indexed", []).append((self.params["tenant"], self.params["file"]))


class IndexFiles(pocketflow.BatchFlow):
    def prep(self, shared: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"file": name, "pages": pages} for name, pages in shared["files"].items()]


def test_batch_flow_has_one_child_span_per_parameter_set(telemetry):
    flow = IndexFiles(start=IndexFile())
    flow.set_params({"tenant": "acme"})
    shared: dict[str, Any] = {"files": {"a.pdf": 3, "b.pdf": 12}}
    flow.run(shared)

    assert shared["indexed"] == [("acme", "a.pdf"), ("acme", "b.pdf")]
    assert outline(telemetry) == [
        "invoke_workflow IndexFiles",
        "  IndexFiles item",
        "    IndexFile",
        "  IndexFiles item",
        "    IndexFile",
    ]
    flow_span = telemetry.span("invoke_workflow IndexFiles")
    assert flow_span.attributes["reasonflow.node.kind"] == "batch_flow"
    assert [stable_attributes(item) for item in telemetry.children(flow_span)] == [
        {
            **ENGINE,
            "reasonflow.node.name": "IndexFiles",
            "gen_ai.workflow.name": "IndexFiles",
            "reasonflow.batch.index": index,
            "reasonflow.params.tenant": "acme",
            "reasonflow.params.file": name,
            "reasonflow.params.pages": pages,
        }
        for index, (name, pages) in enumerate([("a.pdf", 3), ("b.pdf", 12)])
    ]
    for item in telemetry.children(flow_span):
        [node] = telemetry.children(item)
        assert node.attributes["reasonflow.node.id"] == "0"
        assert node.attributes["reasonflow.node.successor"] == "__end__"


# --- Nesting ----------------------------------------------------------------------------


class Fetch(pocketflow.Node):
    def post(self, shared: dict[str, Any], prep_res: None, exec_res: None) -> str:
        return "fetched"


class Extract(pocketflow.Node):
    pass


class Store(pocketflow.Node):
    pass


class Outer(pocketflow.Flow):
    pass


class Middle(pocketflow.Flow):
    pass


class Inner(pocketflow.Flow):
    pass


def test_flows_nested_three_levels_deep_nest_their_spans(telemetry):
    extract = Extract()
    inner = Inner(start=extract)
    middle = Middle(start=inner)
    fetch = Fetch()
    fetch - "fetched" >> middle >> Store()
    Outer(start=fetch).run({})

    assert outline(telemetry) == [
        "invoke_workflow Outer",
        "  Fetch",
        "  invoke_workflow Middle",
        "    invoke_workflow Inner",
        "      Extract",
        "  Store",
    ]
    middle_span = telemetry.span("invoke_workflow Middle")
    assert stable_attributes(middle_span) == {
        **node_attributes("Middle", kind="flow", id="1", action="default", successor="Store"),
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": "Middle",
        "reasonflow.flow.graph": '{"nodes":[{"id":"0","name":"Inner","class":"Inner"}],"edges":[]}',
    }
    inner_span = telemetry.span("invoke_workflow Inner")
    assert inner_span.attributes["reasonflow.node.id"] == "0"
    assert inner_span.attributes["reasonflow.node.successor"] == "__end__"
    assert telemetry.span("Extract").attributes["reasonflow.node.id"] == "0"


# --- Phase spans ----------------------------------------------------------------------


def test_phase_spans_are_off_by_default(telemetry):
    pocketflow.Flow(start=Draft()).run({})

    assert outline(telemetry) == ["invoke_workflow Flow(Draft)", "  Draft"]


def test_phase_spans_are_children_of_the_node_span_when_enabled(make_telemetry):
    telemetry = make_telemetry(phase_spans=True)
    pocketflow.Flow(start=Draft()).run({})

    assert outline(telemetry) == [
        "invoke_workflow Flow(Draft)",
        "  Draft",
        "    prep",
        "    exec",
        "    post",
    ]
    draft = telemetry.span("Draft")
    prep, exec_, post = telemetry.children(draft)
    assert prep.attributes == {**ENGINE, "reasonflow.node.name": "Draft"}
    assert draft.start_time <= prep.start_time <= prep.end_time <= exec_.start_time
    assert exec_.end_time <= post.start_time <= post.end_time <= draft.end_time


# --- Phase durations (opt-in) --------------------------------------------------------


PAUSES = {"prep": 0.002, "exec": 0.010, "post": 0.005}


class Timed(pocketflow.Node):
    """Each phase pauses for its own time and notes how long its body took."""

    def pause(self, shared: dict[str, Any], phase: str) -> None:
        started = time.perf_counter()
        time.sleep(PAUSES[phase])
        shared[phase] = time.perf_counter() - started

    def prep(self, shared: dict[str, Any]) -> dict[str, Any]:
        self.pause(shared, "prep")
        return shared

    def exec(self, shared: dict[str, Any]) -> None:
        self.pause(shared, "exec")

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: None) -> None:
        self.pause(shared, "post")


def run_timed() -> dict[str, float]:
    """Each phase body's time, and the whole flow run's as seen from outside (``run``)."""
    shared: dict[str, float] = {}
    started = time.perf_counter()
    pocketflow.Flow(start=Timed()).run(shared)
    shared["run"] = time.perf_counter() - started
    return shared


def test_phase_durations_are_off_by_default(telemetry):
    run_timed()

    timed = telemetry.span("Timed")
    assert phase_durations(timed) == {}
    assert stable_attributes(timed) == node_attributes(
        "Timed",
        id="0",
        max_retries=1,
        action="default",
        successor="__end__",
        attempts=1,
        fallback=False,
    )


def test_phase_spans_alone_add_no_phase_durations(make_telemetry):
    telemetry = make_telemetry(phase_spans=True)
    run_timed()

    timed = telemetry.span("Timed")
    assert [span.name for span in telemetry.children(timed)] == ["prep", "exec", "post"]
    assert phase_durations(timed) == {}


@pytest.mark.parametrize("phase_spans", [False, True])
def test_phase_durations_cover_each_phase_in_order_when_enabled(make_telemetry, phase_spans):
    telemetry = make_telemetry(phase_durations=True, phase_spans=phase_spans)
    measured = run_timed()

    durations = phase_durations(telemetry.span("Timed"))
    assert list(durations) == ["prep", "exec", "post"]
    # Each phase runs from the previous boundary to the next: it holds its whole body,
    # and the three together are the node run, inside the flow run seen from outside.
    assert [phase for phase in durations if durations[phase] < measured[phase]] == []
    assert sum(durations.values()) <= measured["run"]


# --- Threads started inside a node -----------------------------------------------------


def test_threads_started_in_a_node_keep_the_node_span_as_parent(telemetry):
    """With the instrumentor alone (no ``instrument()``), threading propagation comes along."""
    tracer = telemetry.tracer_provider.get_tracer("app")

    def lookup(key: str) -> str:
        with tracer.start_as_current_span(f"lookup {key}"):
            return key.upper()

    class FanOut(pocketflow.Node):
        def exec(self, prep_res: None) -> list[str]:
            results: list[str] = []
            worker = threading.Thread(target=lambda: results.append(lookup("thread")))
            worker.start()
            worker.join()
            with ThreadPoolExecutor(max_workers=2) as pool:
                results.extend(pool.map(lookup, ["pool-a", "pool-b"]))
            return results

    pocketflow.Flow(start=FanOut()).run({})

    fan_out = telemetry.span("FanOut")
    assert sorted(span.name for span in telemetry.children(fan_out)) == [
        "lookup pool-a",
        "lookup pool-b",
        "lookup thread",
    ]
