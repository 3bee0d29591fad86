"""A research assistant with Apache Burr: branching, a fan-out, a flaky step and streaming.

No network and no key: a stand-in for an LLM (word rules) plans sub-queries, a
``MapStates`` action looks each one up in a small local corpus on Burr's thread
pool, a citation service times out once before it answers, and the answer is
streamed word by word. Every run gives the same answer.

    python examples/burr_research_assistant.py
    opentelemetry-instrument python examples/burr_research_assistant.py   # traced, no change

Under ``opentelemetry-instrument`` each ``run``/``stream_result`` call is one
trace: ``invoke_workflow plan`` (named after the first action unless
``REASONFLOW_OTEL_BURR_APPLICATION_NAME`` says otherwise) with a span per action, one
sub-application span per looked-up query under ``research``, the citation
timeout as an ERROR span (the app is run again and resumes at that action), and
the streamed ``draft`` span ending with its last word. With
``REASONFLOW_OTEL_CAPTURE=state``, ``reasonflow-otel state TRACE --step N``
prints the state after any step.

The graph::

    plan --(no sub-queries)--> answer_directly --> draft
    plan --(otherwise)-------> research (MapStates: lookup per query) --> cite --> draft
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from burr.core import Application, ApplicationBuilder, State, action, default, expr
from burr.core.action import streaming_action
from burr.core.parallelism import MapStates

QUESTIONS = (
    "What is OpenTelemetry and how do spans relate to traces?",
    "hello",
)
CORPUS = {
    "opentelemetry": "OpenTelemetry is a vendor-neutral standard for traces, metrics and logs.",
    "spans": "A span is one timed operation; spans nest by parent ids.",
    "traces": "A trace is the tree of spans of one request.",
}


class CitationTimeout(Exception):
    """The citation service did not answer in time."""


class CitationService:
    """Times out on its first call, then answers: a deterministic flaky dependency."""

    def __init__(self) -> None:
        self.calls = 0

    def cite(self, facts: list[str]) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            raise CitationTimeout("citation service timed out after 2.0 s")
        return [f"[{index + 1}] local corpus" for index in range(len(facts))]


@action(reads=["question"], writes=["queries"])
def plan(state: State) -> State:
    words = [word.strip("?.,").lower() for word in state["question"].split()]
    return state.update(queries=[word for word in words if word in CORPUS])


@action(reads=["query"], writes=["fact"])
def lookup(state: State, __tracer: Any) -> State:
    with __tracer("corpus_search"):
        fact = CORPUS[state["query"]]
    return state.update(fact=fact)


class Research(MapStates):
    """Looks every sub-query up in parallel, one sub-application each."""

    def action(self, state: State, inputs: dict[str, Any]) -> Any:
        return lookup

    def states(
        self, state: State, context: Any, inputs: dict[str, Any]
    ) -> Generator[State, None, None]:
        for query in state["queries"]:
            yield state.update(query=query)

    def reduce(self, state: State, states: Generator[State, None, None]) -> State:
        return state.update(facts=[substate["fact"] for substate in states])

    @property
    def reads(self) -> list[str]:
        return ["queries"]

    @property
    def writes(self) -> list[str]:
        return ["facts"]


def cite_with(service: CitationService) -> Any:
    @action(reads=["facts"], writes=["citations"])
    def cite(state: State) -> State:
        return state.update(citations=service.cite(state["facts"]))

    return cite


@action(reads=["question"], writes=["facts", "citations"])
def answer_directly(state: State) -> State:
    return state.update(facts=["Hello! Ask me about OpenTelemetry."], citations=[])


@streaming_action(reads=["facts", "citations"], writes=["answer"])
def draft(state: State) -> Generator[tuple[dict, State | None], None, None]:
    words = " ".join(state["facts"] + state["citations"]).split()
    for word in words:
        yield {"word": word}, None
    yield {"word": ""}, state.update(answer=" ".join(words))


def build(
    question: str,
    service: CitationService,
    state: dict[str, Any] | None = None,
    entrypoint: str = "plan",
) -> Application:
    """The assistant for one question, or resumed from a saved state at ``entrypoint``."""
    return (
        ApplicationBuilder()
        .with_actions(
            plan=plan,
            research=Research(),
            cite=cite_with(service),
            answer_directly=answer_directly,
            draft=draft,
        )
        .with_transitions(
            ("plan", "answer_directly", expr("len(queries) == 0")),
            ("plan", "research", default),
            ("research", "cite", default),
            ("cite", "draft", default),
            ("answer_directly", "draft", default),
        )
        .with_state(**(state if state is not None else {"question": question}))
        .with_entrypoint(entrypoint)
        .build()
    )


def answer(question: str) -> str:
    """Research up to the draft (running the timed-out step again), then stream the draft."""
    app = build(question, CitationService())
    try:
        app.run(halt_before=["draft"])
    except CitationTimeout:
        app.run(halt_before=["draft"])  # Burr resumes at the action that failed
    _, stream = app.stream_result(halt_after=["draft"])
    words = [chunk["word"] for chunk in stream]
    _, state = stream.get()
    return f"{state['answer']} ({len(words)} words streamed)"


def main() -> None:
    for question in QUESTIONS:
        print(f"Q: {question}\nA: {answer(question)}")


if __name__ == "__main__":
    main()
