"""An instrumented app that ends, forks or un-instruments itself in one of several ways.

Run by tests/test_process_lifecycle.py in a fresh process, exporting over OTLP to
a receiver the test started, with a batch delay far longer than the run: spans
arrive only if the way the process ends (or forks) flushes them.

    python lifecycle_app.py SCENARIO

Each flow is named after what it shows; stdout gets one line per milestone.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import pocketflow
from opentelemetry import trace

import reasonflow_otel


class Step(pocketflow.Node):
    """Runs ``work`` (when given) inside its span, then returns its result."""

    def __init__(self, work: Callable[[], Any] | None = None) -> None:
        super().__init__()
        self.work = work

    def exec(self, prep_res: Any) -> Any:
        return self.work() if self.work else os.getpid()


def run_flow(name: str, work: Callable[[], Any] | None = None, steps: int = 1) -> Any:
    first = Step(work)
    last = first
    for _ in range(steps - 1):
        last = last >> Step()
    flow = pocketflow.Flow(start=first)
    flow.name = name
    return flow.run({})


def say(line: str) -> None:
    print(line, flush=True)


def warm_up() -> None:
    """Export a flow now, so the exporter holds an open connection when the app forks."""
    run_flow("Warmup")
    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]


# --- Scenarios ---------------------------------------------------------------------------


def at_exit() -> None:
    run_flow("AtExit")


def sigterm() -> None:
    run_flow("BeforeSigterm")
    say("ready")
    while True:
        time.sleep(1)


def app_handler(signum: int, frame: Any) -> None:
    say("app handler ran")
    os._exit(7)  # skips atexit: only a flush before this handler can deliver the spans


def os_fork() -> None:
    warm_up()

    def fork_a_child() -> int:
        pid = os.fork()
        if pid == 0:
            run_flow("ForkedChild")
            sys.exit(0)
        os.waitpid(pid, 0)
        return pid

    run_flow("ForkingParent", fork_a_child)
    run_flow("ParentAfterFork")


def multiprocessing_fork() -> None:
    warm_up()

    def start_children() -> None:
        context = multiprocessing.get_context("fork")
        children = [
            context.Process(target=run_flow, args=(f"ProcessChild{index}",)) for index in range(2)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join()

    run_flow("ForkingParent", start_children)
    run_flow("ParentAfterFork")


def pool_task(index: int) -> tuple[int, bool]:
    """Also tells whether SIGTERM still has its default action in the worker."""
    run_flow(f"PoolTask{index}")
    return index, signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def multiprocessing_pool() -> None:
    warm_up()
    pool = multiprocessing.get_context("fork").Pool(2)
    say(f"pool results {pool.map(pool_task, range(4))}")
    pool.close()
    pool.join()
    run_flow("ParentAfterPool")


def terminated_pool() -> None:
    """The usual idiom: leaving ``with Pool(...)`` terminates the workers."""
    warm_up()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        say(f"pool results {[index for index, _ in pool.map(pool_task, range(4))]}")
    run_flow("ParentAfterPool")


def uninstrument_mid_flow() -> None:
    result = run_flow("Uninstrumented", reasonflow_otel.uninstrument, steps=3)
    say(f"result {result!r}, context clean {trace.get_current_span() is trace.INVALID_SPAN}")
    reasonflow_otel.instrument()
    run_flow("Reinstrumented", steps=2)


SCENARIOS: dict[str, Callable[[], None]] = {
    "exit": at_exit,
    "sigterm": sigterm,
    "sigterm-app-handler": sigterm,
    "os-fork": os_fork,
    "multiprocessing-fork": multiprocessing_fork,
    "multiprocessing-pool": multiprocessing_pool,
    "terminated-pool": terminated_pool,
    "uninstrument-mid-flow": uninstrument_mid_flow,
}


if __name__ == "__main__":
    scenario = sys.argv[1]
    if scenario == "sigterm-app-handler":
        signal.signal(signal.SIGTERM, app_handler)
    reasonflow_otel.instrument()
    SCENARIOS[scenario]()
    say("done")
