"""Per-node resource probes: what one node run costs in CPU and memory.

The default probe (``rusage``) makes one ``getrusage(RUSAGE_THREAD)`` call at
each end of a node run, about the cost of one clock read, and yields:

- CPU time: user + system time of the running thread. For a sync node that is
  exactly the node's CPU. For an async node it is the event-loop thread's CPU
  while the node was in flight, which includes tasks interleaved with it: an
  upper bound.
- Memory growth: how far the process's peak resident set rose during the node
  (bytes). Zero unless the node pushed memory to a new high.

``psutil`` measures the change in resident set size instead (a real RSS read
per boundary, about 20 µs) and is opt-in. ``none`` measures nothing.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import NamedTuple


class Usage(NamedTuple):
    cpu_seconds: float
    memory_bytes: int


class ResourceProbe:
    """Measures nothing; the base for the real probes."""

    name = "none"

    def read(self) -> Usage | None:
        return None

    def used_since(self, start: Usage) -> Usage:
        now = self.read() or start
        return Usage(now.cpu_seconds - start.cpu_seconds, now.memory_bytes - start.memory_bytes)


class RusageProbe(ResourceProbe):
    name = "rusage"
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    _maxrss_unit = 1 if sys.platform == "darwin" else 1024

    def read(self) -> Usage:
        usage = resource.getrusage(resource.RUSAGE_THREAD)
        return Usage(usage.ru_utime + usage.ru_stime, usage.ru_maxrss * self._maxrss_unit)


class ThreadTimeProbe(ResourceProbe):
    """Where RUSAGE_THREAD is missing: CPU time only."""

    name = "rusage"

    def read(self) -> Usage:
        return Usage(time.thread_time(), 0)


class PsutilProbe(ResourceProbe):
    name = "psutil"

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()

    def read(self) -> Usage:
        return Usage(time.thread_time(), self._process.memory_info().rss)


def make_probe(name: str) -> ResourceProbe:
    if name == "psutil":
        return PsutilProbe()
    if name == "rusage":
        return RusageProbe() if hasattr(resource, "RUSAGE_THREAD") else ThreadTimeProbe()
    return ResourceProbe()
