"""Telemetry never consumes the application's randomness (ids come from a generator of ours)."""

from __future__ import annotations

import json
import os
import random

from support.processes import BIN, REPOSITORY, run_program

from reasonflow_otel.sdk.ids import ID_GENERATOR, PrivateRandomIdGenerator

APP = REPOSITORY / "tests" / "apps" / "seeded_app.py"


def test_a_seeded_app_draws_the_same_sequence_bare_and_traced_both_ways(tmp_path):
    """Bare, under ``opentelemetry-instrument``, and with ``instrument()``: the same draws."""
    settings = {"OTEL_METRICS_EXPORTER": "none", "REASONFLOW_OTEL_PROCESS_METRICS": "false"}
    python = str(BIN / "python")
    bare = run_program([python, str(APP), "bare"], tmp_path, **settings)
    auto = run_program(
        [str(BIN / "opentelemetry-instrument"), python, str(APP), "bare"], tmp_path, **settings
    )
    manual = run_program([python, str(APP), "instrument"], tmp_path, **settings)

    draws = json.loads(bare.stdout)
    assert len(draws) >= 7
    assert json.loads(auto.stdout) == draws
    assert json.loads(manual.stdout) == draws
    traces = (tmp_path / ".reasonflow-otel" / "traces.jsonl").read_text().splitlines()
    assert len(traces) > 0, "the traced runs exported nothing"


def test_ids_leave_the_global_random_state_untouched():
    random.seed(7)
    expected = [random.random() for _ in range(3)]
    random.seed(7)
    ids = {ID_GENERATOR.generate_span_id() for _ in range(1000)}
    ids |= {ID_GENERATOR.generate_trace_id() for _ in range(1000)}

    assert [random.random() for _ in range(3)] == expected
    assert len(ids) == 2000
    assert all(0 < span_id < 2**128 for span_id in ids)


def test_a_forked_child_draws_other_ids_than_its_parent():
    generator = ID_GENERATOR
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave without running pytest's exit
        os.write(write, json.dumps([generator.generate_span_id() for _ in range(4)]).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_ids = json.loads(pipe.read())
    os.waitpid(pid, 0)

    parent_ids = [generator.generate_span_id() for _ in range(4)]
    assert set(child_ids).isdisjoint(parent_ids)


def test_two_generators_do_not_share_a_sequence():
    first, second = PrivateRandomIdGenerator(), PrivateRandomIdGenerator()
    assert [first.generate_trace_id() for _ in range(3)] != [
        second.generate_trace_id() for _ in range(3)
    ]
