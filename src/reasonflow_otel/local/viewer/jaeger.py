"""``reasonflow-otel ui --jaeger URL``: the viewer over the traces Jaeger keeps.

Jaeger v2's query service answers ``/api/v3/...`` in OTLP/JSON with hex ids: the format of the
local trace file, so its spans are decoded by the store's own reader and listed, drawn and
analysed by the same code. The listing and the analytics cover the latest traces of every
service Jaeger knows (up to :data:`TRACES_PER_SERVICE` each, from the last
:data:`LOOKBACK`), fetched again in the background at most every :data:`REFRESH_SECONDS`;
a trace is read from Jaeger whole when it is opened, so it is always complete. Jaeger keeps
no log records: the run page shows span events only.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any

from reasonflow_otel.guard import report_internal_error
from reasonflow_otel.local.store import LogLine, SpanRecord, decode_spans
from reasonflow_otel.local.viewer.analytics import Analytics
from reasonflow_otel.local.viewer.index import FileState, IndexedTrace

LOOKBACK = timedelta(days=7)
TRACES_PER_SERVICE = 500
REFRESH_SECONDS = 5.0  # as often as the runs page asks
TIMEOUT_SECONDS = 10.0
_FULL_TRACE_ID = 32


class JaegerError(OSError):
    """Jaeger cannot be reached or refused a query; the message says which, for the page."""


class JaegerIndex:
    """The viewer's trace source over Jaeger's query API (see ``index.TraceSource``)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._lock = threading.Lock()  # guards what was fetched
        self._reader = threading.Lock()  # held by the one thread querying Jaeger
        self._traces: dict[str, IndexedTrace] = {}
        self._newest_first: list[IndexedTrace] = []
        self._analytics = Analytics()
        self._spans = 0
        self._error = ""
        self._fetched_at: float | None = None

    # --- Reading ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Answers come from the last fetch; one older than :data:`REFRESH_SECONDS` is
        fetched again in the background (a search reads whole traces: about a second for a
        thousand), so no answer waits for Jaeger."""
        if not self._fetched_recently():
            self.refresh_in_background()

    def refresh_in_background(self) -> threading.Thread | None:
        """Fetch on a new thread; None when another thread is fetching already."""
        if not self._reader.acquire(blocking=False):
            return None
        thread = threading.Thread(
            target=self._fetch_latest, name="reasonflow-viewer-jaeger", daemon=True
        )
        thread.start()
        return thread

    def _fetched_recently(self) -> bool:
        last = self._fetched_at
        return last is not None and time.monotonic() - last < REFRESH_SECONDS

    def _fetch_latest(self) -> None:
        """The latest traces, replacing what was fetched before (holds the reader lock)."""
        try:
            traces = self._recent_traces()
        except JaegerError as error:  # said in every answer; what was fetched stays shown
            self._error = str(error)
        except Exception as error:  # a bug must not leave the viewer fetching forever
            report_internal_error("reading traces from Jaeger", error)
            self._error = f"cannot read Jaeger's answer ({type(error).__name__})"
        else:
            self._replace(traces)
            self._error = ""
        finally:
            self._fetched_at = time.monotonic()
            self._reader.release()

    def _recent_traces(self) -> dict[str, list[SpanRecord]]:
        """Each recent trace's spans, from a search per service (a trace spanning several
        services is found by each, and kept once)."""
        end = datetime.now(timezone.utc) + timedelta(minutes=1)  # a little clock skew
        traces: dict[str, dict[str, SpanRecord]] = {}
        for service in self._get("/api/v3/services").get("services") or ():
            query = {
                "query.service_name": service,
                "query.start_time_min": _rfc3339(end - LOOKBACK - timedelta(minutes=1)),
                "query.start_time_max": _rfc3339(end),
                "query.num_traces": str(TRACES_PER_SERVICE),
            }
            for span in self._spans_at(f"/api/v3/traces?{urllib.parse.urlencode(query)}"):
                traces.setdefault(span.trace_id, {})[span.span_id] = span
        return {trace_id: list(spans.values()) for trace_id, spans in traces.items()}

    def _replace(self, traces: dict[str, list[SpanRecord]]) -> None:
        indexed = {trace_id: _indexed(trace_id, spans) for trace_id, spans in traces.items()}
        analytics = Analytics()  # fed as from a file, where a trace's root span comes last
        for spans in traces.values():
            for span in sorted(spans, key=_file_order):
                analytics.add(span)
        with self._lock:
            self._traces = indexed
            self._newest_first = sorted(
                indexed.values(), key=lambda trace: trace.first_start, reverse=True
            )
            self._analytics = analytics
            self._spans = sum(len(spans) for spans in traces.values())

    # --- Queries (call refresh first) ---------------------------------------------------------

    def newest_first(self) -> list[IndexedTrace]:
        with self._lock:
            return self._newest_first

    def matching(self, prefix: str) -> list[IndexedTrace]:
        """The listed traces whose id starts with ``prefix``; a full id that is not listed
        (older, or beyond the listing's limit) is looked up in Jaeger."""
        with self._lock:
            found = [trace for key, trace in self._traces.items() if key.startswith(prefix)]
        if found or len(prefix) != _FULL_TRACE_ID:
            return found
        try:
            spans = self._trace(prefix)
        except JaegerError:
            return []
        return [_indexed(prefix, spans)] if spans else []

    def spans_of(self, trace: IndexedTrace) -> list[SpanRecord]:
        """The whole trace, as Jaeger has it now."""
        return self._trace(trace.trace_id)

    def logs_of(self, trace_id: str) -> list[LogLine]:
        return []  # Jaeger keeps spans (and their events), not log records

    def analytics_report(self) -> dict[str, object]:
        with self._lock:
            return self._analytics.report()

    def state(self) -> FileState:
        with self._lock:
            return FileState(
                path=self.url,
                exists=self._fetched_at is not None and not self._error,
                spans=self._spans,
                traces=len(self._traces),
                indexing=self._fetched_at is None,
                error=self._error,
                source="jaeger",
            )

    # --- Jaeger's API -------------------------------------------------------------------------

    def _trace(self, trace_id: str) -> list[SpanRecord]:
        return self._spans_at(f"/api/v3/traces/{trace_id}")

    def _spans_at(self, path: str) -> list[SpanRecord]:
        """The spans of an ``/api/v3/traces`` answer; none when Jaeger found no trace."""
        try:
            text = self._fetch(path)
        except _NotFound:
            return []
        try:
            return [
                span
                for document in _documents(text)
                for span in decode_spans(document.get("result") or {"resourceSpans": []})
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            message = f"{self.url}{path} answered spans that cannot be read ({error})"
            raise JaegerError(message) from None

    def _get(self, path: str) -> dict[str, Any]:
        """One JSON answer; a missing endpoint means this is not Jaeger v2's query service."""
        try:
            documents = _documents(self._fetch(path))
        except _NotFound:
            raise JaegerError(
                f"{self.url} has no {path}: give the address of Jaeger v2's query service "
                "(its UI and API port, 16686 by default)"
            ) from None
        except ValueError as error:
            raise JaegerError(f"{self.url}{path} did not answer JSON ({error})") from None
        return documents[0] if documents else {}

    def _fetch(self, path: str) -> str:
        request = urllib.request.Request(self.url + path, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                return response.read().decode()
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise _NotFound from None
            raise JaegerError(
                f"Jaeger at {self.url} answered {error.code} to {path}: {_message(error)}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise JaegerError(f"cannot reach Jaeger at {self.url}: {reason}") from None


class _NotFound(Exception):
    """Jaeger's 404: no trace matched."""


def _indexed(trace_id: str, spans: list[SpanRecord]) -> IndexedTrace:
    trace = IndexedTrace(trace_id)
    for span in sorted(spans, key=_file_order):
        trace.add_at(span, 0)
    return trace


def _file_order(span: SpanRecord) -> tuple[int, int]:
    """As a trace file has them: a span after its children (they end first)."""
    return span.end_ns, -span.start_ns


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _documents(text: str) -> list[dict[str, Any]]:
    """The JSON objects of an answer (a streamed answer may hold several, one after another)."""
    decoder = json.JSONDecoder()
    documents, position = [], 0
    text = text.strip()
    while position < len(text):
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
        while position < len(text) and text[position].isspace():
            position += 1
    return documents


def _message(error: urllib.error.HTTPError) -> str:
    """Jaeger's own error message (``{"error": {"message": ...}}``), else the reason."""
    try:
        return str(json.loads(error.read())["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(error.reason)
