"""Entry points for ``opentelemetry-instrument``: the distro and the configurator.

``opentelemetry-instrument`` loads one distro and one configurator. With the
upstream ``opentelemetry-distro`` package also installed, choose ours with
``OTEL_PYTHON_DISTRO=reasonflow`` (the distro then defaults
``OTEL_PYTHON_CONFIGURATOR`` to ``reasonflow`` too).
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro
from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_CONFIGURATOR
from opentelemetry.sdk._configuration import _BaseConfigurator

from reasonflow_otel.local.sdk_parts import sdk_parts
from reasonflow_otel.sdk import process_metrics
from reasonflow_otel.sdk.setup import start_telemetry
from reasonflow_otel.settings import load_settings


class ReasonflowDistro(BaseDistro):
    """Selects our configurator; instrumentors are found by their entry points."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault(OTEL_PYTHON_CONFIGURATOR, "reasonflow")

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        """Instrument once; the contrib's system-metrics entry point starts our curated set."""
        if entry_point.name == process_metrics.ENTRY_POINT:
            process_metrics.start_process_metrics(load_settings())
            return
        instrumentor = entry_point.load()()
        if instrumentor.is_instrumented_by_opentelemetry:
            return  # threading, brought along by an engine instrumentor loaded before it
        # One distribution ships several engines' instrumentors, so the loader's check of
        # the distribution says nothing about this one's engine: check it here, and let
        # the loader skip a missing engine quietly, as it does for contrib packages.
        kwargs.pop("skip_dep_check", None)
        instrumentor.instrument(raise_exception_on_conflict=True, **kwargs)


class ReasonflowConfigurator(_BaseConfigurator):
    """The same SDK setup as ``reasonflow_otel.instrument()``, from the environment."""

    def _configure(self, **kwargs: Any) -> None:
        start_telemetry(load_settings(), parts=sdk_parts())
