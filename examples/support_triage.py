"""Support-ticket triage with PocketFlow: a realistic workflow with no network.

A stand-in for an LLM (keyword rules) classifies each ticket; urgent tickets
page the on-call engineer through a pager gateway that times out once before it
answers; replies are drafted concurrently. Every run gives the same answer.

    python examples/support_triage.py
    opentelemetry-instrument python examples/support_triage.py   # traced, no code change

Under ``opentelemetry-instrument`` each inbox becomes one trace: a span per flow,
node and batch item, the routing decision on RouteTickets, and the pager's
timeout as a retry event on PageOnCall (a success on its second attempt).

The workflow (``TriageFlow``, an AsyncFlow)::

    LoadInbox >> ClassifyTickets (BatchNode) >> RouteTickets
    RouteTickets - "escalate"   >> EscalationFlow (PageOnCall >> OpenIncident) >> DraftReplies
    RouteTickets - "auto_reply" >> DraftReplies (AsyncParallelBatchNode) >> Summarize
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pocketflow import AsyncFlow, AsyncParallelBatchNode, BatchNode, Flow, Node

MORNING_INBOX = [
    "Checkout is down for every customer since 9:00, we are losing orders",
    "How do I change the email address on my account?",
    "I was charged twice for invoice 4411",
]
EVENING_INBOX = [
    "Can I export my reports as CSV?",
    "The invoice PDF shows the wrong company address",
]

# (keyword, category, urgent): the first rule whose keyword is in the text decides.
_RULES = (
    ("down", "outage", True),
    ("charged", "billing", False),
    ("invoice", "billing", False),
)


def fake_model_classify(text: str) -> tuple[str, bool]:
    """Stands in for an LLM call: a category and an urgency, always the same for a text."""
    lowered = text.lower()
    for keyword, category, urgent in _RULES:
        if keyword in lowered:
            return category, urgent
    return "how-to", False


async def fake_model_draft(ticket: dict[str, Any]) -> str:
    """Stands in for an async LLM call that drafts the first reply to a ticket."""
    await asyncio.sleep(0)
    if ticket["urgent"]:
        return f"#{ticket['id']}: We are on it; an engineer has been paged."
    return f"#{ticket['id']}: Thanks for writing in about {ticket['category']}; here is how..."


class PagerTimeoutError(TimeoutError):
    """The pager gateway did not answer in time."""


@dataclass
class FlakyPager:
    """A pager gateway that times out on its first call, then answers."""

    calls: int = 0

    def page(self, summary: str) -> str:
        self.calls += 1
        if self.calls == 1:
            raise PagerTimeoutError("pager gateway timed out")
        return f"PAGE-{self.calls}"


class LoadInbox(Node):
    def prep(self, shared: dict[str, Any]) -> list[str]:
        return shared["inbox"]

    def exec(self, texts: list[str]) -> list[dict[str, Any]]:
        return [{"id": 100 + index, "text": text} for index, text in enumerate(texts)]

    def post(self, shared: dict[str, Any], prep_res: Any, tickets: list[dict[str, Any]]) -> None:
        shared["tickets"] = tickets


class ClassifyTickets(BatchNode):
    def prep(self, shared: dict[str, Any]) -> list[dict[str, Any]]:
        return shared["tickets"]

    def exec(self, ticket: dict[str, Any]) -> dict[str, Any]:
        category, urgent = fake_model_classify(ticket["text"])
        return {**ticket, "category": category, "urgent": urgent}

    def post(self, shared: dict[str, Any], prep_res: Any, tickets: list[dict[str, Any]]) -> None:
        shared["tickets"] = tickets


class RouteTickets(Node):
    def prep(self, shared: dict[str, Any]) -> list[dict[str, Any]]:
        return [ticket for ticket in shared["tickets"] if ticket["urgent"]]

    def post(self, shared: dict[str, Any], urgent: list[dict[str, Any]], exec_res: Any) -> str:
        shared["urgent"] = urgent
        return "escalate" if urgent else "auto_reply"


class PageOnCall(Node):
    def __init__(self, pager: FlakyPager) -> None:
        super().__init__(max_retries=3)
        self.pager = pager

    def prep(self, shared: dict[str, Any]) -> str:
        return "; ".join(ticket["text"] for ticket in shared["urgent"])

    def exec(self, summary: str) -> str:
        return self.pager.page(summary)

    def post(self, shared: dict[str, Any], prep_res: Any, page_id: str) -> None:
        shared["page"] = page_id


class OpenIncident(Node):
    def prep(self, shared: dict[str, Any]) -> list[int]:
        return [ticket["id"] for ticket in shared["urgent"]]

    def exec(self, ticket_ids: list[int]) -> str:
        return "INC-" + "-".join(str(ticket_id) for ticket_id in ticket_ids)

    def post(self, shared: dict[str, Any], prep_res: Any, incident: str) -> None:
        shared["incident"] = incident


class EscalationFlow(Flow):
    """Page the on-call engineer, then open an incident."""


class DraftReplies(AsyncParallelBatchNode):
    async def prep_async(self, shared: dict[str, Any]) -> list[dict[str, Any]]:
        return shared["tickets"]

    async def exec_async(self, ticket: dict[str, Any]) -> str:
        return await fake_model_draft(ticket)

    async def post_async(self, shared: dict[str, Any], prep_res: Any, replies: list[str]) -> None:
        shared["replies"] = replies


class Summarize(Node):
    def prep(self, shared: dict[str, Any]) -> dict[str, Any]:
        return shared

    def exec(self, shared: dict[str, Any]) -> str:
        summary = (
            f"{len(shared['tickets'])} tickets, {len(shared['urgent'])} urgent, "
            f"{len(shared['replies'])} replies drafted"
        )
        if "incident" in shared:
            summary += f"; incident {shared['incident']} opened, on-call paged ({shared['page']})"
        return summary

    def post(self, shared: dict[str, Any], prep_res: Any, summary: str) -> None:
        shared["summary"] = summary


class TriageFlow(AsyncFlow):
    """The whole triage of one inbox."""


def build_triage_flow(pager: FlakyPager) -> TriageFlow:
    load, route, draft = LoadInbox(), RouteTickets(), DraftReplies()
    page = PageOnCall(pager)
    page >> OpenIncident()
    load >> ClassifyTickets() >> route
    route - "escalate" >> EscalationFlow(start=page) >> draft
    route - "auto_reply" >> draft
    draft >> Summarize()
    return TriageFlow(start=load)


async def triage(inboxes: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Run the triage flow once per inbox; returns each inbox's shared store."""
    flow = build_triage_flow(FlakyPager())
    results: dict[str, dict[str, Any]] = {}
    for name, inbox in inboxes.items():
        shared: dict[str, Any] = {"inbox": inbox}
        await flow.run_async(shared)
        results[name] = shared
    return results


def main() -> None:
    results = asyncio.run(triage({"morning": MORNING_INBOX, "evening": EVENING_INBOX}))
    for name, shared in results.items():
        print(f"{name} inbox: {shared['summary']}")
        for reply in shared["replies"]:
            print(f"  {reply}")


if __name__ == "__main__":
    main()
