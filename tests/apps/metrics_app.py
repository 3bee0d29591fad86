"""A small PocketFlow app, instrumented by reasonflow-otel, that runs flows in a loop.

Used by tests/test_prometheus_stack.py: run it with the Prometheus exporter and scrape it.

    OTEL_METRICS_EXPORTER=prometheus OTEL_EXPORTER_PROMETHEUS_HOST=127.0.0.1 \\
    OTEL_EXPORTER_PROMETHEUS_PORT=9464 python tests/apps/metrics_app.py --seconds 60

Flows and nodes (names are the class names):

    OrderFlow:  LoadOrder >> CheckStock >> FetchPrices >> PricingFlow >> Ship
    PricingFlow (nested in OrderFlow):  ApplyDiscount >> ComputeTax
    ReportFlow: Summarize >> Publish

- CheckStock fails one run in four with ``StockError`` (no retries), which fails OrderFlow;
- FetchPrices always fails its first attempt and succeeds on the retry (``max_retries=3``);
- Ship fails one run in three and takes its fallback (``exec_fallback``);
- ComputeTax burns some CPU and Summarize keeps some memory, for the per-node resource metrics.

Runs stop after ``--seconds`` (or ``METRICS_APP_SECONDS``), or on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from typing import Any

import reasonflow_otel

reasonflow_otel.instrument()

from pocketflow import Flow, Node  # noqa: E402  (instrumented after instrument())

RNG = random.Random(6)  # fixed seed: the same runs every time
KEPT: list[bytes] = []


class StockError(RuntimeError):
    """An item is out of stock."""


class LoadOrder(Node):
    def exec(self, prep_res: Any) -> dict[str, Any]:
        time.sleep(0.002)
        return {"items": RNG.randint(1, 5)}

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared["order"] = exec_res


class CheckStock(Node):
    def exec(self, prep_res: Any) -> bool:
        time.sleep(0.001)
        if RNG.random() < 0.25:
            raise StockError("item out of stock")
        return True


class FetchPrices(Node):
    def __init__(self) -> None:
        super().__init__(max_retries=3)

    def exec(self, prep_res: Any) -> float:
        time.sleep(0.001)
        if self.cur_retry == 0:
            raise TimeoutError("price service timed out")
        return 9.99


class ApplyDiscount(Node):
    def exec(self, prep_res: Any) -> float:
        time.sleep(0.001)
        return 0.1


class ComputeTax(Node):
    def exec(self, prep_res: Any) -> int:
        return sum(i * i for i in range(20_000))


class PricingFlow(Flow):
    pass


class Ship(Node):
    def exec(self, prep_res: Any) -> str:
        time.sleep(0.001)
        if RNG.random() < 1 / 3:
            raise ConnectionError("carrier unreachable")
        return "shipped"

    def exec_fallback(self, prep_res: Any, exc: Exception) -> str:
        return "queued"


class OrderFlow(Flow):
    pass


class Summarize(Node):
    def exec(self, prep_res: Any) -> int:
        KEPT.append(bytes(64 * 1024))
        del KEPT[:-32]
        time.sleep(0.002)
        return len(KEPT)


class Publish(Node):
    def exec(self, prep_res: Any) -> str:
        time.sleep(0.001)
        return "published"


class ReportFlow(Flow):
    pass


def order_flow() -> OrderFlow:
    pricing = PricingFlow(start=ApplyDiscount())
    pricing.start_node >> ComputeTax()
    flow = OrderFlow(start=LoadOrder())
    flow.start_node >> CheckStock() >> FetchPrices() >> pricing >> Ship()
    return flow


def report_flow() -> ReportFlow:
    flow = ReportFlow(start=Summarize())
    flow.start_node >> Publish()
    return flow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("METRICS_APP_SECONDS", "60")),
        help="stop after this many seconds (default: $METRICS_APP_SECONDS or 60)",
    )
    parser.add_argument(
        "--pause", type=float, default=0.01, help="sleep between two iterations (seconds)"
    )
    args = parser.parse_args(argv)

    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    orders, reports = order_flow(), report_flow()
    deadline = time.monotonic() + args.seconds
    runs = failures = 0
    print("metrics app running", flush=True)
    while not stopping and time.monotonic() < deadline:
        try:
            orders.run({})
        except StockError:
            failures += 1
        reports.run({})
        runs += 1
        time.sleep(args.pause)
    print(f"metrics app done: {runs} iterations, {failures} failed orders", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
