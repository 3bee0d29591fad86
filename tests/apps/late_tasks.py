"""Imported only after instrumentation started (tests/test_trace_methods.py)."""


def work(value: int) -> int:
    return value + 1
