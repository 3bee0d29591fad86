"""Plain method wrappers on classes: cheap when idle, and undone exactly.

A wrapper brackets the original call with three callbacks: ``begin(self, args,
kwargs)`` returns a token, or None to call the original untouched;
``end(token, result)`` and ``fail(token, error)`` see how the call ended. A
``gate()`` answering false skips even ``begin``: the idle path (instrumentation
suppressed, no run in progress) is one cheap call and the original. The user's
exception passes as the same object. A coroutine function gets a coroutine function, so
``inspect.iscoroutinefunction`` keeps its answer; ``functools.update_wrapper``
keeps the name, docstring and ``__wrapped__`` (hence ``inspect.signature``).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any

Begin = Callable[[Any, tuple, dict], Any]
End = Callable[[Any, Any], None]
Fail = Callable[[Any, BaseException], None]
Gate = Callable[[], Any]


def bracket(
    original: Callable[..., Any], begin: Begin, end: End, fail: Fail, gate: Gate
) -> Callable[..., Any]:
    """A wrapper of the method ``original`` that reports each call to the callbacks."""
    if inspect.iscoroutinefunction(original):

        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not gate():
                return await original(self, *args, **kwargs)
            token = begin(self, args, kwargs)
            if token is None:
                return await original(self, *args, **kwargs)
            try:
                result = await original(self, *args, **kwargs)
            except BaseException as error:
                fail(token, error)
                raise
            end(token, result)
            return result

    else:

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            if not gate():
                return original(self, *args, **kwargs)
            token = begin(self, args, kwargs)
            if token is None:
                return original(self, *args, **kwargs)
            try:
                result = original(self, *args, **kwargs)
            except BaseException as error:
                fail(token, error)
                raise
            end(token, result)
            return result

    return functools.update_wrapper(wrapper, original)


class ClassWrappers:
    """The wrappers installed on classes, remembered so ``restore()`` puts back each original."""

    def __init__(self) -> None:
        self._installed: list[tuple[type, str, Any]] = []
        self._wrapped: set[tuple[type, str]] = set()
        self.lock = threading.RLock()

    def wrap(self, owner: type, name: str, make: Callable[[Any], Any]) -> bool:
        """Replace the function ``owner`` defines as ``name`` by ``make(function)``, once."""
        with self.lock:
            original = vars(owner).get(name)
            if (owner, name) in self._wrapped or not inspect.isfunction(original):
                return False
            setattr(owner, name, make(original))
            self._installed.append((owner, name, original))
            self._wrapped.add((owner, name))
            return True

    def restore(self) -> None:
        """Every original back on its class, latest first."""
        with self.lock:
            for owner, name, original in reversed(self._installed):
                setattr(owner, name, original)
            self._installed.clear()
            self._wrapped.clear()
