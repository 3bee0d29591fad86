"""A flow whose work runs in a ``multiprocessing.Pool``, exporting to the local trace file.

Run by tests/test_pools.py in a fresh process and a fresh working directory (no
OTLP endpoint: spans go to ``.reasonflow-otel/traces.jsonl``):

    python pool_app.py START_METHOD WHERE IDIOM

- START_METHOD: ``fork`` or ``spawn``;
- WHERE the pool is made and used: ``node`` (in a node's exec), ``flow`` (in a flow's
  prep, outside any node) or ``outside`` (before any flow; a node maps the tasks);
- IDIOM: ``with`` (leaving ``with Pool(...)`` terminates the workers) or ``join``
  (``close()`` then ``join()``).

Each task runs a one-node flow ``PoolTask{i}``; stdout gets the task results.
"""

from __future__ import annotations

import multiprocessing
import sys
from typing import Any

import pocketflow

import reasonflow_otel

reasonflow_otel.instrument()  # at import: spawned workers import this module too

TASKS = 4


class Step(pocketflow.Node):
    def exec(self, prep_res: Any) -> int:
        return 1


def pool_task(index: int) -> int:
    flow = pocketflow.Flow(start=Step())
    flow.name = f"PoolTask{index}"
    flow.run({})
    return index


def map_tasks(pool: Any) -> list[int]:
    return pool.map(pool_task, range(TASKS))


def use_pool(method: str, idiom: str) -> list[int]:
    """Make a pool of two workers, run the tasks, end the pool the way ``idiom`` says."""
    context = multiprocessing.get_context(method)
    if idiom == "with":
        with context.Pool(2) as pool:
            return map_tasks(pool)
    pool = context.Pool(2)
    results = map_tasks(pool)
    pool.close()
    pool.join()
    return results


class PoolNode(pocketflow.Node):
    """Makes the pool in its exec, or maps the tasks on a pool made before any flow."""

    def __init__(self, method: str, idiom: str, pool: Any = None) -> None:
        super().__init__()
        self.method, self.idiom, self.pool = method, idiom, pool

    def exec(self, prep_res: Any) -> list[int]:
        if self.pool is not None:
            return map_tasks(self.pool)
        return use_pool(self.method, self.idiom)

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: list[int]) -> None:
        shared["results"] = exec_res


class PoolInPrepFlow(pocketflow.Flow):
    """Makes the pool in the flow's own prep: inside the flow, outside any node."""

    def __init__(self, method: str, idiom: str) -> None:
        super().__init__(start=Step())
        self.method, self.idiom = method, idiom

    def prep(self, shared: dict[str, Any]) -> None:
        shared["results"] = use_pool(self.method, self.idiom)


def run(method: str, where: str, idiom: str) -> list[int]:
    shared: dict[str, Any] = {}
    if where == "flow":
        flow: pocketflow.Flow = PoolInPrepFlow(method, idiom)
    elif where == "node":
        flow = pocketflow.Flow(start=PoolNode(method, idiom))
    else:
        pool = multiprocessing.get_context(method).Pool(2)
        flow = pocketflow.Flow(start=PoolNode(method, idiom, pool))
        flow.name = "PoolFlow"
        flow.run(shared)
        if idiom == "with":
            pool.terminate()
        else:
            pool.close()
            pool.join()
        return shared["results"]
    flow.name = "PoolFlow"
    flow.run(shared)
    return shared["results"]


if __name__ == "__main__":
    print(f"results {run(*sys.argv[1:4])}", flush=True)
