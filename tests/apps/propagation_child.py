"""A child process for tests/test_propagation.py: runs one instrumented flow and exits.

    python propagation_child.py instrument            # reasonflow_otel.instrument()
    opentelemetry-instrument python propagation_child.py auto   # the distro sets up

Its spans go to the local trace file (``REASONFLOW_OTEL_TRACE_FILE``); the test
reads them back to check that the flow continued the trace in ``TRACEPARENT``.
"""

from __future__ import annotations

import sys

import pocketflow

import reasonflow_otel


class ChildWork(pocketflow.Node):
    def exec(self, prep_res: object) -> str:
        return "done in the child"


def main(mode: str) -> None:
    if mode == "instrument":
        reasonflow_otel.instrument()
    flow = pocketflow.Flow(start=ChildWork())
    flow.name = "ChildFlow"
    flow.run({})


if __name__ == "__main__":
    main(sys.argv[1])
