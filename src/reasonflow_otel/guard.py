"""The boundary between our code and the application: our failures stop here.

Instrumentation runs inside every workflow, so a bug in it must never become
the application's failure. Each kind of internal error is logged once (with
its traceback) and counted; the workflow goes on.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from typing import Any

_logger = logging.getLogger("reasonflow_otel")
_lock = threading.Lock()
_seen: Counter[tuple[str, str]] = Counter()


def report_internal_error(where: str, error: BaseException) -> None:
    """Log the first internal error of each (place, type); count the rest."""
    key = (where, type(error).__qualname__)
    with _lock:
        _seen[key] += 1
        first = _seen[key] == 1
    if first:
        _logger.warning(
            "reasonflow-otel: internal error in %s (the workflow is not affected; "
            "further errors of this kind are counted, not logged)",
            where,
            exc_info=error,
        )


def internal_error_counts() -> dict[tuple[str, str], int]:
    """How many internal errors of each (place, type) were caught so far."""
    with _lock:
        return dict(_seen)


def safe_str(value: Any) -> str:
    """``str(value)``, or a stand-in naming its type when ``__str__`` raises."""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__qualname__}>"


def _renew_lock_in_child() -> None:
    """A lock another thread held at fork() time would stay locked in the child forever."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_lock_in_child)
