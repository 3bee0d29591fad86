"""The ``REASONFLOW_OTEL_*`` variables, for the ``opentelemetry_environment_variables``
entry point; each constant's value is its own name, as in the SDK's module."""

from reasonflow_otel.settings import setting_docs

__all__ = [name for name, _, _ in setting_docs()]
globals().update({name: name for name in __all__})
