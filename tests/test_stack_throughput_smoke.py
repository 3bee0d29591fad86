"""The scaled-tier benchmark runs in quick mode and prints every figure of both phases.

Only that: the figures depend on the machine and its load, so no test asserts on them. Like
the scaled-tier tests, it needs the built binaries (skips without them, fails in CI).
"""

from __future__ import annotations

import re
import sys

from support.processes import REPOSITORY, run_program
from support.scaled_tier import require_stack_binaries

BENCHMARK = REPOSITORY / "benchmarks" / "stack_throughput.py"
FIGURES = (
    "spans_per_second",
    "backlog_seconds",
    "lost_spans",
    "duplicated_spans",
    *(f"{name}_cpu_s_per_100k_spans" for name in ("agent", "gateway-1", "gateway-2")),
    *(f"{name}_peak_rss_mib" for name in ("agent", "gateway-1", "gateway-2")),
)


def test_quick_run_prints_every_figure_of_both_phases(tmp_path) -> None:
    require_stack_binaries()
    output = run_program([sys.executable, str(BENCHMARK), "--quick"], tmp_path).stdout

    paced, unpaced = output.split("\npaced: ")[1].split("\nunpaced: ")
    for phase in (paced, unpaced):
        missing = [
            name
            for name in FIGURES
            if not re.search(rf"^ +{re.escape(name)} +-?\d+\.\d\b", phase, re.MULTILINE)
        ]
        assert missing == []
