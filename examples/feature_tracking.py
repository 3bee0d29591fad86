"""Feature tracking with decorators: usage, duration, success rate and resources per feature.

Each feature is a ``@node`` with a ``category``; the request handler is a
``@workflow``; a block that is not a function is a ``step``. Every run becomes
spans and the RED and resource metrics, by feature and category:

    python examples/feature_tracking.py
    reasonflow-otel stats

No network and no API key: the "model" is a stand-in that fails once, so the
retry is visible, and one question is refused, so an error is.
"""

from __future__ import annotations

import reasonflow_otel

DOCUMENTS = {
    "refund": "Refunds are paid back to the card within 5 days.",
    "invoice": "Invoices are under Billing > Documents.",
}
_model_calls = {"count": 0}


class ModelTimeout(Exception):
    pass


class Refused(Exception):
    pass


@reasonflow_otel.node(category="retrieval")
def search_documents(question: str) -> list[str]:
    return [text for key, text in DOCUMENTS.items() if key in question]


@reasonflow_otel.node(category="ai_provider")
def call_model(question: str, context: list[str]) -> str:
    _model_calls["count"] += 1
    if _model_calls["count"] == 1:
        raise ModelTimeout("the model did not answer in time")
    if "password" in question:
        raise Refused("questions about passwords go to the security desk")
    return context[0] if context else "Sorry, I do not know yet."


@reasonflow_otel.node(category="ai_provider")
def answer_with_retry(question: str, context: list[str]) -> str:
    """The retry is this code's own; it reports each failed attempt."""
    for attempt in (1, 2):
        try:
            return call_model(question, context)
        except ModelTimeout as error:
            if attempt == 2:
                raise
            reasonflow_otel.step.current().retry(error)
    raise AssertionError("unreachable")


@reasonflow_otel.workflow(name="answer_question")
def answer_question(question: str) -> str:
    context = search_documents(question)
    answer = answer_with_retry(question, context)
    with reasonflow_otel.step("render_answer", category="ui") as step:
        step.set_attribute("app.answer.length", len(answer))
        return f"Q: {question}\nA: {answer}"


def main() -> None:
    for question in ("how do I get a refund?", "where is my invoice?", "reset my password"):
        try:
            print(answer_question(question))
        except Refused as error:
            print(f"Q: {question}\nA: (refused: {error})")


if __name__ == "__main__":
    reasonflow_otel.instrument()
    main()
