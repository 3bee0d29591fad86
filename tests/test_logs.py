"""``logging`` records emitted inside nodes carry their trace and span ids, land in the local
store (or an OTLP logs endpoint when asked), and show up under their node in ``show`` and in
the console tree."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from support.otlp_files import otlp_json
from support.otlp_receiver import running_otlp_receiver
from support.processes import BIN, run_program

DURATION = re.compile(r"\d+(\.\d+)? (ms|s)\b")

# An inventory check whose nodes log at INFO and WARNING; it never sets up telemetry itself.
APP = """
import logging

from pocketflow import Flow, Node

logging.basicConfig(level=logging.INFO)
log = logging.getLogger("inventory")


class Fetch(Node):
    def exec(self, prep_res):
        log.info("fetched %d items", 3)
        return 3

    def post(self, shared, prep_res, count):
        shared["count"] = count


class Check(Node):
    def prep(self, shared):
        return shared["count"]

    def exec(self, count):
        log.warning("only %d items left", count)
        return count

    def post(self, shared, prep_res, count):
        return "low"


class Reorder(Node):
    def exec(self, prep_res):
        log.info("reorder placed")


class InventoryFlow(Flow):
    pass


fetch, check = Fetch(), Check()
fetch >> check
check - "low" >> Reorder()
InventoryFlow(start=fetch).run({})
log.info("outside any flow")
"""

EXPECTED_SHOW = [
    "invoke_workflow InventoryFlow ✓ <t> → default",
    "├─ Fetch ✓ <t> → default",
    "│    INFO fetched 3 items",
    "├─ Check ✓ <t> → low",
    "│    WARN only 3 items left",
    "└─ Reorder ✓ <t> → default",
    "     INFO reorder placed",
    "InventoryFlow: <t> total, 3 nodes run, 0 failed",
]
NODE_LOGS = {
    ("fetched 3 items", "INFO"): "Fetch",
    ("only 3 items left", "WARN"): "Check",
    ("reorder placed", "INFO"): "Reorder",
}


def write_app(directory: Path) -> Path:
    app = directory / "inventory.py"
    app.write_text(APP)
    return app


def run_with_instrument_api(directory: Path, **settings: str) -> Any:
    """The app started after ``reasonflow_otel.instrument()``, the one-line setup."""
    app = write_app(directory)
    launcher = (
        "import runpy, reasonflow_otel; reasonflow_otel.instrument(); "
        f"runpy.run_path({str(app)!r}, run_name='__main__')"
    )
    return run_program([sys.executable, "-c", launcher], directory, **settings)


def test_logs_in_nodes_reach_the_local_store_with_their_span_ids(tmp_path):
    completed = run_with_instrument_api(tmp_path)

    assert "INFO:inventory:fetched 3 items" in completed.stderr  # the app's own handler still works
    store = tmp_path / ".reasonflow-otel"
    spans = {span["name"]: span for span in otlp_json(store / "traces.jsonl", "spans")}
    logs = otlp_json(store / "traces.logs.jsonl", "logs")
    trace_id = spans["invoke_workflow InventoryFlow"]["traceId"]
    in_nodes = {
        (log["body"]["stringValue"], log["severityText"]): (log["traceId"], log["spanId"])
        for log in logs
        if "traceId" in log
    }
    assert in_nodes == {
        message: (trace_id, spans[node]["spanId"]) for message, node in NODE_LOGS.items()
    }
    outside = [log for log in logs if log["body"]["stringValue"] == "outside any flow"]
    assert len(outside) == 1 and "traceId" not in outside[0]


def test_show_prints_each_log_with_its_level_under_its_node(tmp_path):
    run_with_instrument_api(tmp_path)
    spans = otlp_json(tmp_path / ".reasonflow-otel" / "traces.jsonl", "spans")
    trace_id = spans[0]["traceId"]

    shown = run_program([str(BIN / "reasonflow-otel"), "show", trace_id[:10]], tmp_path)

    assert DURATION.sub("<t>", shown.stdout).splitlines() == [f"trace {trace_id}", *EXPECTED_SHOW]
    assert shown.stderr == ""


def test_the_console_tree_under_opentelemetry_instrument_shows_the_logs(tmp_path):
    app = write_app(tmp_path)

    completed = run_program(
        [str(BIN / "opentelemetry-instrument"), sys.executable, str(app)],
        tmp_path,
        REASONFLOW_OTEL_CONSOLE="true",
    )

    tree = DURATION.sub("<t>", completed.stderr).splitlines()
    start = tree.index(EXPECTED_SHOW[0])
    assert tree[start : start + len(EXPECTED_SHOW)] == EXPECTED_SHOW


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_logs_go_to_an_otlp_endpoint_when_a_logs_exporter_is_set(tmp_path, protocol):
    with running_otlp_receiver(protocol) as receiver:
        run_with_instrument_api(
            tmp_path,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
            OTEL_LOGS_EXPORTER="otlp",
        )
        spans = {span.name: span for span in receiver.wait_for_spans(4)}
        records = receiver.wait_for_log_records(4)

    trace_id = spans["invoke_workflow InventoryFlow"].trace_id
    in_nodes = {
        (record.body.string_value, record.severity_text): (record.trace_id, record.span_id)
        for record in records
        if record.trace_id
    }
    assert in_nodes == {
        message: (trace_id, spans[node].span_id) for message, node in NODE_LOGS.items()
    }
    assert not (tmp_path / ".reasonflow-otel").exists()


def test_with_an_endpoint_logs_stay_home_unless_a_logs_exporter_is_set(tmp_path):
    with running_otlp_receiver("grpc") as receiver:
        run_with_instrument_api(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
        assert len(receiver.wait_for_spans(4)) == 4

    assert receiver.log_records() == []
    assert not (tmp_path / ".reasonflow-otel").exists()
