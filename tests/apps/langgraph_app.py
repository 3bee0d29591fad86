"""A small LangGraph app: a triage graph with a conditional edge, a retried node, a
subgraph and an approval that interrupts and is resumed.

``python langgraph_app.py [--instrument]`` prints one JSON line: the results of its runs
(and with ``--instrument``, after ``reasonflow_otel.instrument()``, the engines instrumented).
"""

from __future__ import annotations

import json
import sys
from typing import TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, RetryPolicy, interrupt


class Ticket(TypedDict, total=False):
    text: str
    category: str
    reply: str
    approved: str


def classify(ticket: Ticket) -> Ticket:
    return {"category": "billing" if "invoice" in ticket["text"] else "general"}


def route(ticket: Ticket) -> str:
    return ticket["category"]


def draft_reply(ticket: Ticket) -> Ticket:
    return {"reply": f"About your {ticket['category']} question"}


def make_reply_graph():
    reply = StateGraph(Ticket)
    reply.add_node("draft", draft_reply)
    reply.add_edge(START, "draft")
    reply.add_edge("draft", END)
    return reply.compile(name="reply")


class FlakyBilling:
    """Fails once, then answers: a RetryPolicy retries it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, ticket: Ticket) -> Ticket:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("billing service busy")
        return {"reply": "Your invoice is on its way"}


def approve(ticket: Ticket) -> Ticket:
    return {"approved": interrupt({"reply": ticket["reply"]})}


def make_triage():
    builder = StateGraph(Ticket)
    builder.add_node("classify", classify)
    builder.add_node(
        "billing",
        FlakyBilling(),
        retry_policy=RetryPolicy(initial_interval=0.0, jitter=False, retry_on=ConnectionError),
    )
    builder.add_node("general", make_reply_graph())
    builder.add_node("approve", approve)
    builder.add_edge(START, "classify")
    builder.add_conditional_edges("classify", route, {"billing": "billing", "general": "general"})
    builder.add_edge("billing", "approve")
    builder.add_edge("general", "approve")
    builder.add_edge("approve", END)
    return builder.compile(name="triage", checkpointer=InMemorySaver())


def main() -> None:
    report: dict = {}
    if "--instrument" in sys.argv:
        import reasonflow_otel

        reasonflow_otel.instrument()
        report["engines"] = reasonflow_otel.instrumented_engines()
    triage = make_triage()
    results = []
    for number, text in enumerate(("Where is my invoice?", "How do I log in?")):
        config = {"configurable": {"thread_id": f"ticket-{number}"}}
        first = triage.invoke({"text": text}, config)
        results.append(
            [first["__interrupt__"][0].value, triage.invoke(Command(resume="yes"), config)]
        )
    report["results"] = results
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
