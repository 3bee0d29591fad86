"""Span and trace ids that leave the application's ``random`` module alone.

The SDK's default ``RandomIdGenerator`` draws from the global ``random`` state,
so an app that seeds it (``random.seed(42)``) would see another sequence once
traced. Ids here come from a private ``random.Random`` seeded from
``os.urandom``, re-seeded in every forked child so parent and child never share
a sequence. ``getrandbits`` is one C call, atomic under the GIL, so threads need
no lock; it costs about a tenth of an ``os.urandom`` read (a syscall per id).
"""

from __future__ import annotations

import os
import random

from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import INVALID_SPAN_ID, INVALID_TRACE_ID

_SEED_BYTES = 32


class PrivateRandomIdGenerator(IdGenerator):
    """Random ids (uniform, as ratio samplers need) from a generator of our own."""

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(_SEED_BYTES))

    def reseed(self) -> None:
        """A fresh seed: after ``fork()`` the child must not repeat the parent's ids."""
        self._random.seed(os.urandom(_SEED_BYTES))

    def generate_span_id(self) -> int:
        span_id = self._random.getrandbits(64)
        while span_id == INVALID_SPAN_ID:
            span_id = self._random.getrandbits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = self._random.getrandbits(128)
        while trace_id == INVALID_TRACE_ID:
            trace_id = self._random.getrandbits(128)
        return trace_id

    def is_trace_id_random(self) -> bool:
        return True


# One generator for every provider this package makes: one fork hook, registered once.
ID_GENERATOR = PrivateRandomIdGenerator()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=ID_GENERATOR.reseed)
