"""The Burr overhead benchmark runs and prints every figure and ratio (no assertion on numbers)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from support.processes import REPOSITORY, run_program

BENCHMARK = REPOSITORY / "benchmarks" / "burr_overhead.py"
FIGURES = (
    "bare",
    "sdk_span",
    "sdk_hist",
    "burr_bridge",
    "sampled",
    "sampled_spans_only",
    "unsampled",
    "sampled_spans_only / burr_bridge",
    "sampled_spans_only / sdk_span",
    "burr_bridge / sdk_span",
    "sampled / (sdk_span + 3 sdk_hist)",
    "unsampled / 3 sdk_hist",
)


def test_quick_run_prints_every_figure(tmp_path: Path) -> None:
    output = run_program([sys.executable, str(BENCHMARK), "--quick"], tmp_path).stdout
    missing = [
        name
        for name in FIGURES
        if not re.search(rf"^ +{re.escape(name)} +-?\d+\.\d+$", output, re.MULTILINE)
    ]
    assert missing == []
