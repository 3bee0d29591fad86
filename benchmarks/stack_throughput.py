"""What the scaled tier costs: agent -> gateway-1, gateway-2 -> Jaeger, natively on this machine.

Pushes a bounded load of instrumented PocketFlow traces (tests/apps/scaled_load.py: 4 to 10
spans each, one run in five failing) through the tier that tests/support/scaled_tier.py starts
from the shipped configs and the built binaries, with production sampling (10 % of ordinary
traces, every error trace). Two phases, each on a fresh tier:

- ``paced``: a fixed offered load (default 32 traces/s, about 225 spans/s). Reports each
  Collector's CPU seconds per 100k spans it handled (a gateway handles its share) and peak
  resident set (VmHWM): the cost at that rate.
- ``unpaced``: one sender as fast as it can. Reports the spans/s the tier took in; on this
  machine the Python sender, not the Collectors, is the limit, so it is a floor of capacity.

``spans_per_second`` is what the agent accepted while the sender ran; ``backlog_seconds`` how
long the Collectors' queues took to empty after it stopped (about 0: the tier kept up).

For both: lost spans, from the Collectors' own otelcol_* metrics (spans the SDK delivered that
the agent did not accept, plus every exporter's send and enqueue failures), and the spans the
agent's whole-batch retries sent twice (the gateways' accepted minus the agent's accepted).

    python benchmarks/stack_throughput.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# The tests' harness, found through the sys.path entry above.
from support.scaled_tier import (
    GATEWAYS,
    ScaledTier,
    running_scaled_tier,
    wait_for,
)

DECISION_WAIT_SECONDS = 5
GATEWAY_SETTINGS = {
    "TAIL_SAMPLING_PERCENTAGE": "10",
    "TAIL_SAMPLING_DECISION_WAIT": f"{DECISION_WAIT_SECONDS}s",
}
LOSS_COUNTERS = (
    "otelcol_exporter_send_failed_spans_total",
    "otelcol_exporter_enqueue_failed_spans_total",
)


def lost_spans(tier: ScaledTier, delivered_by_sdk: int) -> float:
    """Spans the SDK handed over that never left a Collector, by the Collectors' own counts."""
    accepted = tier["agent"].counter("otelcol_receiver_accepted_spans_total")
    failed = sum(process.counter(name) for process in tier.collectors() for name in LOSS_COUNTERS)
    return delivered_by_sdk - accepted + failed


def run_phase(work: Path, traces: int, rate: float) -> dict[str, float]:
    """One fresh tier, one load; the figures of that phase."""
    with running_scaled_tier(work, gateway=GATEWAY_SETTINGS) as tier:
        cpu_before = {p.name: p.total_cpu_seconds() for p in tier.collectors()}
        sent = tier.send(work / "sent.json", traces, rate)
        sender_done = time.monotonic()
        wait_for(tier.drained, 300, "the queues to drain")
        backlog_seconds = time.monotonic() - sender_done
        time.sleep(DECISION_WAIT_SECONDS + 2)
        wait_for(tier.drained, 300, "the queues to drain after the last decisions")
        for process in tier.collectors():
            process.sample()
        accepted = tier["agent"].counter("otelcol_receiver_accepted_spans_total")
        gateways = sum(
            tier[name].counter("otelcol_receiver_accepted_spans_total") for name in GATEWAYS
        )
        figures = {
            "traces": len(sent["traces"]),
            "spans": accepted,
            "spans_per_second": accepted / sent["seconds"],
            "backlog_seconds": backlog_seconds,
            "lost_spans": lost_spans(tier, sent["delivered"]) + sent["failed"],
            "duplicated_spans": gateways - accepted,
        }
        for process in tier.collectors():
            cpu = process.total_cpu_seconds() - cpu_before[process.name]
            # Per span it handled: all of them for the agent, its share for a gateway.
            handled = process.counter("otelcol_receiver_accepted_spans_total")
            figures[f"{process.name}_cpu_s_per_100k_spans"] = cpu / handled * 100_000
            figures[f"{process.name}_peak_rss_mib"] = process.peak_rss / 2**20
    return figures


def report(name: str, figures: dict[str, float]) -> None:
    print(f"\n{name}")
    for key, value in figures.items():
        print(f"  {key:<36} {value:12.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per phase (CI)")
    parser.add_argument("--rate", type=float, default=32.0, help="paced phase, traces per second")
    args = parser.parse_args()
    paced_traces = 200 if args.quick else int(args.rate * 120)
    unpaced_traces = 200 if args.quick else 4000
    with tempfile.TemporaryDirectory(prefix="stack-throughput-") as work:
        report(
            f"paced: {paced_traces} traces at {args.rate:g} traces/s",
            run_phase(Path(work) / "paced", paced_traces, args.rate),
        )
        report(
            f"unpaced: {unpaced_traces} traces from one sender",
            run_phase(Path(work) / "unpaced", unpaced_traces, 0),
        )


if __name__ == "__main__":
    main()
