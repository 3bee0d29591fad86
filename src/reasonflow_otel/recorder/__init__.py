"""The engine-neutral recorder: the stable, public surface every engine adapter uses.

An adapter (``reasonflow_otel/instrumentation/<engine>.py``) knows its engine and
nothing about OpenTelemetry: it describes what runs (:class:`NodeInfo`,
:class:`FlowGraph`), wraps the engine's calls with :func:`wrap` (or
:func:`bracket`), begins a :class:`Run` with ``Recorder.begin`` and reports on
it (``end``, ``fail``, ``attempt``, ``add_event``, ``set_attributes``, ``link``,
``capture``); per-name descriptions go in a :class:`BoundedCache`. Everything
in ``__all__`` is public and kept stable; nothing else under
``reasonflow_otel.recorder`` is. ``docs/adapters.md`` documents each name.

- ``model``: what runs and a run in progress; ``lifecycle``: the ``Recorder``;
  ``errors``: failures and declared control flow; ``wrapping``: the wrapper;
  ``histograms``, ``spans``: points and spans through the API's calls;
  ``fast_paths``: the one SDK-specific package (fast paths handed to the recorder).
"""

from reasonflow_otel.recorder.bounded import BoundedCache
from reasonflow_otel.recorder.lifecycle import Recorder
from reasonflow_otel.recorder.model import FlowGraph, GraphNode, NodeInfo, Run, current_run
from reasonflow_otel.recorder.wrapping import bracket, unwrap, wrap

__all__ = [
    "BoundedCache",
    "FlowGraph",
    "GraphNode",
    "NodeInfo",
    "Recorder",
    "Run",
    "bracket",
    "current_run",
    "unwrap",
    "wrap",
]
