"""Helpers shared by tests: real external programs (Prometheus, promtool) and test apps."""
