"""Per-node resource probes: what one node run costs in CPU and memory.

The default probe (``rusage``) yields:

- CPU time: user + system time of the thread running the node. For a sync node
  that is exactly the node's CPU; work it hands to other threads or processes
  is not counted. For an async node it is the event-loop thread's CPU while
  the node was in flight, which includes the tasks interleaved with it: an
  upper bound.
- Memory growth: how far the process's peak resident set rose during the node
  (bytes). Zero unless the node pushed memory to a new high.

It costs one ``getrusage(RUSAGE_THREAD)`` call per node boundary where that
call's CPU times are fine-grained (kernels that account CPU time precisely:
checked once per process by :func:`rusage_cpu_is_fine`). Elsewhere its thread
times move in scheduler ticks (milliseconds), so the thread's CPU clock is
read as well: two calls per boundary. Readings are kept on the run itself
(``cpu_time``, ``memory_growth``: the start readings, then what was used), so a
node run allocates nothing for them.

``psutil`` is opt-in and costs tens of microseconds per boundary (three reads
of ``/proc`` on Linux). It measures the same CPU time, the change in resident
set size instead of the peak (negative when memory was returned), and adds the
process's disk I/O and open file descriptors during the node. Those are
process-wide: nodes running at the same time share them.

``none`` measures nothing.
"""

from __future__ import annotations

import functools
import operator
import resource
import sys
import time
from typing import Any, NamedTuple, Protocol

from reasonflow_otel import semconv

# getrusage's CPU times are fine when, over this many back-to-back calls, at
# least a quarter of them see the figure move (each call takes a microsecond or
# more; tick-based accounting moves once per millisecond or so).
_RESOLUTION_CALLS = 200


class Measured(Protocol):
    """Where a probe keeps its readings: a run (see ``core.Run``)."""

    cpu_time: float
    memory_growth: int
    usage: Any


class Usage(NamedTuple):
    """psutil's counters at a node boundary, or how much they changed over a node run."""

    cpu_seconds: float
    memory_bytes: int
    disk_read_bytes: int = 0
    disk_write_bytes: int = 0
    open_fds: int = 0


class ResourceProbe:
    """Measures nothing; the base for the real probes."""

    name = "none"
    measures = False

    def start(self, run: Measured) -> None:
        """Take the start readings."""

    def stop(self, run: Measured) -> None:
        """Turn the start readings into what the run used."""

    def annotate(self, run: Measured, attributes: dict[str, Any]) -> None:
        """Put what a node run used on its span's attributes."""
        attributes[semconv.NODE_CPU_TIME] = run.cpu_time
        attributes[semconv.NODE_MEMORY_GROWTH] = run.memory_growth


_THREAD = getattr(resource, "RUSAGE_THREAD", None)
# Linux's RUSAGE_THREAD is cheaper than RUSAGE_SELF and gives the process's peak too.
_WHO = resource.RUSAGE_SELF if _THREAD is None else _THREAD
# ru_maxrss is in kilobytes on Linux, bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


class RusageProbe(ResourceProbe):
    """The thread's CPU clock and getrusage's peak RSS: two calls per boundary."""

    name = "rusage"
    measures = True

    def start(self, run: Measured) -> None:
        run.memory_growth = resource.getrusage(_WHO).ru_maxrss
        run.cpu_time = time.thread_time()

    def stop(self, run: Measured) -> None:
        run.cpu_time = time.thread_time() - run.cpu_time
        run.memory_growth = (resource.getrusage(_WHO).ru_maxrss - run.memory_growth) * _MAXRSS_UNIT


class ThreadRusageProbe(RusageProbe):
    """CPU time and peak RSS from one ``getrusage(RUSAGE_THREAD)`` per boundary."""

    def start(self, run: Measured) -> None:
        usage = resource.getrusage(_WHO)
        run.cpu_time = usage.ru_utime + usage.ru_stime
        run.memory_growth = usage.ru_maxrss

    def stop(self, run: Measured) -> None:
        usage = resource.getrusage(_WHO)
        run.cpu_time = usage.ru_utime + usage.ru_stime - run.cpu_time
        run.memory_growth = (usage.ru_maxrss - run.memory_growth) * _MAXRSS_UNIT


@functools.cache
def rusage_cpu_is_fine() -> bool:
    """Whether ``getrusage(RUSAGE_THREAD)`` CPU times move by microseconds here (checked once)."""
    if _THREAD is None:
        return False
    readings = set()
    for _ in range(_RESOLUTION_CALLS):
        usage = resource.getrusage(_THREAD)
        readings.add(usage.ru_utime + usage.ru_stime)
    return len(readings) >= _RESOLUTION_CALLS // 4


class PsutilProbe(ResourceProbe):
    """RSS change, disk I/O and open descriptors; a counter the platform lacks is left out."""

    name = "psutil"
    measures = True

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._reads_io = _works(self._process, "io_counters")  # missing on macOS
        self._reads_fds = _works(self._process, "num_fds")  # missing on Windows

    def start(self, run: Measured) -> None:
        run.usage = self._read()

    def stop(self, run: Measured) -> None:
        used = Usage(*map(operator.sub, self._read(), run.usage))
        run.usage = used
        run.cpu_time, run.memory_growth = used.cpu_seconds, used.memory_bytes

    def _read(self) -> Usage:
        process = self._process
        disk_read = disk_write = open_fds = 0
        if self._reads_io:
            io = process.io_counters()
            disk_read, disk_write = io.read_bytes, io.write_bytes
        if self._reads_fds:
            open_fds = process.num_fds()
        return Usage(time.thread_time(), process.memory_info().rss, disk_read, disk_write, open_fds)

    def annotate(self, run: Measured, attributes: dict[str, Any]) -> None:
        super().annotate(run, attributes)
        used = run.usage
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
        return ThreadRusageProbe() if rusage_cpu_is_fine() else RusageProbe()
    return ResourceProbe()
