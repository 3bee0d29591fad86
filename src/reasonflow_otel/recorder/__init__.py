"""The engine-neutral recorder: the stable, public surface every engine adapter uses.

An adapter (``reasonflow_otel/instrumentation/<engine>.py``) knows its engine and
nothing about OpenTelemetry; it describes what runs and reports the edges of each
run here. Everything in ``__all__`` is public and kept stable; see
``docs/adapters.md`` for a walk-through.

- :class:`NodeInfo` describes a flow or node once (engine, name, class, kind,
  ``is_flow``, optional ``category``): the span name and attributes follow.
- :class:`Recorder` (built by ``EngineInstrumentor``) records runs:
  ``start(info, owner, ...) -> Run | None`` opens a span and makes it current;
  ``finish(run, error=..., action=..., successor=...)`` ends it and records the
  metrics; ``start_item(parent, params)`` opens a batch item; during a run,
  ``exec_started``/``exec_ended`` (phase boundaries), ``attempt_failed``,
  ``attempts_used``, ``fallback_used`` (retries), ``set_attributes`` and
  ``capture``/``capture_shared`` (opt-in payloads, see ``captured_phases``).
  None of them raises: a failure is logged once and the workflow carries on.
- :class:`Run` is one run in progress (``info``, ``owner``, ``parent``,
  ``attempts``, ``next_item_index``, ``batch_size``); :func:`current_run` is the
  innermost one.
- :class:`FlowGraph` and :class:`GraphNode` describe a flow's static graph.
- :class:`BoundedCache` is the dict an adapter caches per-name descriptions in:
  names can come from data (an order id), so every such cache is bounded.
- :func:`traced_generator` and :func:`traced_async_generator` make a run started
  with ``attach=False`` cover a generator's whole iteration.
"""

from reasonflow_otel.recorder.bounded import BoundedCache
from reasonflow_otel.recorder.core import (
    FlowGraph,
    GraphNode,
    NodeInfo,
    Recorder,
    Run,
    current_run,
)
from reasonflow_otel.recorder.iteration import (
    TracedAsyncStepIterator,
    TracedStepIterator,
    current,
    traced_async_generator,
    traced_generator,
)

__all__ = [
    "BoundedCache",
    "FlowGraph",
    "GraphNode",
    "NodeInfo",
    "Recorder",
    "Run",
    "TracedAsyncStepIterator",
    "TracedStepIterator",
    "current",
    "current_run",
    "traced_async_generator",
    "traced_generator",
]
