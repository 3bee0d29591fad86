"""Payload capture: off by default, per phase when on, always bounded and redacted."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import pocketflow
import pytest

from reasonflow_otel import semconv
from reasonflow_otel.recorder.capture import REDACTED, Capture
from reasonflow_otel.settings import Settings, load_settings

CAPTURED = (
    semconv.NODE_PREP_RESULT,
    semconv.NODE_EXEC_RESULT,
    semconv.NODE_POST_RESULT,
    semconv.SHARED_BEFORE,
    semconv.SHARED_AFTER,
)


def captured(span: Any) -> dict[str, str]:
    """The payload attributes a span carries."""
    return {key: value for key, value in (span.attributes or {}).items() if key in CAPTURED}


def everything_exported(telemetry: Any) -> str:
    """Every attribute, event, status and resource value of every span, as one text."""
    parts = []
    for span in telemetry.spans():
        parts.append(span.name)
        parts.append(json.dumps(dict(span.attributes or {}), default=str))
        parts.append(json.dumps(dict(span.resource.attributes), default=str))
        parts.append(str(span.status.description))
        for event in span.events:
            parts.append(json.dumps(dict(event.attributes or {}), default=str))
    return "\n".join(parts)


# --- A question-answering flow whose every value is recognisable -------------------------


class Retrieve(pocketflow.Node):
    def prep(self, shared: dict[str, Any]) -> dict[str, str]:
        return {"query": shared["question"]}

    def exec(self, prep_res: dict[str, str]) -> list[str]:
        return [f"document about {prep_res['query']}"]

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: list[str]) -> str:
        shared["documents"] = exec_res
        return "answer"


class Answer(pocketflow.Node):
    def prep(self, shared: dict[str, Any]) -> list[str]:
        return shared["documents"]

    def exec(self, documents: list[str]) -> str:
        return f"answer from {len(documents)} document"

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: str) -> None:
        shared["answer"] = exec_res


def qa_flow() -> pocketflow.Flow:
    retrieve = Retrieve()
    retrieve - "answer" >> Answer()
    return pocketflow.Flow(start=retrieve)


QA_NODES = {
    "Retrieve": {
        semconv.NODE_PREP_RESULT: '{"query":"tides"}',
        semconv.NODE_EXEC_RESULT: '["document about tides"]',
        semconv.NODE_POST_RESULT: "answer",
        semconv.SHARED_BEFORE: '{"question":"tides"}',
        semconv.SHARED_AFTER: '{"question":"tides","documents":["document about tides"]}',
    },
    "Answer": {
        semconv.NODE_PREP_RESULT: '["document about tides"]',
        semconv.NODE_EXEC_RESULT: "answer from 1 document",
        semconv.NODE_POST_RESULT: "null",
        semconv.SHARED_BEFORE: '{"question":"tides","documents":["document about tides"]}',
        semconv.SHARED_AFTER: (
            '{"question":"tides","documents":["document about tides"],'
            '"answer":"answer from 1 document"}'
        ),
    },
}


def test_with_default_settings_no_payload_leaves_the_process(telemetry):
    marker = "payload-3f9c"

    class Mark(pocketflow.Node):
        def prep(self, shared):
            return {"prep": marker + "-prep"}

        def exec(self, prep_res):
            return {"exec": marker + "-exec", "seen": prep_res}

        def post(self, shared, prep_res, exec_res):
            shared["post"] = marker + "-post"
            return None

    class MarkAll(pocketflow.BatchNode):
        def prep(self, shared):
            return [marker + "-item-1", marker + "-item-2"]

        def exec(self, item):
            return item.upper()

    class MarkAsync(pocketflow.AsyncNode):
        async def exec_async(self, prep_res):
            return marker + "-async"

    mark = Mark()
    mark >> MarkAll()
    pocketflow.Flow(start=mark).run({"input": marker + "-shared"})
    asyncio.run(pocketflow.AsyncFlow(start=MarkAsync()).run_async({"input": marker}))

    assert len(telemetry.spans()) == 7  # 2 flows, 3 nodes, 2 batch items
    assert marker not in everything_exported(telemetry)


def test_each_phase_is_captured_only_when_enabled(make_telemetry):
    telemetry = make_telemetry(capture="prep,exec")
    qa_flow().run({"question": "tides"})

    for name, values in QA_NODES.items():
        expected = {
            key: values[key] for key in (semconv.NODE_PREP_RESULT, semconv.NODE_EXEC_RESULT)
        }
        assert captured(telemetry.span(name)) == expected
    assert captured(telemetry.span("invoke_workflow Flow(Retrieve)")) == {}


def test_everything_captured_on_nodes_and_the_flow(make_telemetry):
    telemetry = make_telemetry(capture="prep,exec,post,shared")
    qa_flow().run({"question": "tides"})

    for name, values in QA_NODES.items():
        assert captured(telemetry.span(name)) == values
    assert captured(telemetry.span("invoke_workflow Flow(Retrieve)")) == {
        semconv.NODE_POST_RESULT: "null",  # Flow.post returns the last action, Answer's None
        semconv.SHARED_BEFORE: QA_NODES["Retrieve"][semconv.SHARED_BEFORE],
        semconv.SHARED_AFTER: QA_NODES["Answer"][semconv.SHARED_AFTER],
    }


def test_the_shared_store_is_captured_when_a_node_fails(make_telemetry):
    telemetry = make_telemetry(capture="shared")

    class Charge(pocketflow.Node):
        def prep(self, shared):
            shared["attempted"] = True

        def exec(self, prep_res):
            raise RuntimeError("card declined")

    with pytest.raises(RuntimeError):
        Charge().run({"order": 7})

    assert captured(telemetry.span("Charge")) == {
        semconv.SHARED_BEFORE: '{"order":7}',
        semconv.SHARED_AFTER: '{"order":7,"attempted":true}',
    }


def test_batch_items_carry_their_own_input_and_result(make_telemetry):
    telemetry = make_telemetry(capture="prep,exec")

    class Shout(pocketflow.BatchNode):
        def prep(self, shared):
            return ["a", "b"]

        def exec(self, item):
            return item.upper()

    Shout().run({})

    node = telemetry.span("Shout")
    assert captured(node) == {
        semconv.NODE_PREP_RESULT: '["a","b"]',
        semconv.NODE_EXEC_RESULT: '["A","B"]',
    }
    items = telemetry.children(node)
    assert [captured(item) for item in items] == [
        {semconv.NODE_PREP_RESULT: "a", semconv.NODE_EXEC_RESULT: "A"},
        {semconv.NODE_PREP_RESULT: "b", semconv.NODE_EXEC_RESULT: "B"},
    ]


def test_async_nodes_and_parallel_items_are_captured(make_telemetry):
    telemetry = make_telemetry(capture="prep,exec,post")

    class Square(pocketflow.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [2, 3]

        async def exec_async(self, number):
            await asyncio.sleep(0)
            return number * number

        async def post_async(self, shared, prep_res, exec_res):
            return "squared"

    asyncio.run(pocketflow.AsyncFlow(start=Square()).run_async({}))

    node = telemetry.span("Square")
    assert captured(node) == {
        semconv.NODE_PREP_RESULT: "[2,3]",
        semconv.NODE_EXEC_RESULT: "[4,9]",
        semconv.NODE_POST_RESULT: "squared",
    }
    items = sorted(captured(item)[semconv.NODE_EXEC_RESULT] for item in telemetry.children(node))
    assert items == ["4", "9"]


def test_shared_keys_can_be_chosen_or_excluded(make_telemetry):
    telemetry = make_telemetry(
        capture="shared",
        capture_shared_keys="question,answer,history",
        exclude_shared_keys="history",
    )

    class Reply(pocketflow.Node):
        def post(self, shared, prep_res, exec_res):
            shared["answer"] = "42"

    Reply().run({"question": "life?", "history": ["hi"], "embeddings": [0.1, 0.2]})

    assert captured(telemetry.span("Reply")) == {
        semconv.SHARED_BEFORE: '{"question":"life?"}',
        semconv.SHARED_AFTER: '{"question":"life?","answer":"42"}',
    }


# --- Redaction of realistic secrets ------------------------------------------------------

OPENAI_KEY = "sk-proj-4fGh8JkL0mNpQrStUvWxYz12AbCdEfGh"
ANTHROPIC_KEY = "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFkYSJ9"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
GITHUB_TOKEN = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
PASSWORD = "correct-horse-battery-staple"
PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM2Lm\n"
    "-----END RSA PRIVATE KEY-----"
)
SECRETS = (OPENAI_KEY, ANTHROPIC_KEY, JWT, AWS_KEY_ID, GITHUB_TOKEN, PASSWORD, "MIIEpAIBAAKCAQEA")


def a_request_with_secrets() -> dict[str, Any]:
    return {
        "user": {"name": "Ada", "password": PASSWORD, "roles": ["admin"]},
        "headers": {"Authorization": f"Bearer {JWT}", "Accept": "application/json"},
        "llm": {"provider": "openai", "openai_api_key": OPENAI_KEY, "max_tokens": 256},
        "notes": [
            f"rotated ANTHROPIC_API_KEY={ANTHROPIC_KEY} yesterday",
            f"curl -H 'Authorization: Bearer {JWT}' https://api.example.com",
            f"aws configure set aws_access_key_id {AWS_KEY_ID}",
            f"git clone https://ada:{GITHUB_TOKEN}@github.com/ada/engine.git",
            f'login payload {{"username": "ada", "password": "{PASSWORD}"}}',
        ],
        "deploy_key": PRIVATE_KEY,
        "attachment": PRIVATE_KEY,
    }


def test_secrets_in_nested_values_never_leave_the_process(make_telemetry):
    telemetry = make_telemetry(capture="prep,exec,post,shared", capture_max_length=4096)

    class Call(pocketflow.Node):
        def prep(self, shared):
            return shared["request"]

        def exec(self, request):
            return {"echo": request, "cookie": "session=abc123; csrftoken=xyz"}

    Call().run({"request": a_request_with_secrets()})

    exported = everything_exported(telemetry)
    for secret in (*SECRETS, "abc123"):
        assert secret not in exported
    exec_result = json.loads(captured(telemetry.span("Call"))[semconv.NODE_EXEC_RESULT])
    assert exec_result == {
        "echo": {
            "user": {"name": "Ada", "password": REDACTED, "roles": ["admin"]},
            "headers": {"Authorization": REDACTED, "Accept": "application/json"},
            "llm": {"provider": "openai", "openai_api_key": REDACTED, "max_tokens": 256},
            "notes": [
                f"rotated ANTHROPIC_API_KEY={REDACTED} yesterday",
                f"curl -H 'Authorization: Bearer {REDACTED}' https://api.example.com",
                f"aws configure set aws_access_key_id {REDACTED}",
                f"git clone https://ada:{REDACTED}@github.com/ada/engine.git",
                f'login payload {{"username": "ada", "password": "{REDACTED}"}}',
            ],
            "deploy_key": REDACTED,
            "attachment": REDACTED,
        },
        "cookie": REDACTED,
    }


def test_user_patterns_redact_matching_text_and_keys(make_telemetry):
    telemetry = make_telemetry(
        capture="exec", redact_patterns=r"\b\d{3}-\d{2}-\d{4}\b,^ssn$,acct-[0-9]+"
    )

    class Lookup(pocketflow.Node):
        def exec(self, prep_res):
            return {"ssn": 123456789, "note": "SSN 078-05-1120 on acct-5521", "city": "Oslo"}

    Lookup().run({})

    assert json.loads(captured(telemetry.span("Lookup"))[semconv.NODE_EXEC_RESULT]) == {
        "ssn": REDACTED,
        "note": f"SSN {REDACTED} on {REDACTED}",
        "city": "Oslo",
    }


def test_batch_flow_parameters_are_redacted_and_bounded_even_without_capture(make_telemetry):
    telemetry = make_telemetry(capture_max_length=16)

    class Fetch(pocketflow.Node):
        pass

    class PerTenant(pocketflow.BatchFlow):
        def prep(self, shared):
            return [{"tenant": "acme", "api_key": OPENAI_KEY, "query": "x" * 100, "limit": 5}]

    PerTenant(start=Fetch()).run({})

    item = telemetry.span("PerTenant item")
    params = {
        key: value
        for key, value in item.attributes.items()
        if key.startswith(semconv.PARAMS_PREFIX)
    }
    assert params == {
        "reasonflow.params.tenant": "acme",
        "reasonflow.params.api_key": REDACTED,
        "reasonflow.params.query": "x" * 15 + "…",
        "reasonflow.params.limit": 5,
    }


# --- Serialization of any value ----------------------------------------------------------


@dataclass
class Config:
    model: str
    token: str


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __str__(self) -> str:
        raise RuntimeError("no str")


class Point:
    def __repr__(self) -> str:
        return "Point(1, 2)"


def cyclic() -> dict[str, Any]:
    value: dict[str, Any] = {"name": "loop"}
    value["self"] = value
    value["list"] = [value]
    return value


class Exploding(dict):
    def items(self):
        raise OSError("store is gone")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain text", "plain text"),
        (None, "null"),
        (True, "true"),
        (3, "3"),
        (2.5, "2.5"),
        ({"a": [1, (2, 3)], 4: None}, '{"a":[1,[2,3]],"4":null}'),
        ({"é": "ü"}, '{"é":"ü"}'),
        (b"\x00ab", "b'\\x00ab'"),
        ({"raw": b"ok"}, '{"raw":"b\'ok\'"}'),
        (Config("gpt", "t0k3n"), '{"model":"gpt","token":"[REDACTED]"}'),
        (Point(), "Point(1, 2)"),
        ([Point()], '["Point(1, 2)"]'),
        (Unprintable(), "<unrepresentable Unprintable>"),
        ({Unprintable(): 1}, '{"<unprintable Unprintable>":1}'),
        (cyclic(), '{"name":"loop","self":"<cycle>","list":["<cycle>"]}'),
        ({"store": Exploding(a=1)}, '{"store":"<unreadable Exploding>"}'),
        pytest.param(10**5000, '"<int of 16610 bits>"', id="int-too-long-to-print"),
    ],
)
def test_any_value_becomes_text_without_raising(value, text):
    assert Capture(Settings()).text(value) == text


def test_an_iterator_is_shown_never_consumed():
    numbers = iter([1, 2])
    assert Capture(Settings()).text(numbers).startswith("<list_iterator object at 0x")
    assert list(numbers) == [1, 2]


def test_huge_values_are_cut_to_the_limit():
    capture = Capture(load_settings({"capture_max_length": 40}, environ={}))
    assert capture.text("a" * 10_000_000) == "a" * 39 + "…"
    assert capture.text(list(range(10_000_000))) == "[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,…"
    assert capture.text(b"b" * 10_000_000) == "b'" + "b" * 37 + "…"
    nested: list[Any] = []
    for _ in range(10_000):
        nested = [nested]
    assert capture.text(nested) == "[" * 24 + '"…"' + "]" * 12 + "…"


def test_a_secret_across_the_cut_leaves_nothing_of_itself():
    capture = Capture(load_settings({"capture_max_length": 30}, environ={}))
    text = capture.text("x" * 20 + " " + OPENAI_KEY)
    assert text == "x" * 20 + " " + "[REDACTED]"[:8] + "…"
    assert "sk-" not in text


def test_a_malformed_redact_pattern_warns_and_keeps_the_default(caplog):
    with caplog.at_level(logging.WARNING, logger="reasonflow_otel.settings"):
        settings = load_settings(environ={"REASONFLOW_OTEL_REDACT_PATTERNS": "ok,(unclosed"})
    assert settings.redact_patterns == ()
    [record] = caplog.records
    assert "REASONFLOW_OTEL_REDACT_PATTERNS" in record.getMessage()
    assert "'(unclosed' is not a regular expression" in record.getMessage()
    assert "using the default" in record.getMessage()
