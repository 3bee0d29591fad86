"""The ``reasonflow-otel`` command: look at recorded traces with no backend.

    reasonflow-otel traces                 recent traces, newest first
    reasonflow-otel show 4bf92f35          one trace as a tree, with its logs
    reasonflow-otel stats [--json]         per-node and per-flow figures, bottlenecks, failures
    reasonflow-otel export --endpoint URL  send the recorded spans to an OTLP endpoint
    reasonflow-otel doctor                 the effective configuration, and what to fix
    reasonflow-otel state 4bf92f35 --step 2  the application state after step 2, as JSON
    reasonflow-otel ui                     a local web viewer with workflow analytics

Exit status: 0 on success, 1 when the command could not do its job (missing file, unknown
trace, endpoint down, problems found by ``doctor``), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import urllib.parse
import webbrowser
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from string import hexdigits
from typing import TYPE_CHECKING

from reasonflow_otel.local import doctor, listing, state
from reasonflow_otel.local.export import (
    PROTOCOLS,
    default_protocol,
    environment_headers,
    export_file,
)
from reasonflow_otel.local.stats import Stats, render_stats
from reasonflow_otel.local.store import (
    LogLine,
    SpanRecord,
    log_file_for,
    read_logs,
    read_spans,
    warn_on_stderr,
)
from reasonflow_otel.local.text import plural
from reasonflow_otel.local.tree import Style, build_tree, render_trace
from reasonflow_otel.settings import Settings, load_settings
from reasonflow_otel.version import __version__

if TYPE_CHECKING:
    from reasonflow_otel.local.viewer.jaeger import JaegerIndex

PROGRAM = "reasonflow-otel"


class CliError(Exception):
    """A failure to report in one line, with exit status 1."""


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        return int(arguments.command(arguments) or 0)
    except CliError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# --- Commands ---------------------------------------------------------------------------------


def traces_command(arguments: argparse.Namespace) -> None:
    path = _trace_file(arguments)
    summaries = listing.summarize(_spans(path))
    chosen = listing.select(summaries, arguments.flow, arguments.status)
    if not chosen:
        print(f"No traces in {path}." if not summaries else "No trace matches the filters.")
        return
    shown = chosen[: arguments.limit] if arguments.limit else chosen
    _print_lines(listing.render_listing(shown))
    if len(shown) < len(chosen):
        print(f"({len(shown)} of {len(chosen)} traces shown; --limit 0 shows all)")


def show_command(arguments: argparse.Namespace) -> None:
    path = _trace_file(arguments)
    prefix = arguments.trace_id.strip().lower()
    if not prefix or len(prefix) > 32 or any(char not in hexdigits for char in prefix):
        raise CliError(f"{arguments.trace_id!r} is not a trace id (up to 32 hex digits)")
    spans = find_trace(path, prefix)
    trace_id = spans[0].trace_id
    style = Style.for_stream(sys.stdout)
    print(f"trace {trace_id}")
    _print_lines(render_trace(build_tree(spans, _logs_of(log_file_for(path), trace_id)), style))


def find_trace(path: Path, prefix: str) -> list[SpanRecord]:
    """The spans of the one trace whose id starts with ``prefix``."""
    spans: list[SpanRecord] = []
    others: dict[str, None] = {}  # other matching trace ids, in file order
    for span in _spans(path):
        if not span.trace_id.startswith(prefix):
            continue
        if not spans or span.trace_id == spans[0].trace_id:
            spans.append(span)
        else:
            others[span.trace_id] = None
    if not spans:
        raise CliError(f"no trace id in {path} starts with {prefix}")
    if others:
        raise CliError(listing.ambiguous(prefix, [spans[0].trace_id, *others]))
    return spans


def _logs_of(path: Path, trace_id: str) -> list[LogLine]:
    """The trace's logs; none when no log file was written."""
    if not path.is_file():
        return []
    return [log for log in read_logs(path) if log.trace_id == trace_id]


def stats_command(arguments: argparse.Namespace) -> None:
    report = Stats().add_all(_spans(_trace_file(arguments))).report()
    if arguments.json:
        print(json.dumps(report, indent=2))
    else:
        _print_lines(render_stats(report))


def export_command(arguments: argparse.Namespace) -> int:
    headers = {**environment_headers(), **dict(arguments.header)}
    path = _trace_file(arguments)
    with _reading(path):
        result = export_file(
            path,
            arguments.endpoint,
            arguments.protocol or default_protocol(),
            headers,
            arguments.timeout,
            warn_on_stderr,
        )
    rejected = f", {result.rejected:,} rejected by the endpoint" if result.rejected else ""
    print(
        f"Sent {plural(result.spans, 'span')} in {plural(result.requests, 'request')} to "
        f"{arguments.endpoint}{rejected}."
    )
    if result.error:
        raise CliError(f"export stopped: {result.error}")
    return 1 if result.rejected else 0


def doctor_command(arguments: argparse.Namespace) -> int:
    diagnosis = doctor.diagnose()
    _print_lines(doctor.render_diagnosis(diagnosis))
    return 1 if diagnosis.problems else 0


def state_command(arguments: argparse.Namespace) -> None:
    try:
        saved = state.load_state(arguments.trace_id, arguments.step, file=_trace_file(arguments))
    except state.StateError as error:
        raise CliError(str(error)) from None
    print(json.dumps(saved.state, indent=2, ensure_ascii=False))
    print(f"next action: {saved.next_action or '(none: the run had ended)'}", file=sys.stderr)


def ui_command(arguments: argparse.Namespace) -> None:
    from reasonflow_otel.local.viewer.server import ViewerServer, is_loopback

    source = _viewer_source(arguments)
    if not is_loopback(arguments.host):
        warn_on_stderr(
            f"serving on {arguments.host}: anyone who can reach it can read these traces, "
            "which may hold sensitive data (parameters, captured payloads, log messages)"
        )
    try:
        server = ViewerServer(source, arguments.host, arguments.port)
    except OSError as error:
        raise CliError(
            f"cannot serve on {arguments.host}:{arguments.port}: {error.strerror} "
            "(pass --port 0 for any free port)"
        ) from None
    shown = source.absolute() if isinstance(source, Path) else f"Jaeger at {arguments.jaeger}"
    print(f"Serving {shown} at {server.url} (Ctrl-C to stop)", flush=True)
    if not arguments.no_browser:
        webbrowser.open(server.url)
    with server, contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


def _viewer_source(arguments: argparse.Namespace) -> Path | JaegerIndex:
    """The trace file, or Jaeger's query API with ``--jaeger``."""
    if arguments.jaeger is None:
        return _trace_file(arguments)
    if arguments.file is not None:
        raise CliError("give --file or --jaeger, not both")
    from reasonflow_otel.local.viewer.jaeger import JaegerIndex

    return JaegerIndex(arguments.jaeger)


# --- Helpers ------------------------------------------------------------------------------------


def _trace_file(arguments: argparse.Namespace) -> Path:
    return arguments.file or load_settings().trace_file


def _spans(path: Path) -> Iterator[SpanRecord]:
    with _reading(path):
        return read_spans(path)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """A trace file that cannot be opened becomes a one-line error."""
    try:
        yield
    except FileNotFoundError:
        raise CliError(
            f"no trace file at {path.absolute()} (run an instrumented program first, "
            f"or pass --file / set {Settings.env_name('trace_file')})"
        ) from None
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}") from None


def _print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)


def _header(text: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return name.strip(), value.strip()


# --- Arguments ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Look at traces recorded locally by reasonflow-otel, with no backend.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    traces = _command(commands, "traces", traces_command, "List recent traces, newest first.")
    traces.add_argument("--flow", metavar="NAME", help="only traces that ran this flow")
    traces.add_argument("--status", choices=("ok", "error"), help="only traces with this status")
    traces.add_argument(
        "--limit", type=_count, default=20, metavar="N", help="show N traces (0: all; default 20)"
    )

    show = _command(commands, "show", show_command, "Show one trace as a tree, with its logs.")
    show.add_argument("trace_id", metavar="TRACE_ID", help="the trace id, or its first digits")

    stats = _command(
        commands,
        "stats",
        stats_command,
        "Per-node and per-flow runs, error rates, durations and CPU time; bottlenecks; "
        "failures by error.type.",
    )
    stats.add_argument("--json", action="store_true", help="machine-readable output")

    export = _command(
        commands, "export", export_command, "Send the recorded spans to an OTLP endpoint."
    )
    export.add_argument(
        "--endpoint",
        required=True,
        metavar="URL",
        help="e.g. http://localhost:4317 (gRPC) or http://localhost:4318 (HTTP)",
    )
    export.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="default: OTEL_EXPORTER_OTLP_PROTOCOL, else grpc",
    )
    export.add_argument(
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="add a request header (repeatable); OTEL_EXPORTER_OTLP_HEADERS is also sent",
    )
    export.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="per request (default 10)"
    )

    state_parser = _command(
        commands,
        "state",
        state_command,
        "Print an application's state after a step as JSON (needs state capture on).",
    )
    state_parser.add_argument(
        "trace_id", metavar="TRACE_ID", help="the trace id, or its first digits"
    )
    state_parser.add_argument(
        "--step", type=_count, metavar="N", help="the step's sequence id (default: the last step)"
    )

    ui = _command(
        commands,
        "ui",
        ui_command,
        "Serve a local web viewer of the traces, with workflow analytics and a JSON API.",
    )
    ui.add_argument(
        "--host",
        default="127.0.0.1",
        help="the interface to listen on (default 127.0.0.1: this machine only)",
    )
    ui.add_argument("--port", type=_port, default=7241, help="default 7241; 0 picks a free port")
    ui.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    ui.add_argument(
        "--jaeger",
        type=_http_url,
        metavar="URL",
        help="read the traces from Jaeger's query API instead of the file, "
        "e.g. http://localhost:16686",
    )

    _command(
        commands,
        "doctor",
        doctor_command,
        "Print the effective configuration and what to fix.",
        reads_file=False,
    )
    return parser


def _command(
    commands: argparse._SubParsersAction,
    name: str,
    function: Callable[[argparse.Namespace], int | None],
    summary: str,
    reads_file: bool = True,
) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=summary, description=summary)
    command.set_defaults(command=function)
    if reads_file:
        command.add_argument(
            "--file",
            type=Path,
            metavar="PATH",
            help=f"the trace file (default: {Settings.env_name('trace_file')}, "
            f"else {Settings().trace_file})",
        )
    return command


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("expected 0 or more")
    return value


def _http_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL, got {text!r}")
    return text.strip().rstrip("/")


def _port(text: str) -> int:
    value = _count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError("expected a port number, 0 to 65535")
    return value
