"""A default ``service.name``: the program's own name, when the user gave none.

The SDK falls back to ``unknown_service:python``, so every program looks the same in the CLI,
the viewer and Jaeger. When nothing named the service (no ``OTEL_SERVICE_NAME``, no
``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES`` or from a resource detector, no name passed
to ``instrument()``), the main script's or module's name is used instead: ``app`` for
``python app.py``, ``mypkg`` for ``python -m mypkg``. An interactive interpreter, ``-c`` and
standard input keep the SDK's fallback.
"""

from __future__ import annotations

import os
import sys
from pathlib import PurePath

from opentelemetry.sdk.resources import SERVICE_NAME, Resource

_SDK_FALLBACK = "unknown_service"
_NOT_A_PROGRAM = ("", "-c", "-")  # the interactive interpreter, -c CODE, code on stdin


def name_unnamed_service(resource: Resource) -> Resource:
    """``resource``, named after the running program if the SDK had to fall back."""
    named = str(resource.attributes.get(SERVICE_NAME, ""))
    if not named.startswith(_SDK_FALLBACK):
        return resource
    program = main_program_name()
    return resource.merge(Resource({SERVICE_NAME: program})) if program else resource


def main_program_name() -> str | None:
    """The running script's or module's name; None for an interactive interpreter.

    Works both once ``__main__`` runs (``instrument()``) and before it is loaded
    (``opentelemetry-instrument`` configures the SDK from ``sitecustomize``, when
    ``sys.argv[0]`` is still ``-m`` for a module).
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:  # python -m NAME, once runpy has loaded it
        return _module_name(spec.name)
    arguments = sys.argv
    if not arguments or arguments[0] in _NOT_A_PROGRAM:
        return None
    if arguments[0] == "-m":  # the module name precedes its own arguments
        return _module_name(sys.orig_argv[-len(arguments)].removeprefix("-m"))
    return _script_name(arguments[0])


def _module_name(name: str) -> str | None:
    """``mypkg`` for ``mypkg.__main__`` (``python -m mypkg``), else the module's dotted name."""
    return name.removesuffix(".__main__") or None


def _script_name(path: str) -> str | None:
    """``app`` for ``app.py``; a package's ``__main__.py`` or a directory gives its name."""
    script = PurePath(os.path.abspath(path))
    if script.stem == "__main__":
        script = script.parent
    return script.stem or None
