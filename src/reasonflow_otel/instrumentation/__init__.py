"""Our instrumentors, by their entry-point names, and what each needs installed.

An instrumentor's own ``instrumentation_dependencies()`` says which engine it
instruments (none for by-name tracing and the decorators): ``instrument()``, the
distro and ``reasonflow-otel doctor`` all decide from that one declaration.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from packaging.requirements import Requirement

# Entry-point name (as in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS) -> its instrumentor.
ENGINES = {
    "pocketflow": "reasonflow_otel.instrumentation.pocketflow:PocketFlowInstrumentor",
    "burr": "reasonflow_otel.instrumentation.burr:BurrInstrumentor",
    "langgraph": "reasonflow_otel.instrumentation.langgraph:LangGraphInstrumentor",
    "reasonflow_methods": "reasonflow_otel.instrumentation.methods:MethodsInstrumentor",
}


def engine_instrumentor(name: str) -> BaseInstrumentor:
    """The instrumentor registered under ``name`` (importing it imports no engine)."""
    module_name, _, class_name = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


def engine_distribution(instrumentor: BaseInstrumentor) -> str | None:
    """The distribution it instruments (burr: ``apache-burr``), or None if it needs none."""
    dependencies = instrumentor.instrumentation_dependencies()
    return Requirement(next(iter(dependencies))).name if dependencies else None


def engine_version(instrumentor: BaseInstrumentor) -> str | None:
    """The installed version of its engine ("" when it needs none); None if not installed."""
    distribution = engine_distribution(instrumentor)
    if distribution is None:
        return ""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None
