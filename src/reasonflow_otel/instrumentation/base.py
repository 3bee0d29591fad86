"""What every engine instrumentor shares, so an engine adapter only maps engine calls.

An engine instrumentor subclasses :class:`EngineInstrumentor` and implements
``_wrap(recorder)`` and ``_unwrap()``; settings, the tracer and meter on the
providers passed to ``instrument()``, the recorder, and thread context
propagation are done here once for all engines. Spans carry the adapter's
module as their instrumentation scope; metrics share one scope, so engines
instrumented side by side record into the same instruments.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from reasonflow_otel import semconv
from reasonflow_otel.instrumentation import threads
from reasonflow_otel.recorder import Recorder, fast_paths
from reasonflow_otel.sdk.workers import top_level_run_ended
from reasonflow_otel.settings import Settings, load_settings
from reasonflow_otel.version import __version__

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
METER_SCOPE = semconv.METER_SCOPE


class EngineInstrumentor(BaseInstrumentor, ABC):
    """``instrument(tracer_provider=..., meter_provider=..., settings=...)``.

    With no providers the global ones are used; with no settings they are read
    from the environment.
    """

    def _instrument(self, **kwargs: Any) -> None:
        settings: Settings = kwargs.get("settings") or load_settings()
        scope = type(self).__module__
        tracer = trace.get_tracer(
            scope, __version__, kwargs.get("tracer_provider"), schema_url=SCHEMA_URL
        )
        # One meter for every engine: the instruments are the same, the engine is an attribute.
        meter = metrics.get_meter(METER_SCOPE, __version__, kwargs.get("meter_provider"))
        recorder = Recorder(
            tracer,
            meter,
            settings,
            fast_paths=fast_paths,  # the SDK's fast paths, isolated in one package
            top_level_run_ended=top_level_run_ended,
        )
        self._wrap(recorder)
        threads.hold()

    def _uninstrument(self, **kwargs: Any) -> None:
        self._unwrap()
        threads.release()

    @abstractmethod
    def _wrap(self, recorder: Recorder) -> None:
        """Install the engine's wrappers, each reporting to ``recorder``."""

    @abstractmethod
    def _unwrap(self) -> None:
        """Remove every wrapper ``_wrap`` installed, restoring the originals exactly."""
