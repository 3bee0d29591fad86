"""Reading OTLP JSON lines files as written, without our own reader, for exact assertions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def otlp_json(path: Path, records: str) -> list[dict[str, Any]]:
    """Every span or log record of an OTLP JSON lines file."""
    resource_key, scope_key, item_key = {
        "spans": ("resourceSpans", "scopeSpans", "spans"),
        "logs": ("resourceLogs", "scopeLogs", "logRecords"),
    }[records]
    return [
        item
        for line in path.read_text().splitlines()
        for resource in json.loads(line)[resource_key]
        for scope in resource[scope_key]
        for item in scope[item_key]
    ]
