"""The engine-neutral recorder: the surface every engine adapter uses."""

from reasonflow_otel.recorder.core import (
    FlowGraph,
    GraphNode,
    NodeInfo,
    Recorder,
    Run,
    current_run,
)
from reasonflow_otel.recorder.iteration import traced_async_generator, traced_generator

__all__ = [
    "FlowGraph",
    "GraphNode",
    "NodeInfo",
    "Recorder",
    "Run",
    "current_run",
    "traced_async_generator",
    "traced_generator",
]
