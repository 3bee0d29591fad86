"""Trace sampling: decided once per trace, by trace id, at the root.

``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` are honoured; the default
is ``parentbased_traceidratio`` with ratio 1.0, so every process that sees the
same trace id makes the same decision and children follow their parent.
"""

from __future__ import annotations

import os

from opentelemetry.sdk._configuration import _import_sampler
from opentelemetry.sdk.environment_variables import OTEL_TRACES_SAMPLER
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

from reasonflow_otel.settings import Settings


def build_sampler(settings: Settings) -> Sampler:
    name = os.environ.get(OTEL_TRACES_SAMPLER, "").strip()
    configured = _import_sampler(name) if name else None
    return configured or ParentBased(TraceIdRatioBased(1.0))
