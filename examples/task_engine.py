"""A small in-house task engine, the ReasonFlow way, traced with no code change.

The engine runs tasks in dependency order, retries a task that raises, and keeps
each task's status; a task whose dependency failed is skipped. Nothing here
knows about OpenTelemetry. Name the callables to trace and run it:

    REASONFLOW_OTEL_TRACE_METHODS=task_engine:WorkflowEngine.run=workflow,\
task_engine:load_orders,task_engine:price_orders,task_engine:charge_cards,\
task_engine:send_receipts,task_engine:write_report \
    opentelemetry-instrument python examples/task_engine.py

Each run is one trace: ``invoke_workflow WorkflowEngine.run`` with a node span
per task attempt (the flaky and the failing attempts marked ERROR), and the
node and flow duration metrics.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[dict[str, Any]], Any]


class Status(enum.Enum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class Task:
    name: str
    handler: Handler
    depends_on: tuple[str, ...] = ()
    retries: int = 0
    status: Status = Status.PENDING
    attempts: int = 0
    error: str = ""


@dataclass
class WorkflowEngine:
    """Runs a workflow's tasks in dependency order; results are shared through a dict."""

    tasks: dict[str, Task] = field(default_factory=dict)

    def add_task(self, task: Task) -> None:
        self.tasks[task.name] = task

    def run(self, inputs: dict[str, Any]) -> dict[str, Status]:
        results: dict[str, Any] = dict(inputs)
        for task in self._in_order():
            if any(self.tasks[name].status is not Status.COMPLETED for name in task.depends_on):
                task.status = Status.SKIPPED
                continue
            self._run_task(task, results)
        return {name: task.status for name, task in self.tasks.items()}

    def _run_task(self, task: Task, results: dict[str, Any]) -> None:
        for attempt in range(1, task.retries + 2):
            task.attempts = attempt
            try:
                results[task.name] = task.handler(results)
            except Exception as error:
                task.error = f"{type(error).__name__}: {error}"
                continue
            task.status, task.error = Status.COMPLETED, ""
            return
        task.status = Status.FAILED

    def _in_order(self) -> list[Task]:
        ordered: list[Task] = []
        seen: set[str] = set()

        def visit(task: Task) -> None:
            if task.name in seen:
                return
            seen.add(task.name)
            for name in task.depends_on:
                visit(self.tasks[name])
            ordered.append(task)

        for task in self.tasks.values():
            visit(task)
        return ordered


# --- The tasks -----------------------------------------------------------------------


def load_orders(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": order, "items": order % 3 + 1} for order in results["order_ids"]]


def price_orders(results: dict[str, Any]) -> dict[int, float]:
    results["pricing_calls"] = results.get("pricing_calls", 0) + 1
    if results["pricing_calls"] == 1:
        raise TimeoutError("pricing service did not answer")  # flaky: the retry succeeds
    return {order["id"]: order["items"] * 9.5 for order in results["load_orders"]}


def charge_cards(results: dict[str, Any]) -> None:
    raise PermissionError("card declined")  # fails on every attempt


def send_receipts(results: dict[str, Any]) -> int:
    return len(results["charge_cards"])


def write_report(results: dict[str, Any]) -> str:
    total = sum(results["price_orders"].values())
    return f"{len(results['price_orders'])} orders, {total:.2f} total"


def build_engine() -> WorkflowEngine:
    engine = WorkflowEngine()
    engine.add_task(Task("load_orders", load_orders))
    engine.add_task(Task("price_orders", price_orders, ("load_orders",), retries=2))
    engine.add_task(Task("charge_cards", charge_cards, ("price_orders",), retries=1))
    engine.add_task(Task("send_receipts", send_receipts, ("charge_cards",)))
    engine.add_task(Task("write_report", write_report, ("price_orders",)))
    return engine


def main() -> None:
    engine = build_engine()
    statuses = engine.run({"order_ids": [101, 102, 103]})
    for name, status in statuses.items():
        task = engine.tasks[name]
        detail = f" ({task.error})" if task.error else ""
        print(f"{name}: {status.value} after {task.attempts} attempt(s){detail}")


if __name__ == "__main__":
    # The traced names point into the module ``task_engine``; run as a script this
    # file is ``__main__``, so the engine is run from the module (imported here,
    # after startup: the by-name instrumentation wraps it on import).
    import task_engine

    task_engine.main()
