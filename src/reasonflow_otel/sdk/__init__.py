"""SDK setup: providers, exporters, sampling, Views, delivery and exit handling.

Kept empty on purpose: ``reasonflow_otel.sdk.preflight`` must be importable
before any OpenTelemetry SDK module reads the environment.
"""
