"""The LangGraph overhead benchmark runs and prints every figure and ratio (no assertion on
numbers)."""

from __future__ import annotations

import sys
from pathlib import Path

from support.processes import REPOSITORY, run_program
from test_benchmark_smoke import has_figure

BENCHMARK = REPOSITORY / "benchmarks" / "langgraph_overhead.py"
FIGURES = (
    "bare",
    "sampled",
    "unsampled",
    "sdk_span",
    "sdk_hist",
    "sdk_invoke_sampled",
    "sdk_invoke_points",
    "in_graph_sdk_sampled",
    "in_graph_sdk_points",
    "spans_per_invoke",
    "points_per_invoke",
    "sampled per node",
    "unsampled per node",
    "sdk_invoke_sampled per node",
    "sdk_invoke_points per node",
    "sampled / in_graph_sdk_sampled",
    "unsampled / in_graph_sdk_points",
    "sampled / sdk_invoke_sampled",
    "unsampled / sdk_invoke_points",
    "sampled / floor (spans + points)",
    "unsampled / floor (points)",
    "sampled / bare",
    "unsampled / floor (points)",
)


def test_quick_run_prints_every_figure(tmp_path: Path) -> None:
    output = run_program([sys.executable, str(BENCHMARK), "--quick"], tmp_path).stdout
    assert [name for name in FIGURES if not has_figure(output, name)] == []
