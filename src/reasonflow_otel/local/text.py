"""Plain-text formatting shared by the CLI's tables and trees."""

from __future__ import annotations

from collections.abc import Sequence


def format_duration(seconds: float) -> str:
    """``0 ms``, ``0.041 ms``, ``12.3 ms``, ``4.56 s``, ``2m 05s``, ``1h 02m``."""
    if seconds <= 0:
        return "0 ms"
    if seconds < 0.001:
        return f"{seconds * 1000:.3f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 59.95:
        return f"{seconds:.3g} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def plural(count: int, singular: str, plural: str | None = None) -> str:
    """``1 retry``, ``2 retries``, ``1,000 spans``."""
    return f"{count:,} {singular if count == 1 else plural or singular + 's'}"


def format_table(rows: Sequence[Sequence[str]], left_columns: int = 1) -> list[str]:
    """Rows as aligned columns: the first ``left_columns`` flush left, the others right."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if column < left_columns else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
