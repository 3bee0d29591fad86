"""Every span name, attribute, event and metric name reasonflow-otel emits.

OpenTelemetry semantic conventions come first (``gen_ai.*``, ``error.type``);
what they do not cover lives under the engine-neutral ``reasonflow.`` prefix.
The README's telemetry tables are written from this module.
"""

from __future__ import annotations

from typing import Final

# --- Span names -------------------------------------------------------------
OPERATION_INVOKE_WORKFLOW: Final = "invoke_workflow"


def flow_span_name(flow_name: str) -> str:
    """`invoke_workflow {FlowName}`, the GenAI convention for a workflow run."""
    return f"{OPERATION_INVOKE_WORKFLOW} {flow_name}"


# --- OpenTelemetry semantic convention attributes -----------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
ERROR_TYPE: Final = "error.type"
EXCEPTION_MESSAGE: Final = "exception.message"

# --- reasonflow.* attributes (span) -------------------------------------------
ENGINE: Final = "reasonflow.engine"
NODE_NAME: Final = "reasonflow.node.name"
NODE_CLASS: Final = "reasonflow.node.class"
NODE_KIND: Final = "reasonflow.node.kind"
NODE_ID: Final = "reasonflow.node.id"
NODE_ACTION: Final = "reasonflow.node.action"
NODE_SUCCESSOR: Final = "reasonflow.node.successor"
NODE_ATTEMPTS: Final = "reasonflow.node.attempts"
NODE_MAX_RETRIES: Final = "reasonflow.node.max_retries"
NODE_FALLBACK: Final = "reasonflow.node.fallback"
NODE_PREP_DURATION: Final = "reasonflow.node.prep.duration"
NODE_EXEC_DURATION: Final = "reasonflow.node.exec.duration"
NODE_POST_DURATION: Final = "reasonflow.node.post.duration"
NODE_CPU_TIME: Final = "reasonflow.node.cpu_time"
NODE_MEMORY_GROWTH: Final = "reasonflow.node.memory.growth"
BATCH_SIZE: Final = "reasonflow.batch.size"
BATCH_INDEX: Final = "reasonflow.batch.index"
FLOW_GRAPH: Final = "reasonflow.flow.graph"
PARAMS_PREFIX: Final = "reasonflow.params."
CANCELLED: Final = "reasonflow.cancelled"

# The value of NODE_SUCCESSOR when the flow ends after this node.
SUCCESSOR_END: Final = "__end__"

# --- Span events ----------------------------------------------------------------
EVENT_RETRY: Final = "reasonflow.retry"
EVENT_FALLBACK: Final = "reasonflow.fallback"
ATTEMPT: Final = "reasonflow.attempt"

# --- Phase child spans (opt-in) --------------------------------------------------
PHASES: Final = ("prep", "exec", "post")

# --- Metrics ----------------------------------------------------------------------
METRIC_FLOW_DURATION: Final = "reasonflow.flow.duration"
METRIC_NODE_DURATION: Final = "reasonflow.node.duration"
METRIC_NODE_RETRIES: Final = "reasonflow.node.retries"
METRIC_NODE_FALLBACKS: Final = "reasonflow.node.fallbacks"
METRIC_NODE_ACTIVE: Final = "reasonflow.node.active"
METRIC_NODE_CPU_TIME: Final = "reasonflow.node.cpu_time"
METRIC_NODE_MEMORY_GROWTH: Final = "reasonflow.node.memory.growth"

# Attributes a metric point may carry: low cardinality only, never ids or payloads.
METRIC_ATTRIBUTES: Final = frozenset({ENGINE, GEN_AI_WORKFLOW_NAME, NODE_NAME, ERROR_TYPE})
