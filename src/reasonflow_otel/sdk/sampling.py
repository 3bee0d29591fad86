"""Trace sampling: decided once per trace, by trace id, at the root.

``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` are honoured; the default
is ``parentbased_traceidratio`` with ratio 1.0. A ratio decision depends only on
the trace id, so every process that sees the same trace makes the same one, and
children follow their parent (a remote parent's decision included).

``REASONFLOW_OTEL_SAMPLING_RATIOS`` gives some flows a ratio of their own
(``Chatty=0.01,Rare=1``). It decides the root span of a listed flow, which the
sampler recognises by its ``gen_ai.workflow.name`` start attribute; every span
below a root then inherits the root's decision, so a trace is kept whole or not
at all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk._configuration import _import_sampler_factory
from opentelemetry.sdk.environment_variables import OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG
from opentelemetry.sdk.trace.sampling import (
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, TraceState

from reasonflow_otel import semconv
from reasonflow_otel.settings import SettingError, Settings, parse_ratio

_logger = logging.getLogger(__name__)

DEFAULT_SAMPLER_NAME = "parentbased_traceidratio"
DEFAULT_RATIO = 1.0
# Samplers whose OTEL_TRACES_SAMPLER_ARG is a ratio from 0 to 1.
_RATIO_SAMPLERS = frozenset({"traceidratio", "parentbased_traceidratio"})


def build_sampler(settings: Settings) -> Sampler:
    """The configured sampler; with per-flow ratios, listed flows decide their own roots."""
    configured = configured_sampler()
    if not settings.sampling_ratios:
        return configured
    return ParentBased(FlowRatioSampler(settings.sampling_ratios, configured))


def _default_sampler() -> Sampler:
    return ParentBased(TraceIdRatioBased(DEFAULT_RATIO))


def configured_sampler() -> Sampler:
    """The sampler ``OTEL_TRACES_SAMPLER`` names, or the default (with one warning if unknown)."""
    name = os.environ.get(OTEL_TRACES_SAMPLER, "").strip().lower()
    if not name:
        return _default_sampler()
    argument = (
        _ratio_argument() if name in _RATIO_SAMPLERS else os.environ.get(OTEL_TRACES_SAMPLER_ARG)
    )
    try:
        sampler = _import_sampler_factory(name)(argument)
        if not isinstance(sampler, Sampler):
            raise TypeError(f"its factory returned {type(sampler).__name__}, not a Sampler")
        return sampler
    except Exception as error:  # unknown name, broken plugin, argument it refuses
        _logger.warning(
            "reasonflow-otel: ignoring %s=%r (%s); using the default %s with ratio %s",
            OTEL_TRACES_SAMPLER,
            name,
            error,
            DEFAULT_SAMPLER_NAME,
            DEFAULT_RATIO,
        )
        return _default_sampler()


def _ratio_argument() -> float:
    """``OTEL_TRACES_SAMPLER_ARG`` as a ratio; absent means 1.0, malformed warns once."""
    text = os.environ.get(OTEL_TRACES_SAMPLER_ARG, "").strip()
    if not text:
        return DEFAULT_RATIO
    try:
        return parse_ratio(text)
    except SettingError as error:
        _logger.warning(
            "reasonflow-otel: ignoring %s=%r (%s); using the ratio %s",
            OTEL_TRACES_SAMPLER_ARG,
            text,
            error,
            DEFAULT_RATIO,
        )
        return DEFAULT_RATIO


class FlowRatioSampler(Sampler):
    """Samples the root span of a listed flow by the flow's ratio, any other root by ``fallback``.

    Meant as the root sampler of a ``ParentBased``: it is asked only about spans
    without a parent, and those of a flow carry the flow's name as a start attribute.
    """

    def __init__(self, ratios: Mapping[str, float], fallback: Sampler) -> None:
        self._ratio_samplers = {flow: TraceIdRatioBased(ratio) for flow, ratio in ratios.items()}
        self._fallback = fallback

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        flow = (attributes or {}).get(semconv.GEN_AI_WORKFLOW_NAME)
        sampler = self._ratio_samplers.get(flow) if isinstance(flow, str) else None
        return (sampler or self._fallback).should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        ratios = ",".join(f"{flow}:{s.rate}" for flow, s in self._ratio_samplers.items())
        return f"FlowRatio{{{ratios};other:{self._fallback.get_description()}}}"
