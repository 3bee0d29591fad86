"""A seeded app that draws from the global ``random`` between and inside flows.

    python seeded_app.py bare|instrument

Prints the whole sequence it drew as JSON: tracing must not change one value.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

import pocketflow


class Supervisor(pocketflow.Node):
    """Rejects answers at random, as supervisor-style agents do."""

    def exec(self, prep_res: Any) -> float:
        return random.random()

    def post(self, shared: dict[str, Any], prep_res: Any, draw: float) -> str:
        shared["draws"].append(draw)
        return "retry" if draw < 0.5 and len(shared["draws"]) < 8 else "accept"


class Answer(pocketflow.Node):
    def exec(self, prep_res: Any) -> int:
        return random.randint(0, 10**9)

    def post(self, shared: dict[str, Any], prep_res: Any, draw: int) -> None:
        shared["draws"].append(draw)


def main() -> None:
    if sys.argv[1] == "instrument":
        import reasonflow_otel

        reasonflow_otel.instrument()
    random.seed(42)
    shared: dict[str, Any] = {"draws": [random.random()]}
    supervisor = Supervisor()
    supervisor - "retry" >> supervisor
    supervisor - "accept" >> Answer()
    for _ in range(3):
        pocketflow.Flow(start=supervisor).run(shared)
        shared["draws"].append(random.getrandbits(64))
    print(json.dumps(shared["draws"]))


if __name__ == "__main__":
    main()
