"""The overhead benchmark runs and prints every figure and ratio.

Only that: the numbers depend on the machine and its load, so no test asserts on them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from support.processes import REPOSITORY, run_program

BENCHMARK = REPOSITORY / "benchmarks" / "overhead.py"
FIGURES = (
    "bare",
    "sdk_span",
    "sdk_hist",
    "in_flow_span",
    "in_flow_hist",
    "sampled",
    "unsampled",
    "suppressed",
    "uninstrumented",
    "recorder_sampled",
    "recorder_unsampled",
    "adapter_sampled",
    "adapter_unsampled",
    "sdk_node_sampled",
    "sdk_node_unsampled",
    "sampled / (sdk_span + sdk_hist)",
    "unsampled / sdk_hist",
    "sampled / (in_flow_span + in_flow_hist)",
    "unsampled / in_flow_hist",
    "suppressed, microseconds",
    "uninstrumented / bare",
    "sampled / sdk_node_sampled",
    "unsampled / sdk_node_unsampled",
)
STARTUP_FIGURES = (
    "import opentelemetry.sdk",
    "import opentelemetry.sdk.{trace,metrics}",
    "import reasonflow_otel; instrument()",
)


def has_figure(section: str, name: str) -> bool:
    """A line that starts with the figure's name and goes on with a number."""
    return re.search(rf"^ +{re.escape(name)} +-?\d+\.\d+\b", section, re.MULTILINE) is not None


def test_quick_run_prints_every_figure_of_both_workloads_and_startup(tmp_path: Path) -> None:
    output = run_program([sys.executable, str(BENCHMARK), "--quick"], tmp_path).stdout

    sync, rest = output.split("\nsync flow, 100 nodes")[1].split("\nasync flow, 100 nodes")
    async_, startup = rest.split("\nstartup:")
    for section in (sync, async_):
        assert [name for name in FIGURES if not has_figure(section, name)] == []
    assert [name for name in STARTUP_FIGURES if not has_figure(startup, name)] == []
    assert (
        "exporter packages loaded by instrument(): opentelemetry.exporter.otlp.proto.common\n"
        in (startup)
    )
