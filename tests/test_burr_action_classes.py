"""User-defined Burr action classes: each step is described from its action, whatever the class."""
# ruff: noqa: F401, F811  (pytest fixtures imported from support.burr_apps)

from __future__ import annotations

from typing import Any

from burr.core import Action, ApplicationBuilder, State, default, expr
from support.burr_apps import ENGINE, burr_telemetry, make_burr_telemetry
from support.spans import events, outline, stable_attributes


class Doubling(Action):
    """Doubles one key; value equality makes instances unhashable (``__hash__`` is None)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self._key = key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Doubling) and other._key == self._key

    @property
    def reads(self) -> list[str]:
        return [self._key]

    @property
    def writes(self) -> list[str]:
        return [self._key]

    def run(self, state: State, **run_kwargs: Any) -> dict:
        return {self._key: state[self._key] * 2}

    def update(self, result: dict, state: State) -> State:
        return state.update(**result)


def test_an_unhashable_action_class_is_described_at_every_step(burr_telemetry):
    app = (
        ApplicationBuilder()
        .with_actions(double=Doubling("n"), again=Doubling("m"))
        .with_transitions(("double", "double", expr("n < 4")), ("double", "again", default))
        .with_state(n=1, m=3)
        .with_entrypoint("double")
        .build()
    )
    _, _, state = app.run(halt_after=["again"])
    assert (state["n"], state["m"]) == (4, 6)
    assert outline(burr_telemetry) == ["invoke_workflow double", "  double", "  double", "  again"]
    first, second, again = burr_telemetry.spans()[:3]
    for span, sequence_id, key, successor in (
        (first, 0, "n", "double"),
        (second, 1, "n", "again"),
        (again, 2, "m", "__end__"),
    ):
        assert stable_attributes(span) == {
            **ENGINE,
            "reasonflow.node.name": span.name,
            "reasonflow.node.class": "Doubling",
            "reasonflow.node.kind": "action",
            "reasonflow.node.id": "0" if span.name == "double" else "1",
            "reasonflow.node.sequence_id": sequence_id,
            "reasonflow.node.reads": (key,),
            "reasonflow.node.writes": (key,),
            "reasonflow.node.successor": successor,
        }
        assert events(span, "gen_ai.execution.state.changed") == [
            {"reasonflow.state.changed.count": 1}
        ]
