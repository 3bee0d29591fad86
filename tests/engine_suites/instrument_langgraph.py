"""``pytest -p instrument_langgraph``: LangGraph's own tests under ``reasonflow_otel.instrument()``.

Not part of our suite (see ``run_langgraph_suite.sh`` and docs/langgraph.md): every graph
the tests build is traced and metered through the SDK that ``instrument()`` sets up, with
payload capture as ``REASONFLOW_OTEL_CAPTURE`` says (the script turns it all on), spans
written to the local trace file of the directory pytest runs in.
"""

from __future__ import annotations

import reasonflow_otel


def pytest_configure(config) -> None:
    reasonflow_otel.instrument(service_name="langgraph-suite")
    print(f"\nreasonflow-otel: instrumented {reasonflow_otel.instrumented_engines()}")
