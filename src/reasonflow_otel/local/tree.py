"""One trace as an indented tree of its spans, with each node's retries and logs under it.

Shared by the console tree (printed as each trace ends) and ``reasonflow-otel show``::

    invoke_workflow TriageFlow ✓ 5.12 ms
    ├─ LoadInbox ✓ 0.21 ms → default
    ├─ PageOnCall ✓ 1.04 ms → default · 1 retry
    │    attempt 1 failed: PagerTimeoutError: pager gateway timed out
    │    WARN paging the on-call engineer
    └─ Summarize ✗ 0.30 ms · error: KeyError: 'incident'
    TriageFlow: 5.12 ms total, 3 nodes run, 1 failed

Box-drawing characters and marks fall back to ASCII when the stream cannot encode them;
colour is used only on a terminal (and never with ``NO_COLOR`` set).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from reasonflow_otel import semconv
from reasonflow_otel.local.store import LogLine, SpanRecord
from reasonflow_otel.local.text import format_duration, plural

# A node with more than twice this many batch items shows its first ITEMS_SHOWN items and the
# eventful ones (failed, retried, fell back); the rest are folded into one line.
ITEMS_SHOWN = 5
# A batch-flow parameter set shows its params, cut to this many characters.
PARAMS_SHOWN_LENGTH = 60
_RETRY_EVENTS = {semconv.EVENT_RETRY: "failed", semconv.EVENT_FALLBACK: "failed, fallback used"}


# --- Building -----------------------------------------------------------------------------------


@dataclass
class TreeNode:
    span: SpanRecord
    children: list[TreeNode] = field(default_factory=list)
    logs: list[LogLine] = field(default_factory=list)


def build_tree(spans: Iterable[SpanRecord], logs: Iterable[LogLine] = ()) -> list[TreeNode]:
    """The roots of one trace (spans whose parent is not in it), children in start order.

    A log goes under the span that was current when it was emitted, or under the first root
    if that span is not in the trace.
    """
    nodes = {span.span_id: TreeNode(span) for span in spans}
    roots: list[TreeNode] = []
    for node in sorted(nodes.values(), key=lambda node: node.span.start_ns):
        parent = nodes.get(node.span.parent_id)
        (parent.children if parent is not None else roots).append(node)
    for log in sorted(logs, key=lambda log: log.time_ns):
        owner = nodes.get(log.span_id) or (roots[0] if roots else None)
        if owner is not None:
            owner.logs.append(log)
    return roots


# --- Styles -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """Glyphs and colours for one output stream."""

    tee: str = "├─ "
    corner: str = "└─ "
    pipe: str = "│  "
    ok: str = "✓"
    failed: str = "✗"
    arrow: str = "→"
    dot: str = "·"
    ellipsis: str = "…"
    colour: bool = False

    def paint(self, text: str, colour: str) -> str:
        return f"{_COLOURS[colour]}{text}\033[0m" if self.colour else text

    @classmethod
    def for_stream(cls, stream: TextIO) -> Style:
        """Colour on a terminal only; ASCII glyphs if the stream cannot encode ours."""
        colour = _is_terminal(stream) and "NO_COLOR" not in os.environ
        glyphs = {} if _can_encode(stream, _UNICODE_GLYPHS) else ASCII_GLYPHS
        return cls(**glyphs, colour=colour)


ASCII_GLYPHS = {
    "tee": "|- ",
    "corner": "`- ",
    "pipe": "|  ",
    "ok": "ok",
    "failed": "FAILED",
    "arrow": "->",
    "dot": "-",
    "ellipsis": "...",
}
UNICODE_STYLE = Style()
_UNICODE_GLYPHS = "├└│✓✗→·…"
_COLOURS = {"green": "\033[32m", "red": "\033[31m", "yellow": "\033[33m", "dim": "\033[2m"}
_SEVERITY_COLOURS = {"WARN": "yellow", "ERROR": "red", "FATAL": "red"}


def _can_encode(stream: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


# --- Rendering ----------------------------------------------------------------------------------


def render_trace(roots: Sequence[TreeNode], style: Style = UNICODE_STYLE) -> list[str]:
    """The tree's lines, then one summary line per root."""
    lines: list[str] = []
    for root in roots:
        lines.extend(_render(root, "", "", style))
    lines.extend(summary_line(root, style) for root in roots)
    return lines


def _render(node: TreeNode, head: str, indent: str, style: Style) -> Iterator[str]:
    """``head`` goes before this span's line, ``indent`` before everything under it."""
    yield head + span_line(node.span, style)
    shown, folded = _visible_children(node.children)
    detail_indent = indent + (style.pipe[:2] if shown or folded else "  ")
    for detail in _details(node, style):
        yield detail_indent + detail
    for index, child in enumerate(shown):
        last = index == len(shown) - 1 and not folded
        yield from _render(
            child,
            indent + (style.corner if last else style.tee),
            indent + ("   " if last else style.pipe),
            style,
        )
    if folded:
        more = style.paint(f"{style.ellipsis} {folded} more items", "dim")
        yield indent + style.corner + more


def _visible_children(children: list[TreeNode]) -> tuple[list[TreeNode], int]:
    """Children to draw and how many batch items are folded away.

    Items that failed, retried or fell back are never folded.
    """
    items = [child for child in children if semconv.BATCH_INDEX in child.span.attributes]
    if len(items) <= 2 * ITEMS_SHOWN:
        return children, 0
    folded = {id(item) for item in items[ITEMS_SHOWN:] if _uneventful(item.span)}
    return [child for child in children if id(child) not in folded], len(folded)


def _uneventful(span: SpanRecord) -> bool:
    return not span.failed and not span.events and not span.attributes.get(semconv.NODE_FALLBACK)


def span_line(span: SpanRecord, style: Style) -> str:
    """``Name ✓ 1.20 ms → action · 2 retries · fallback · error: ...``."""
    attributes = span.attributes
    mark = style.paint(style.failed, "red") if span.failed else style.paint(style.ok, "green")
    name = span.name
    if semconv.BATCH_INDEX in attributes:
        name = f"{name} #{attributes[semconv.BATCH_INDEX]}{_params_text(span, style)}"
    text = f"{name} {mark} {style.paint(format_duration(span.duration), 'dim')}"
    action = attributes.get(semconv.NODE_ACTION)
    if action is not None:
        text += f" {style.arrow} {action}"
    notes = _notes(span)
    if span.failed:
        notes.append(style.paint(f"error: {error_text(span)}", "red"))
    return " ".join([text, *(f"{style.dot} {note}" for note in notes)])


def _notes(span: SpanRecord) -> list[str]:
    notes = []
    retries = sum(1 for event in span.events if event.name == semconv.EVENT_RETRY)
    if retries:
        notes.append(plural(retries, "retry", "retries"))
    if span.attributes.get(semconv.NODE_FALLBACK):
        notes.append("fallback")
    if span.attributes.get(semconv.INTERRUPTED):
        notes.append("interrupted")
    for event in span.events:
        if event.name == semconv.EVENT_ROUTING_MISS:
            available = ", ".join(event.attributes.get(semconv.NODE_AVAILABLE_ACTIONS, ()))
            action = event.attributes.get(semconv.NODE_ACTION)
            notes.append(f"no route for '{action}' (has: {available})")
    return notes


def _params_text(span: SpanRecord, style: Style) -> str:
    """`` (doc=a.md, lang=de)`` for a parameter set, bounded; empty when it has none."""
    params = [
        f"{key.removeprefix(semconv.PARAMS_PREFIX)}={value}"
        for key, value in span.attributes.items()
        if key.startswith(semconv.PARAMS_PREFIX)
    ]
    text = ", ".join(params)
    if len(text) > PARAMS_SHOWN_LENGTH:
        text = text[: PARAMS_SHOWN_LENGTH - 1] + style.ellipsis
    return f" ({text})" if text else ""


def error_text(span: SpanRecord) -> str:
    """``Type: message`` from the span status, else its ``error.type``."""
    return span.status_message or str(span.attributes.get(semconv.ERROR_TYPE, "failed"))


def _details(node: TreeNode, style: Style) -> Iterator[str]:
    """Failed attempts, then the logs emitted while the span was current."""
    for event in node.span.events:
        outcome = _RETRY_EVENTS.get(event.name)
        if outcome is not None:
            yield (
                f"attempt {event.attributes.get(semconv.ATTEMPT, '?')} {outcome}: "
                f"{event.attributes.get(semconv.ERROR_TYPE, '')}: "
                f"{event.attributes.get(semconv.EXCEPTION_MESSAGE, '')}"
            )
    for log in node.logs:
        severity = style.paint(log.severity, _SEVERITY_COLOURS.get(log.severity, "dim"))
        yield f"{severity} {_first_line(log.body, style)}"


def _first_line(text: str, style: Style) -> str:
    first, newline, _ = text.partition("\n")
    return f"{first} {style.ellipsis}" if newline else first


def summary_line(root: TreeNode, style: Style = UNICODE_STYLE) -> str:
    """``Flow: 1.20 s total, 5 nodes run, 1 failed``."""
    nodes = [node.span for node in _descendants(root) if semconv.NODE_KIND in node.span.attributes]
    failed = sum(1 for span in nodes if span.failed)
    failures = style.paint(f"{failed} failed", "red") if failed else "0 failed"
    return (
        f"{root_label(root.span)}: {format_duration(root.span.duration)} total, "
        f"{plural(len(nodes), 'node')} run, {failures}"
    )


def _descendants(node: TreeNode) -> Iterator[TreeNode]:
    for child in node.children:
        yield child
        yield from _descendants(child)


def root_label(span: SpanRecord) -> str:
    """A flow's name for a flow span, the span name otherwise."""
    return span.flow_name or span.name
