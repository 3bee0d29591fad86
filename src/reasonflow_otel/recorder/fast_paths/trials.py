"""The one check every fast path passes before it is used: a trial against the SDK itself."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

_logger = logging.getLogger(__name__)


def agrees(trial: Callable[[], tuple[Any, Any]], internals: str, fallback: str) -> bool:
    """Whether ``trial()``'s two results (the fast path's, the SDK's own) are equal.

    Any difference or error means the SDK's ``internals`` are not what the fast path
    was written against: one info line saying so and what happens instead (``fallback``),
    and False. Our dependency range spans several SDK releases; the data stays the same.
    """
    try:
        fast, sdk = trial()
    except Exception as error:  # an attribute renamed, a signature changed...
        _logger.info(
            "reasonflow-otel: the OpenTelemetry SDK's %s are not as expected (%r); %s",
            internals,
            error,
            fallback,
        )
        return False
    if fast != sdk:
        _logger.info(
            "reasonflow-otel: the OpenTelemetry SDK's %s give other results than its own calls; %s",
            internals,
            fallback,
        )
        return False
    return True
