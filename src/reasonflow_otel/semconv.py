"""Every span name, attribute, event and metric name reasonflow-otel emits.

OpenTelemetry semantic conventions come first (``gen_ai.*``, ``error.type``);
what they do not cover lives under the engine-neutral ``reasonflow.`` prefix.
docs/telemetry.md is written from this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

# The instrumentation scope of every metric we record (one meter for every engine).
METER_SCOPE: Final = "reasonflow_otel"

# --- Span names -------------------------------------------------------------
OPERATION_INVOKE_WORKFLOW: Final = "invoke_workflow"


def phase_duration(phase: str) -> str:
    """``reasonflow.node.{phase}.duration``: how long one phase of a node run took."""
    return f"reasonflow.node.{phase}.duration"


def flow_span_name(flow_name: str) -> str:
    """`invoke_workflow {FlowName}`, the GenAI convention for a workflow run."""
    return f"{OPERATION_INVOKE_WORKFLOW} {flow_name}"


# --- OpenTelemetry semantic convention attributes -----------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
# The conversation (LangGraph: the run config's ``configurable.thread_id``).
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
ERROR_TYPE: Final = "error.type"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_TYPE: Final = "exception.type"

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
# With the opt-in psutil probe: the process's disk I/O and open descriptors during the node.
NODE_DISK_READ: Final = "reasonflow.node.disk.read"
NODE_DISK_WRITE: Final = "reasonflow.node.disk.write"
NODE_OPEN_FDS_CHANGE: Final = "reasonflow.node.open_fds.change"
BATCH_SIZE: Final = "reasonflow.batch.size"
BATCH_INDEX: Final = "reasonflow.batch.index"
FLOW_GRAPH: Final = "reasonflow.flow.graph"
PARAMS_PREFIX: Final = "reasonflow.params."
CANCELLED: Final = "reasonflow.cancelled"
# A run stopped by an engine's interrupt (LangGraph's ``interrupt()``): not an error.
INTERRUPTED: Final = "reasonflow.interrupted"
# A routing miss: the node returned an action it has no successor for (the flow ends).
NODE_ROUTING_MISS: Final = "reasonflow.node.routing_miss"
NODE_AVAILABLE_ACTIONS: Final = "reasonflow.node.available_actions"
# A LangGraph node handed a ``Command`` to its parent graph (``Command.PARENT``): no error.
COMMAND_TO_PARENT: Final = "reasonflow.command_to_parent"
# Opt-in payloads (Settings.capture), redacted and bounded. No GenAI convention
# fits: gen_ai.input/output.messages are chat messages, not arbitrary values.
NODE_PREP_RESULT: Final = "reasonflow.node.prep.result"
NODE_EXEC_RESULT: Final = "reasonflow.node.exec.result"
NODE_POST_RESULT: Final = "reasonflow.node.post.result"
SHARED_BEFORE: Final = "reasonflow.shared.before"
SHARED_AFTER: Final = "reasonflow.shared.after"

# The value of NODE_SUCCESSOR when the flow ends after this node.
SUCCESSOR_END: Final = "__end__"

# --- Span events ----------------------------------------------------------------
EVENT_EXCEPTION: Final = "exception"
EVENT_RETRY: Final = "reasonflow.retry"
EVENT_FALLBACK: Final = "reasonflow.fallback"
ATTEMPT: Final = "reasonflow.attempt"
EVENT_ROUTING_MISS: Final = "reasonflow.routing_miss"
# The fallback raised: the last attempt's error, which the run's exception replaced.
EVENT_FALLBACK_FAILED: Final = "reasonflow.fallback_failed"

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
# Spans our batch processors could not deliver, by error.type and otel.component.name.
METRIC_SPANS_DROPPED: Final = "reasonflow.spans.dropped"
OTEL_COMPONENT_NAME: Final = "otel.component.name"

# Attributes a metric point may carry: low cardinality only, never ids or payloads.
# A user-given grouping of flows and nodes (e.g. ``ai_provider``), kept few by design.
CATEGORY: Final = "reasonflow.category"
# The one attribute of a metric's overflow series (the specification's cardinality limit).
SERIES_OVERFLOW: Final = "otel.metric.overflow"
METRIC_ATTRIBUTES: Final = frozenset(
    {ENGINE, GEN_AI_WORKFLOW_NAME, NODE_NAME, ERROR_TYPE, CATEGORY, SERIES_OVERFLOW}
)

# --- Process metrics (opentelemetry-instrumentation-system-metrics) ------------------
# The curated set started by default; the instruments are the contrib's, never ours.
METRIC_PROCESS_CPU_TIME: Final = "process.cpu.time"
METRIC_PROCESS_CPU_UTILIZATION: Final = "process.cpu.utilization"
METRIC_PROCESS_MEMORY_USAGE: Final = "process.memory.usage"
METRIC_PROCESS_THREAD_COUNT: Final = "process.thread.count"
METRIC_PROCESS_OPEN_FDS: Final = "process.open_file_descriptor.count"
METRIC_GC_COLLECTIONS: Final = "cpython.gc.collections"
METRIC_GC_COLLECTED_OBJECTS: Final = "cpython.gc.collected_objects"
METRIC_GC_UNCOLLECTABLE_OBJECTS: Final = "cpython.gc.uncollectable_objects"
# The one attribute kept on the GC metrics (the contrib also sends a deprecated copy).
CPYTHON_GC_GENERATION: Final = "cpython.gc.generation"

# --- Engine-neutral callables (by name, decorators, step) ------------------------------
# The reasonflow.engine value of functions traced by name or by decorator.
ENGINE_PYTHON: Final = "python"

# --- GenAI conventions, opt-in (OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental) --
# Development status in open-telemetry/semantic-conventions-genai; not imported from the
# deprecated incubating constants. Node spans follow the invoke_node proposal.
SEMCONV_OPT_IN_VARIABLE: Final = "OTEL_SEMCONV_STABILITY_OPT_IN"
SEMCONV_GEN_AI_LATEST: Final = "gen_ai_latest_experimental"
OPERATION_INVOKE_NODE: Final = "invoke_node"
GEN_AI_NODE_NAME: Final = "gen_ai.node.name"
METRIC_GEN_AI_INVOKE_WORKFLOW_DURATION: Final = "gen_ai.invoke_workflow.duration"


def gen_ai_latest_experimental(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``OTEL_SEMCONV_STABILITY_OPT_IN`` asks for the latest GenAI conventions."""
    value = (os.environ if environ is None else environ).get(SEMCONV_OPT_IN_VARIABLE, "")
    return SEMCONV_GEN_AI_LATEST in (part.strip() for part in value.split(","))


def node_span_name(node_name: str) -> str:
    """`invoke_node {NodeName}`, the proposed GenAI name for a node run (opt-in only)."""
    return f"{OPERATION_INVOKE_NODE} {node_name}"


# --- Applications and steps with ids and explicit state (Burr) -------------------------
APP_ID: Final = "reasonflow.app.id"
# The partition key (often a user id): omitted, hashed (SHA-256 hex) or, if allowed, as is.
APP_PARTITION_KEY: Final = "reasonflow.app.partition_key"
APP_PARTITION_KEY_HASH: Final = "reasonflow.app.partition_key.sha256"
NODE_SEQUENCE_ID: Final = "reasonflow.node.sequence_id"
NODE_READS: Final = "reasonflow.node.reads"
NODE_WRITES: Final = "reasonflow.node.writes"
# A span opened by user code inside a node (Burr's __tracer / @trace): not a node itself.
SPAN_KIND_USER: Final = "reasonflow.span.user"
# Opt-in (Settings.capture "state"): the state after a step, or a run's state at its start and end.
STATE_BEFORE: Final = "reasonflow.state.before"
STATE_AFTER: Final = "reasonflow.state.after"
# GenAI execution convention: a step changed the state.
EVENT_STATE_CHANGED: Final = "gen_ai.execution.state.changed"
STATE_CHANGED_COUNT: Final = "reasonflow.state.changed.count"
STATE_CHANGED_KEYS: Final = "reasonflow.state.changed.keys"  # opt-in: Settings.state_key_names
