"""The engine-neutral recorder: the surface every engine adapter uses."""

from reasonflow_otel.recorder.core import (
    FlowGraph,
    GraphNode,
    NodeInfo,
    Recorder,
    Run,
    current_run,
)

__all__ = ["FlowGraph", "GraphNode", "NodeInfo", "Recorder", "Run", "current_run"]
