"""Per-node resource probes: what one node run costs in CPU and memory.

The default probe (``rusage``) reads the thread's CPU clock and makes one
``getrusage(RUSAGE_THREAD)`` call at each end of a node run (a microsecond or
two for both) and yields:

- CPU time: user + system time of the thread running the node, from its CPU
  clock (getrusage's own thread times move in scheduler ticks, milliseconds).
  For a sync node that is exactly the node's CPU; work it hands to other
  threads or processes is not counted. For an async node it is the event-loop
  thread's CPU while the node was in flight, which includes the tasks
  interleaved with it: an upper bound.
- Memory growth: how far the process's peak resident set rose during the node
  (bytes). Zero unless the node pushed memory to a new high.

``psutil`` is opt-in and costs tens of microseconds per boundary (three reads
of ``/proc`` on Linux). It measures the same CPU time, the change in resident
set size instead of the peak (negative when memory was returned), and adds the
process's disk I/O and open file descriptors during the node. Those are
process-wide: nodes running at the same time share them.

``none`` measures nothing.
"""

from __future__ import annotations

import operator
import resource
import sys
import time
from typing import Any, NamedTuple

from reasonflow_otel import semconv


class Usage(NamedTuple):
    """Counters read at a node boundary, or how much they changed over a node run."""

    cpu_seconds: float
    memory_bytes: int
    disk_read_bytes: int = 0
    disk_write_bytes: int = 0
    open_fds: int = 0


class ResourceProbe:
    """Measures nothing; the base for the real probes."""

    name = "none"

    def read(self) -> Usage | None:
        return None

    def used_since(self, start: Usage) -> Usage:
        now = self.read() or start
        return Usage(now.cpu_seconds - start.cpu_seconds, now.memory_bytes - start.memory_bytes)

    def annotate(self, used: Usage, attributes: dict[str, Any]) -> None:
        """Put what a node run used on its span's attributes."""
        attributes[semconv.NODE_CPU_TIME] = used.cpu_seconds
        attributes[semconv.NODE_MEMORY_GROWTH] = used.memory_bytes


class RusageProbe(ResourceProbe):
    name = "rusage"
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    _maxrss_unit = 1 if sys.platform == "darwin" else 1024
    # Linux's RUSAGE_THREAD is cheaper than RUSAGE_SELF and gives the process's peak too.
    _who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)

    def read(self) -> Usage:
        peak = resource.getrusage(self._who).ru_maxrss
        return Usage(time.thread_time(), peak * self._maxrss_unit)


class PsutilProbe(ResourceProbe):
    """RSS change, disk I/O and open descriptors; a counter the platform lacks is left out."""

    name = "psutil"

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._reads_io = _works(self._process, "io_counters")  # missing on macOS
        self._reads_fds = _works(self._process, "num_fds")  # missing on Windows

    def read(self) -> Usage:
        process = self._process
        disk_read = disk_write = open_fds = 0
        if self._reads_io:
            io = process.io_counters()
            disk_read, disk_write = io.read_bytes, io.write_bytes
        if self._reads_fds:
            open_fds = process.num_fds()
        return Usage(time.thread_time(), process.memory_info().rss, disk_read, disk_write, open_fds)

    def used_since(self, start: Usage) -> Usage:
        return Usage(*map(operator.sub, self.read(), start))

    def annotate(self, used: Usage, attributes: dict[str, Any]) -> None:
        super().annotate(used, attributes)
        if self._reads_io:
            attributes[semconv.NODE_DISK_READ] = used.disk_read_bytes
            attributes[semconv.NODE_DISK_WRITE] = used.disk_write_bytes
        if self._reads_fds:
            attributes[semconv.NODE_OPEN_FDS_CHANGE] = used.open_fds


def _works(process: Any, reading: str) -> bool:
    """Whether a psutil reading is available here (platforms and sandboxes lack some)."""
    try:
        getattr(process, reading)()
    except Exception:  # AttributeError, NotImplementedError or psutil's AccessDenied
        return False
    return True


def make_probe(name: str) -> ResourceProbe:
    if name == "psutil":
        return PsutilProbe()
    if name == "rusage":
        return RusageProbe()
    return ResourceProbe()
