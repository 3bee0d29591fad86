"""An instrumented app whose telemetry backend may be down: it must not notice.

    python outage_app.py RUNS

runs a linear flow of 100 nodes RUNS times under ``reasonflow_otel.instrument()``
(so ``OTEL_*`` variables choose the exporters), logging one warning first, then
the same flow with the instrumentation removed, and prints one JSON line: the flow's result, the
instrumented engines, the time per node run with and without instrumentation, how
much the resident set grew from the end of the first run to the end of the last,
and the wall-clock time at which the workflow was done, so that the caller can
tell how long the exit took.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time

import pocketflow
import psutil

import reasonflow_otel

NODES = 100


class Add(pocketflow.Node):
    """Adds its input to the shared total: the flow's result proves every node ran."""

    def prep(self, shared: dict[str, int]) -> int:
        return shared["total"]

    def exec(self, total: int) -> int:
        return total + 1

    def post(self, shared: dict[str, int], prep_res: int, exec_res: int) -> None:
        shared["total"] = exec_res


def linear_flow() -> pocketflow.Flow:
    nodes = [Add() for _ in range(NODES)]
    for node, following in itertools.pairwise(nodes):
        node >> following
    return pocketflow.Flow(start=nodes[0])


def seconds_per_node(flow: pocketflow.Flow, runs: int) -> tuple[float, int]:
    """Time per node run over ``runs`` flow runs, and the last run's total."""
    started = time.perf_counter()
    shared = {"total": 0}
    for _ in range(runs):
        shared = {"total": 0}
        flow.run(shared)
    return (time.perf_counter() - started) / (runs * NODES), shared["total"]


def main(runs: int) -> None:
    reasonflow_otel.instrument(service_name="outage-app")
    # A log record, for runs that also export logs (OTEL_LOGS_EXPORTER=otlp).
    logging.getLogger("outage_app").warning("running the flow %d times", runs)
    flow = linear_flow()
    process = psutil.Process()
    seconds_per_node(flow, 1)  # first run: imports, caches, the exporters' first attempt
    rss_after_first_run = process.memory_info().rss
    instrumented, total = seconds_per_node(flow, runs)
    rss_growth = process.memory_info().rss - rss_after_first_run
    engines = reasonflow_otel.instrumented_engines()
    reasonflow_otel.uninstrument()
    bare, _ = seconds_per_node(flow, runs)
    report = {
        "engines": engines,
        "total": total,
        "instrumented_seconds_per_node": instrumented,
        "bare_seconds_per_node": bare,
        "rss_growth_bytes": rss_growth,
        "done_at": time.time(),
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
