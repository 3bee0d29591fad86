"""Startup: ``import reasonflow_otel; reasonflow_otel.instrument()`` against the SDK's imports.

Each figure is the median over fresh interpreters, run in a scratch directory
with no ``OTEL_*`` or ``REASONFLOW_OTEL_*`` variable set (so traces go to the
local file). Also shown: which exporter packages ``instrument()`` loaded, to
check that unused exporters stay unimported.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile

DEFAULT_SAMPLES = 3
SNIPPETS = {
    "import opentelemetry.sdk": "import opentelemetry.sdk",
    "import opentelemetry.sdk.{trace,metrics}": (
        "import opentelemetry.sdk.trace, opentelemetry.sdk.metrics"
    ),
    "import reasonflow_otel; instrument()": "import reasonflow_otel; reasonflow_otel.instrument()",
}
EXPORTER_PACKAGES = (
    "opentelemetry.exporter.otlp.proto.common",
    "opentelemetry.exporter.otlp.proto.grpc",
    "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.exporter.prometheus",
)
PROGRAM = """
import sys, time
started = time.perf_counter()
{snippet}
print(time.perf_counter() - started)
print(",".join(name for name in {packages!r} if name in sys.modules))
"""


def timed_run(snippet: str, directory: str) -> tuple[float, str]:
    """Seconds the snippet took in a fresh interpreter, and the exporter packages it loaded."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "REASONFLOW_OTEL_"))
    }
    program = PROGRAM.format(snippet=snippet, packages=EXPORTER_PACKAGES)
    completed = subprocess.run(
        [sys.executable, "-c", program],
        cwd=directory,
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, packages = completed.stdout.splitlines()
    return float(seconds), packages


def report(samples: int) -> None:
    print(f"\nstartup: milliseconds in a fresh interpreter (median of {samples})")
    with tempfile.TemporaryDirectory() as directory:
        for name, snippet in SNIPPETS.items():
            runs = [timed_run(snippet, directory) for _ in range(samples)]
            milliseconds = statistics.median(seconds for seconds, _ in runs) * 1000
            print(f"  {name:<40} {milliseconds:8.1f}")
        loaded = runs[-1][1] or "none"
    print(f"  exporter packages loaded by instrument(): {loaded}")
