"""Context propagation: carriers, child processes, an HTTP service, tasks, threads, baggage."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pocketflow
import pytest

import reasonflow_otel
from reasonflow_otel import propagation, semconv
from reasonflow_otel.instrumentation.pocketflow import PocketFlowInstrumentor
from reasonflow_otel.instrumentation.threads import ThreadingInstrumentor

APPS = Path(__file__).parent / "apps"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"
SUBPROCESS_TIMEOUT = 120  # seconds; a hang fails the test instead of blocking the suite


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees its first malformed-input warning, and no adopted startup trace."""
    monkeypatch.setattr(propagation, "_warned", set())
    yield
    propagation.continue_trace_from_environment({})


class Work(pocketflow.Node):
    def exec(self, prep_res: Any) -> str:
        return "done"


def named_flow(name: str, start: pocketflow.BaseNode | None = None) -> pocketflow.Flow:
    flow = pocketflow.Flow(start=start or Work())
    flow.name = name
    return flow


def run_flow(name: str) -> Callable[[], None]:
    """Runs a one-node flow of this name each time it is called."""
    return lambda: named_flow(name).run({})


def traceparent_of(span: Any) -> str:
    ids = span.context
    return f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --- inject / extract / continue_trace in one process -------------------------------------------


class Capture(pocketflow.Node):
    """Stores what the helpers write while this node runs."""

    def prep(self, shared: dict[str, Any]) -> dict[str, Any]:
        return shared

    def exec(self, shared: dict[str, Any]) -> None:
        shared["headers"] = reasonflow_otel.inject()
        reasonflow_otel.inject(shared)
        shared["environment"] = reasonflow_otel.child_environment(
            {"PATH": "/bin", "TRACEPARENT": "00-stale", "TRACESTATE": "stale=1"}
        )


def test_inject_writes_the_running_node_and_baggage_into_every_carrier(telemetry):
    shared: dict[str, Any] = {"question": "why"}

    with reasonflow_otel.continue_trace({"baggage": "session.id=s-1"}):
        named_flow("Outer", Capture()).run(shared)

    node = telemetry.span("Capture")
    assert shared["headers"] == {"traceparent": traceparent_of(node), "baggage": "session.id=s-1"}
    assert shared["traceparent"] == traceparent_of(node)
    assert shared["baggage"] == "session.id=s-1"
    assert shared["question"] == "why"
    assert shared["environment"] == {
        "PATH": "/bin",
        "TRACEPARENT": traceparent_of(node),
        "BAGGAGE": "session.id=s-1",
    }


def test_a_shared_store_carries_the_trace_to_a_later_flow(telemetry):
    shared: dict[str, Any] = {}
    named_flow("First", Capture()).run(shared)

    with reasonflow_otel.continue_trace(shared):
        named_flow("Later").run({})

    node = telemetry.span("Capture")
    later = telemetry.span("invoke_workflow Later")
    assert later.context.trace_id == node.context.trace_id
    assert later.parent.span_id == node.context.span_id


def test_child_environment_outside_any_span_drops_inherited_variables():
    inherited = {"PATH": "/bin", "TRACEPARENT": TRACEPARENT, "BAGGAGE": "a=b"}
    assert reasonflow_otel.child_environment(inherited) == {"PATH": "/bin"}
    assert inherited["TRACEPARENT"] == TRACEPARENT  # the argument is copied, not changed


def test_child_environment_defaults_to_a_copy_of_os_environ():
    environment = reasonflow_otel.child_environment()
    assert environment is not os.environ
    assert environment["PATH"] == os.environ["PATH"]


# --- A child process continues the trace --------------------------------------------------------


def read_trace_file(path: Path) -> list[dict[str, Any]]:
    """Every span in an OTLP JSON lines file, as its JSON object."""
    return [
        span
        for line in path.read_text().splitlines()
        for resource_spans in json.loads(line)["resourceSpans"]
        for scope_spans in resource_spans["scopeSpans"]
        for span in scope_spans["spans"]
    ]


def string_attributes(span: Mapping[str, Any]) -> dict[str, str]:
    return {
        item["key"]: item["value"]["stringValue"]
        for item in span.get("attributes", [])
        if "stringValue" in item["value"]
    }


def child_command(mode: str) -> list[str]:
    app = str(APPS / "propagation_child.py")
    if mode == "instrument":
        return [sys.executable, app, "instrument"]
    launcher = str(Path(sys.executable).parent / "opentelemetry-instrument")
    return [launcher, sys.executable, app, "auto"]


def isolated(environment: dict[str, str], trace_file: Path) -> dict[str, str]:
    """The child's telemetry goes to ``trace_file`` whatever this machine's OTEL_* say."""
    for name in [n for n in environment if n.startswith(("OTEL_", "REASONFLOW_OTEL_"))]:
        del environment[name]
    environment.update(
        REASONFLOW_OTEL_TRACE_FILE=str(trace_file),
        REASONFLOW_OTEL_BAGGAGE_KEYS="session.id",
        REASONFLOW_OTEL_PROCESS_METRICS="false",
    )
    return environment


class Launch(pocketflow.Node):
    """Runs the child app with the current trace in its environment."""

    def prep(self, shared: dict[str, Any]) -> dict[str, Any]:
        return shared

    def exec(self, shared: dict[str, Any]) -> None:
        environment = isolated(reasonflow_otel.child_environment(), shared["trace_file"])
        shared["child"] = subprocess.run(
            child_command(shared["mode"]),
            env=environment,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
        )


@pytest.mark.parametrize("mode", ["instrument", "opentelemetry-instrument"])
def test_a_child_process_flow_hangs_under_the_launching_node(telemetry, tmp_path, mode):
    shared: dict[str, Any] = {"mode": mode, "trace_file": tmp_path / "child.jsonl"}

    with reasonflow_otel.continue_trace({"baggage": "session.id=s-1"}):
        named_flow("Parent", Launch()).run(shared)

    assert shared["child"].returncode == 0, shared["child"].stderr
    assert "Traceback" not in shared["child"].stderr
    launch = telemetry.span("Launch")
    spans = {span["name"]: span for span in read_trace_file(shared["trace_file"])}
    assert set(spans) == {"invoke_workflow ChildFlow", "ChildWork"}
    child_flow, child_node = spans["invoke_workflow ChildFlow"], spans["ChildWork"]
    assert child_flow["traceId"] == child_node["traceId"] == f"{launch.context.trace_id:032x}"
    assert child_flow["parentSpanId"] == f"{launch.context.span_id:016x}"
    assert child_node["parentSpanId"] == child_flow["spanId"]
    assert string_attributes(child_flow)["session.id"] == "s-1"


def test_a_child_with_a_malformed_traceparent_starts_its_own_trace(tmp_path):
    trace_file = tmp_path / "child.jsonl"
    environment = isolated(dict(os.environ), trace_file)
    environment.update(TRACEPARENT="00-not-a-trace-01", TRACESTATE="x=1", BAGGAGE="session.id=s-1")

    child = subprocess.run(
        child_command("instrument"),
        env=environment,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )

    assert child.returncode == 0, child.stderr
    warnings = [line for line in child.stderr.splitlines() if "ignoring" in line]
    assert warnings == [
        "reasonflow-otel: ignoring a malformed traceparent '00-not-a-trace-01'; a new trace "
        "starts (further malformed traceparent values are ignored without a warning)"
    ]
    flow = next(s for s in read_trace_file(trace_file) if s["name"] == "invoke_workflow ChildFlow")
    assert "parentSpanId" not in flow
    assert flow["traceId"] != TRACE_ID
    assert string_attributes(flow)["session.id"] == "s-1"


# --- A service continues the trace from request headers -----------------------------------------


class ServiceHandler(BaseHTTPRequestHandler):
    """Runs a flow per request, in the trace the request's headers carry."""

    def do_GET(self) -> None:
        with reasonflow_otel.continue_trace(self.headers):
            named_flow("Service").run({})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"served")

    def log_message(self, format: str, *args: Any) -> None:
        """Keep request lines out of the test output."""


@pytest.fixture
def service_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ServiceHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def get(url: str, headers: Mapping[str, str]) -> bytes:
    request = urllib.request.Request(url, headers=dict(headers))
    with urllib.request.urlopen(request, timeout=SUBPROCESS_TIMEOUT) as response:
        return response.read()


class Call(pocketflow.Node):
    def prep(self, shared: dict[str, Any]) -> str:
        return shared["url"]

    def exec(self, url: str) -> bytes:
        return get(url, reasonflow_otel.inject())


def test_a_service_flow_hangs_under_the_calling_node(make_telemetry, service_url):
    telemetry = make_telemetry(baggage_keys="session.id")

    with reasonflow_otel.continue_trace({"baggage": "session.id=s-1"}):
        named_flow("Client", Call()).run({"url": service_url})

    call = telemetry.span("Call")
    service = telemetry.span("invoke_workflow Service")
    assert service.context.trace_id == call.context.trace_id
    assert service.parent.span_id == call.context.span_id
    assert service.parent.is_remote
    assert service.attributes["session.id"] == "s-1"


def test_a_service_given_a_malformed_traceparent_starts_a_new_trace(telemetry, service_url, caplog):
    for _ in range(3):
        assert get(service_url, {"traceparent": "00-xyz-01"}) == b"served"

    flows = [s for s in telemetry.spans() if s.name == "invoke_workflow Service"]
    assert len(flows) == 3
    assert all(flow.parent is None for flow in flows)
    assert len({flow.context.trace_id for flow in flows}) == 3
    assert [m for m in warnings_of(caplog) if "malformed" in m] == [
        "reasonflow-otel: ignoring a malformed traceparent '00-xyz-01'; a new trace starts "
        "(further malformed traceparent values are ignored without a warning)"
    ]


# --- Malformed input in every carrier field -----------------------------------------------------


def through_headers(fields: Mapping[str, Any], run: Callable[[], None]) -> None:
    """Each run extracts the fields again, as a service does per request."""
    for _ in range(3):
        with reasonflow_otel.continue_trace(fields):
            run()


def through_environment(fields: Mapping[str, Any], run: Callable[[], None]) -> None:
    """The fields as a child process's variables, adopted at startup."""
    propagation.continue_trace_from_environment({k.upper(): v for k, v in fields.items()})
    for _ in range(3):
        run()


CARRIERS = pytest.mark.parametrize("carry", [through_headers, through_environment])


@CARRIERS
@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        f"00-{'0' * 32}-{SPAN_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"ff-{TRACE_ID}-{SPAN_ID}-01",
        f"00-{TRACE_ID}-{SPAN_ID}-01-extra",
        f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01",
        "",
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace(make_telemetry, caplog, carry, traceparent):
    telemetry = make_telemetry(baggage_keys="session.id")

    carry({"traceparent": traceparent, "baggage": "session.id=s-1"}, run_flow("Flow"))

    flows = [s for s in telemetry.spans() if s.name == "invoke_workflow Flow"]
    assert len(flows) == 3
    assert all(flow.parent is None for flow in flows)
    assert int(TRACE_ID, 16) not in {flow.context.trace_id for flow in flows}
    assert all(flow.attributes["session.id"] == "s-1" for flow in flows)
    expected = 0 if traceparent == "" else 1  # an empty value is no traceparent at all
    assert len([m for m in warnings_of(caplog) if "malformed traceparent" in m]) == expected
    assert len(warnings_of(caplog)) == expected


def test_a_non_string_traceparent_in_a_shared_store_starts_a_new_trace(telemetry, caplog):
    through_headers({"traceparent": 42}, run_flow("Flow"))

    flows = [s for s in telemetry.spans() if s.name == "invoke_workflow Flow"]
    assert [flow.parent for flow in flows] == [None, None, None]
    assert len(warnings_of(caplog)) == 1


@CARRIERS
@pytest.mark.parametrize(
    ("tracestate", "kept"),
    [
        ("vendor=abc,other=1", {"vendor": "abc", "other": "1"}),
        ("vendor=abc,Not Valid", {}),
        ("=value", {}),
        ("vendor=a=b", {}),
    ],
)
def test_a_malformed_tracestate_is_dropped_and_the_trace_continues(
    telemetry, caplog, carry, tracestate, kept
):
    carry({"traceparent": TRACEPARENT, "tracestate": tracestate}, run_flow("Flow"))

    flows = [s for s in telemetry.spans() if s.name == "invoke_workflow Flow"]
    assert len(flows) == 3
    assert all(flow.parent.span_id == int(SPAN_ID, 16) for flow in flows)
    assert all(dict(flow.context.trace_state) == kept for flow in flows)
    warnings = warnings_of(caplog)
    if kept:
        assert warnings == []
    else:
        [warning] = warnings
        assert f"malformed tracestate {tracestate!r}; the trace continues without it" in warning


@CARRIERS
def test_malformed_baggage_entries_are_dropped(make_telemetry, caplog, carry):
    telemetry = make_telemetry(baggage_keys="session.id,tenant,broken")
    fields = {"traceparent": TRACEPARENT, "baggage": "session.id=s-1,broken,bad key=1,tenant=a"}

    carry(fields, run_flow("Flow"))

    flows = [s for s in telemetry.spans() if s.name == "invoke_workflow Flow"]
    assert len(flows) == 3
    assert all(flow.parent.span_id == int(SPAN_ID, 16) for flow in flows)
    baggage = [
        {k: v for k, v in f.attributes.items() if k in ("session.id", "tenant")} for f in flows
    ]
    assert baggage == [{"session.id": "s-1", "tenant": "a"}] * 3
    assert [m for m in warnings_of(caplog) if "malformed" in m] == [
        "reasonflow-otel: ignoring a malformed baggage 'session.id=s-1,broken,bad key=1,tenant=a'"
        "; its malformed entries are dropped (further malformed baggage values are ignored "
        "without a warning)"
    ]
    assert len(warnings_of(caplog)) == 1


# --- The startup trace --------------------------------------------------------------------------


def test_flows_with_no_active_span_continue_the_startup_trace(make_telemetry):
    telemetry = make_telemetry(baggage_keys="session.id")
    propagation.continue_trace_from_environment(
        {"TRACEPARENT": TRACEPARENT, "BAGGAGE": "session.id=from-env", "PATH": "/bin"}
    )
    tracer = telemetry.tracer_provider.get_tracer("app")

    named_flow("Adopted").run({})
    with tracer.start_as_current_span("request"):
        named_flow("Inside").run({})
    with reasonflow_otel.continue_trace({"baggage": "session.id=own"}):
        named_flow("OwnBaggage").run({})

    adopted = telemetry.span("invoke_workflow Adopted")
    assert adopted.context.trace_id == int(TRACE_ID, 16)
    assert adopted.parent.span_id == int(SPAN_ID, 16)
    assert adopted.attributes["session.id"] == "from-env"
    inside = telemetry.span("invoke_workflow Inside")
    assert inside.parent.span_id == telemetry.span("request").context.span_id
    assert "session.id" not in inside.attributes
    own = telemetry.span("invoke_workflow OwnBaggage")
    assert own.parent.span_id == int(SPAN_ID, 16)
    assert own.attributes["session.id"] == "own"


def test_an_environment_without_the_variables_adopts_nothing(telemetry):
    propagation.continue_trace_from_environment({"PATH": "/bin"})

    named_flow("Fresh").run({})

    assert telemetry.span("invoke_workflow Fresh").parent is None


# --- OTEL_PROPAGATORS ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("propagators", "headers", "variables"),
    [
        (None, {"traceparent", "baggage"}, {"TRACEPARENT", "BAGGAGE"}),
        ("tracecontext", {"traceparent"}, {"TRACEPARENT"}),
        ("baggage", {"baggage"}, {"BAGGAGE"}),
        ("none", set(), set()),
    ],
)
def test_otel_propagators_chooses_the_fields(propagators, headers, variables):
    environment = {k: v for k, v in os.environ.items() if k != "OTEL_PROPAGATORS"}
    if propagators is not None:
        environment["OTEL_PROPAGATORS"] = propagators

    printed = subprocess.run(
        [sys.executable, str(APPS / "propagation_headers.py")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=True,
    )

    written = json.loads(printed.stdout)
    assert set(written["headers"]) == headers
    assert set(written["environment"]) == variables
    traceparent = f"00-{1:032x}-{2:016x}-01"
    assert written["headers"].get("traceparent", traceparent) == traceparent
    assert written["environment"].get("BAGGAGE", "session.id=s-1") == "session.id=s-1"


# --- Tasks and threads inside a node ------------------------------------------------------------


class Fanout(pocketflow.AsyncNode):
    """Runs two flows at once: one through gather, one as a separate task."""

    async def exec_async(self, prep_res: Any) -> None:
        task = asyncio.create_task(async_flow("InTask").run_async({}))
        await asyncio.gather(async_flow("InGather").run_async({}), task)


class AsyncWork(pocketflow.AsyncNode):
    async def exec_async(self, prep_res: Any) -> str:
        await asyncio.sleep(0)
        return "done"


def async_flow(name: str, start: pocketflow.AsyncNode | None = None) -> pocketflow.AsyncFlow:
    flow = pocketflow.AsyncFlow(start=start or AsyncWork())
    flow.name = name
    return flow


def test_tasks_and_gather_keep_their_parent(telemetry):
    asyncio.run(async_flow("Outer", Fanout()).run_async({}))

    fanout = telemetry.span("Fanout")
    children = {span.name for span in telemetry.children(fanout)}
    assert children == {"invoke_workflow InTask", "invoke_workflow InGather"}
    for name in children:
        [work] = telemetry.children(telemetry.span(name))
        assert work.name == "AsyncWork"


class StartThreads(pocketflow.Node):
    """Runs one flow in a new thread and one in a thread pool."""

    def exec(self, prep_res: Any) -> None:
        thread = threading.Thread(target=named_flow("InThread").run, args=({},))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(named_flow("InPool").run, {}).result()


def test_threads_started_in_a_node_keep_their_parent(telemetry, threading_instrumented):
    named_flow("Outer", StartThreads()).run({})

    node = telemetry.span("StartThreads")
    children = [span.name for span in telemetry.children(node)]
    assert children == ["invoke_workflow InThread", "invoke_workflow InPool"]


def test_the_instrumentor_alone_brings_thread_context_propagation(telemetry):
    named_flow("Outer", StartThreads()).run({})

    node = telemetry.span("StartThreads")
    children = [span.name for span in telemetry.children(node)]
    assert children == ["invoke_workflow InThread", "invoke_workflow InPool"]


def test_with_threading_instrumentation_disabled_thread_flows_are_roots(
    make_telemetry, monkeypatch
):
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "threading")
    telemetry = make_telemetry()
    named_flow("Outer", StartThreads()).run({})

    assert telemetry.children(telemetry.span("StartThreads")) == []
    assert telemetry.span("invoke_workflow InThread").parent is None


def test_uninstrument_turns_off_only_the_threading_it_turned_on(make_telemetry):
    threading_instrumentor = ThreadingInstrumentor()
    assert not threading_instrumentor.is_instrumented_by_opentelemetry
    make_telemetry()
    assert threading_instrumentor.is_instrumented_by_opentelemetry
    PocketFlowInstrumentor().uninstrument()
    assert not threading_instrumentor.is_instrumented_by_opentelemetry

    threading_instrumentor.instrument()
    try:
        make_telemetry()
        PocketFlowInstrumentor().uninstrument()
        assert threading_instrumentor.is_instrumented_by_opentelemetry  # not ours to undo
    finally:
        threading_instrumentor.uninstrument()


# --- Baggage on spans ---------------------------------------------------------------------------


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_baggage_keys_are_copied_and_hash_keys_hashed(make_telemetry):
    telemetry = make_telemetry(
        baggage_keys="session.id,reasonflow.node.name", baggage_hash_keys="user.id"
    )
    carried = "session.id=s-1,user.id=alice,tenant=acme,reasonflow.node.name=spoofed"

    with reasonflow_otel.continue_trace({"baggage": carried}):
        named_flow("Flow").run({})

    for span in (telemetry.span("invoke_workflow Flow"), telemetry.span("Work")):
        assert span.attributes["session.id"] == "s-1"
        assert span.attributes["user.id"] == sha256("alice")
        assert "tenant" not in span.attributes
    assert telemetry.span("Work").attributes[semconv.NODE_NAME] == "Work"


def test_without_baggage_settings_no_baggage_reaches_spans(telemetry):
    with reasonflow_otel.continue_trace({"baggage": "session.id=s-1"}):
        named_flow("Flow").run({})

    assert "session.id" not in telemetry.span("invoke_workflow Flow").attributes
    assert "session.id" not in telemetry.span("Work").attributes
