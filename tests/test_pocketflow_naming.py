"""Flows a person can tell apart, and routing misses that show, in spans, ``show`` and ``stats``."""

from __future__ import annotations

import asyncio
import re
import warnings
from typing import Any

import pocketflow
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from support.spans import events, outline

from reasonflow_otel.local.cli import main
from reasonflow_otel.local.trace_file import TraceFileExporter


class FetchCart(pocketflow.Node):
    pass


class Checkout(pocketflow.Node):
    pass


class Pay(pocketflow.AsyncNode):
    pass


class Orders(pocketflow.Flow):
    pass


# --- Naming flows -----------------------------------------------------------------------------


def test_an_anonymous_flow_is_named_after_its_start_node(telemetry):
    cart = FetchCart()
    cart >> Checkout()
    pocketflow.Flow(start=cart).run({})

    flow = telemetry.span("invoke_workflow Flow(FetchCart)")
    assert flow.attributes["gen_ai.workflow.name"] == "Flow(FetchCart)"
    assert flow.attributes["reasonflow.node.name"] == "Flow(FetchCart)"
    assert flow.attributes["reasonflow.node.class"] == "Flow"
    [point] = telemetry.metric_points("reasonflow.flow.duration")
    assert point.attributes["gen_ai.workflow.name"] == "Flow(FetchCart)"
    node_flows = {
        p.attributes["gen_ai.workflow.name"]
        for p in telemetry.metric_points("reasonflow.node.duration")
    }
    assert node_flows == {"Flow(FetchCart)"}


def test_nested_anonymous_flows_are_told_apart(telemetry):
    inner_cart = pocketflow.Flow(start=FetchCart())
    inner_pay = pocketflow.Flow(start=Checkout())
    inner_cart >> inner_pay
    pocketflow.Flow(start=inner_cart).run({})

    assert outline(telemetry) == [
        "invoke_workflow Flow(Flow(FetchCart))",
        "  invoke_workflow Flow(FetchCart)",
        "    FetchCart",
        "  invoke_workflow Flow(Checkout)",
        "    Checkout",
    ]


def test_every_engine_flow_class_derives_a_name_and_a_start_less_flow_keeps_its_class(telemetry):
    asyncio.run(pocketflow.AsyncFlow(start=Pay()).run_async({}))
    pocketflow.BatchFlow(start=FetchCart()).run({})
    pocketflow.Flow().run({})

    assert sorted(span.name for span in telemetry.spans() if "invoke_workflow" in span.name) == [
        "invoke_workflow AsyncFlow(Pay)",
        "invoke_workflow BatchFlow(FetchCart)",
        "invoke_workflow Flow",
    ]


def test_a_subclass_name_and_a_given_name_win_over_the_derived_one(telemetry):
    Orders(start=FetchCart()).run({})
    named = pocketflow.Flow(start=FetchCart())
    named.name = "nightly-orders"
    named.run({})

    assert sorted(span.name for span in telemetry.spans() if "invoke_workflow" in span.name) == [
        "invoke_workflow Orders",
        "invoke_workflow nightly-orders",
    ]


# --- Routing misses ---------------------------------------------------------------------------


class Route(pocketflow.Node):
    def exec(self, prep_res: Any) -> str:
        return self.params.get("intent", "refund")

    def post(self, shared: dict[str, Any], prep_res: Any, action: str) -> str:
        return action


def routing_miss_flow() -> pocketflow.Flow:
    route = Route()
    route - "faq" >> Checkout()
    route - "order" >> FetchCart()
    return pocketflow.Flow(start=route)


def test_a_routing_miss_is_an_event_and_attributes_on_the_node(telemetry):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        routing_miss_flow().run({})

    assert [str(w.message) for w in caught] == ["Flow ends: 'refund' not found in ['faq', 'order']"]
    node = telemetry.span("Route")
    assert node.attributes["reasonflow.node.action"] == "refund"
    assert node.attributes["reasonflow.node.successor"] == "__end__"
    assert node.attributes["reasonflow.node.routing_miss"] is True
    assert node.attributes["reasonflow.node.available_actions"] == ("faq", "order")
    assert events(node, "reasonflow.routing_miss") == [
        {"reasonflow.node.action": "refund", "reasonflow.node.available_actions": ("faq", "order")}
    ]


def test_a_terminal_node_and_a_taken_route_are_no_routing_miss(telemetry):
    flow = routing_miss_flow()
    flow.set_params({"intent": "faq"})
    flow.run({})

    for name in ("Route", "Checkout"):
        span = telemetry.span(name)
        assert "reasonflow.node.routing_miss" not in span.attributes
        assert events(span, "reasonflow.routing_miss") == []


def test_show_and_stats_tell_of_routing_misses_and_parameter_sets(telemetry, tmp_path, capsys):
    path = tmp_path / "traces.jsonl"
    telemetry.tracer_provider.add_span_processor(
        SimpleSpanProcessor(TraceFileExporter(path, max_bytes=10**9, backups=0))
    )

    class Intents(pocketflow.BatchFlow):
        def prep(self, shared: dict[str, Any]) -> list[dict[str, str]]:
            return [{"intent": "faq"}, {"intent": "refund", "locale": "x" * 80}]

    route = Route()
    route - "faq" >> Checkout()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Intents(start=route).run({})

    assert (
        main(
            [
                "show",
                "--file",
                str(path),
                telemetry.spans()[-1].context.trace_id.to_bytes(16, "big").hex()[:8],
            ]
        )
        == 0
    )
    shown = re.sub(r"\d+(\.\d+)? (µs|ms|s)", "<t>", capsys.readouterr().out).splitlines()
    assert shown[1:] == [
        "invoke_workflow Intents ✓ <t> → default",
        "├─ Intents item #0 (intent=faq) ✓ <t>",
        "│  ├─ Route ✓ <t> → faq",
        "│  └─ Checkout ✓ <t> → default",
        "└─ Intents item #1 (intent=refund, locale=" + "x" * 37 + "…) ✓ <t>",
        "   └─ Route ✓ <t> → refund · no route for 'refund' (has: faq)",
        "Intents: <t> total, 3 nodes run, 0 failed",
    ]

    assert main(["stats", "--file", str(path)]) == 0
    text = capsys.readouterr().out
    assert "Routing misses (node -> action with no successor; the flow ended)\n" in text
    assert "  Route -> 'refund': 1\n" in text
