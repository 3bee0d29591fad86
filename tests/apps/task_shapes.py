"""Callables of every kind, for tests that trace them by name (no reasonflow_otel here)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any


class Engine:
    """A tiny engine: runs tasks, in this thread or another one."""

    def run(self, tasks: list[Callable[[], Any]]) -> list[Any]:
        return [self.execute(task) for task in tasks]

    def execute(self, task: Callable[[], Any]) -> Any:
        return task()

    def run_in_thread(self, value: int) -> list[int]:
        results: list[int] = []
        worker = threading.Thread(target=lambda: results.append(leaf(value)))
        worker.start()
        worker.join()
        return results

    @staticmethod
    def add(left: int, right: int) -> int:
        return left + right

    @classmethod
    def create(cls) -> Engine:
        return cls()

    async def run_async(self, values: list[int]) -> list[int]:
        return [await double(value) for value in values]

    def numbers(self, count: int) -> Iterator[int]:
        for number in range(count):
            yield leaf(number)

    async def stream(self, count: int) -> AsyncIterator[int]:
        for number in range(count):
            yield await double(number)


class Derived(Engine):
    """Inherits ``execute``: naming ``Derived.execute`` wraps it for Derived only."""


def leaf(value: int) -> int:
    return value


async def double(value: int) -> int:
    return value * 2


def fail(error: BaseException) -> None:
    raise error
