"""The console tree: each trace printed on stderr, as an indented tree, when its root ends."""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator

import pocketflow
import pytest
from opentelemetry import context, trace
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from reasonflow_otel.local import console
from reasonflow_otel.local.console import ConsoleLogProcessor, ConsoleTreeProcessor, span_record
from reasonflow_otel.local.store import SpanRecord
from reasonflow_otel.local.tree import Style, build_tree, render_trace

DURATION = re.compile(r"\d+(\.\d+)? (ms|s)\b")
log = logging.getLogger("tests.console")


def normalized(text: str) -> list[str]:
    """Output lines with every duration replaced by <t>."""
    return DURATION.sub("<t>", text).splitlines()


@pytest.fixture
def tree(telemetry) -> Iterator[ConsoleTreeProcessor]:
    """The console tree on the test's tracer provider, with ``tests.console`` logs routed to it."""
    processor = ConsoleTreeProcessor()
    telemetry.tracer_provider.add_span_processor(processor)
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(ConsoleLogProcessor(processor))
    handler = LoggingHandler(logger_provider=logger_provider)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield processor
    log.removeHandler(handler)
    logger_provider.shutdown()


class Flaky(pocketflow.Node):
    def __init__(self) -> None:
        super().__init__(max_retries=2)
        self.calls = 0

    def exec(self, prep_res):
        log.info("asking the model")
        self.calls += 1
        if self.calls == 1:
            raise TimeoutError("slow model")
        log.warning("the model was slow\nsecond line")
        return "ok"

    def post(self, shared, prep_res, exec_res):
        return "done"


class Broken(pocketflow.Node):
    def exec(self, prep_res):
        raise KeyError("missing")


def test_a_trace_prints_as_a_tree_with_retries_actions_logs_and_a_summary(tree, capsys):
    flaky = Flaky()
    flaky - "done" >> Broken()
    with pytest.raises(KeyError):
        pocketflow.Flow(start=flaky).run({})

    assert normalized(capsys.readouterr().err) == [
        "invoke_workflow Flow(Flaky) ✗ <t> · error: KeyError: 'missing'",
        "├─ Flaky ✓ <t> → done · 1 retry",
        "│    attempt 1 failed: TimeoutError: slow model",
        "│    INFO asking the model",
        "│    INFO asking the model",
        "│    WARN the model was slow …",
        "└─ Broken ✗ <t> · error: KeyError: 'missing'",
        "Flow(Flaky): <t> total, 2 nodes run, 1 failed",
    ]


def test_each_flow_run_prints_once_when_it_ends(tree, capsys):
    class Step(pocketflow.Node):
        def exec(self, prep_res):
            log.info("inside: %s", capsys.readouterr().err == "")

    flow = pocketflow.Flow(start=Step())
    flow.run({})
    first = capsys.readouterr().err
    flow.run({})

    assert normalized(first) == [
        "invoke_workflow Flow(Step) ✓ <t> → default",
        "└─ Step ✓ <t> → default",
        "     INFO inside: True",
        "Flow(Step): <t> total, 1 node run, 0 failed",
    ]
    assert capsys.readouterr().err.count("invoke_workflow Flow(Step)") == 1


def test_long_batches_fold_their_plain_items(tree, capsys):
    class Items(pocketflow.BatchNode):
        def __init__(self) -> None:
            super().__init__(max_retries=2)
            self.failed_once = False

        def prep(self, shared):
            return list(range(30))

        def exec(self, item):
            if item == 17:
                raise ValueError("bad item")
            if item == 23 and not self.failed_once:
                self.failed_once = True
                raise TimeoutError("retry me")
            return item

        def exec_fallback(self, item, error):
            return -1

    pocketflow.Flow(start=Items()).run({})

    assert normalized(capsys.readouterr().err) == [
        "invoke_workflow Flow(Items) ✓ <t> → default",
        "└─ Items ✓ <t> → default",
        *[f"   ├─ Items item #{index} ✓ <t>" for index in range(5)],
        "   ├─ Items item #17 ✓ <t> · 1 retry · fallback",
        "   │    attempt 1 failed: ValueError: bad item",
        "   │    attempt 2 failed, fallback used: ValueError: bad item",
        "   ├─ Items item #23 ✓ <t> · 1 retry",
        "   │    attempt 1 failed: TimeoutError: retry me",
        "   └─ … 23 more items",
        "Flow(Items): <t> total, 1 node run, 0 failed",
    ]


def test_a_trace_continued_from_a_remote_parent_prints_when_its_local_root_ends(tree, capsys):
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    try:
        pocketflow.Flow(start=pocketflow.Node()).run({})
    finally:
        context.detach(token)

    assert normalized(capsys.readouterr().err) == [
        "invoke_workflow Flow(Node) ✓ <t> → default",
        "└─ Node ✓ <t> → default",
        "Flow(Node): <t> total, 1 node run, 0 failed",
    ]


def test_traces_still_running_are_held_up_to_a_limit(telemetry, capsys, monkeypatch):
    monkeypatch.setattr(console, "MAX_PENDING_SPANS", 4)
    telemetry.tracer_provider.add_span_processor(ConsoleTreeProcessor())
    tracer = telemetry.tracer_provider.get_tracer("test")
    roots = {name: tracer.start_span(name) for name in "ABC"}
    for root, children in (("A", 1), ("B", 3), ("C", 1)):  # five held: A is dropped
        parent = trace.set_span_in_context(roots[root])
        for index in range(children):
            tracer.start_span(f"{root}{index}", context=parent).end()

    for root in roots.values():
        root.end()

    assert normalized(capsys.readouterr().err) == [
        "A ✓ <t>",
        "A: <t> total, 0 nodes run, 0 failed",
        "B ✓ <t>",
        "├─ B0 ✓ <t>",
        "├─ B1 ✓ <t>",
        "└─ B2 ✓ <t>",
        "B: <t> total, 0 nodes run, 0 failed",
        "C ✓ <t>",
        "└─ C0 ✓ <t>",
        "C: <t> total, 0 nodes run, 0 failed",
    ]


# --- Streams: colour and glyphs ------------------------------------------------------------------


def finished_failing_flow(telemetry) -> list[SpanRecord]:
    flaky = Flaky()
    flaky - "done" >> Broken()
    with pytest.raises(KeyError):
        pocketflow.Flow(start=flaky).run({})
    return [span_record(span) for span in telemetry.spans()]


def test_colour_is_used_on_a_terminal_only(telemetry, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    spans = finished_failing_flow(telemetry)
    primary, secondary = os.openpty()
    with open(secondary, "w", encoding="utf-8") as terminal:
        terminal_style = Style.for_stream(terminal)
        monkeypatch.setenv("NO_COLOR", "1")
        no_colour_style = Style.for_stream(terminal)
    os.close(primary)

    assert terminal_style.colour and not no_colour_style.colour
    assert not Style.for_stream(io.StringIO()).colour
    coloured = render_trace(build_tree(spans), terminal_style)
    assert "\033[31m✗\033[0m" in coloured[0] and "\033[32m✓\033[0m" in coloured[1]
    assert "\033[" not in "".join(render_trace(build_tree(spans), no_colour_style))


def test_a_stream_that_cannot_encode_the_glyphs_gets_ascii(telemetry):
    spans = finished_failing_flow(telemetry)
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")

    lines = render_trace(build_tree(spans), Style.for_stream(stream))
    stream.write("\n".join(lines))  # raises if anything is not ASCII

    assert normalized("\n".join(lines)) == [
        "invoke_workflow Flow(Flaky) FAILED <t> - error: KeyError: 'missing'",
        "|- Flaky ok <t> -> done - 1 retry",
        "|    attempt 1 failed: TimeoutError: slow model",
        "`- Broken FAILED <t> - error: KeyError: 'missing'",
        "Flow(Flaky): <t> total, 2 nodes run, 1 failed",
    ]
