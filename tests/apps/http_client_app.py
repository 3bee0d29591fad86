"""A PocketFlow app whose node calls a local HTTP server with requests and httpx, and opens an
LLM-client span with the API's tracer, as an LLM SDK's instrumentation would.

Run by tests/test_coexistence.py: ``python http_client_app.py URL instrument`` sets up through
``reasonflow_otel.instrument()`` (and the HTTP clients' instrumentors, as an app does);
``opentelemetry-instrument python http_client_app.py URL auto`` leaves it all to the
entry points. Spans go to the local trace file.
"""

from __future__ import annotations

import sys

import httpx
import pocketflow
import requests
from opentelemetry import trace
from opentelemetry.trace import SpanKind

URL, MODE = sys.argv[1], sys.argv[2]

if MODE == "instrument":
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    import reasonflow_otel

    reasonflow_otel.instrument(service_name="http-client-app")
    RequestsInstrumentor().instrument()
    HTTPXClientInstrumentor().instrument()


class FetchOrder(pocketflow.Node):
    def exec(self, _: None) -> str:
        return requests.get(f"{URL}/requests", timeout=10).text


class FetchCustomer(pocketflow.Node):
    def exec(self, _: None) -> str:
        return httpx.get(f"{URL}/httpx", timeout=10).text


class Draft(pocketflow.Node):
    def exec(self, _: None) -> str:
        tracer = trace.get_tracer("llm-client")
        with tracer.start_as_current_span("chat stand-in-model", kind=SpanKind.CLIENT) as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            return "a draft"


class Orders(pocketflow.Flow):
    pass


fetch_order, fetch_customer, draft = FetchOrder(), FetchCustomer(), Draft()
fetch_order >> fetch_customer >> draft
Orders(start=fetch_order).run({})
print("done")
