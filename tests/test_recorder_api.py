"""The recorder's public API is what docs/adapters.md lists; layers import downwards only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import reasonflow_otel.recorder as recorder

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "reasonflow_otel"
ENGINE_ADAPTERS = ("pocketflow.py", "burr.py", "langgraph.py")
# The one recorder package that may use the SDK: its fast paths, handed to the Recorder.
SDK_FAST_PATHS = PACKAGE / "recorder" / "fast_paths"


def imports(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """Every (module, names imported from it) in ``path``, function-level imports too."""
    found: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, tuple(alias.name for alias in node.names)))
    return found


def imported_modules(path: Path) -> set[str]:
    return {module for module, _ in imports(path)}


def documented_names() -> list[str]:
    """The first column of the API table in docs/adapters.md."""
    text = (ROOT / "docs" / "adapters.md").read_text()
    table = text.split("## The public recorder API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE)


def test_the_documented_api_table_is_the_recorders_all() -> None:
    names = documented_names()
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(recorder.__all__)
    for name in recorder.__all__:
        assert getattr(recorder, name) is not None


def test_engine_adapters_use_only_the_public_recorder_api_and_no_sdk() -> None:
    adapters = [PACKAGE / "instrumentation" / name for name in ENGINE_ADAPTERS]
    for path in (adapter for adapter in adapters if adapter.exists()):
        for module, names in imports(path):
            assert not module.startswith("reasonflow_otel.recorder."), (path.name, module)
            if module == "reasonflow_otel.recorder":
                assert set(names) <= set(recorder.__all__), (path.name, names)
            assert not module.startswith("reasonflow_otel.sdk"), (path.name, module)
            assert not module.startswith("opentelemetry.sdk"), (path.name, module)


def test_the_recorder_uses_the_sdk_only_in_its_fast_path_module() -> None:
    assert (SDK_FAST_PATHS / "__init__.py").exists()
    for path in (PACKAGE / "recorder").rglob("*.py"):
        if SDK_FAST_PATHS in path.parents:
            continue
        for module in imported_modules(path):
            assert not module.startswith("opentelemetry.sdk"), (path.name, module)
            assert not module.startswith("reasonflow_otel.sdk"), (path.name, module)
            assert not module.startswith("reasonflow_otel.instrumentation"), (path.name, module)
            assert not module.startswith("reasonflow_otel.local"), (path.name, module)


def test_the_sdk_layer_imports_nothing_from_instrumentation_or_local() -> None:
    for path in (PACKAGE / "sdk").glob("*.py"):
        for module in imported_modules(path):
            assert not module.startswith("reasonflow_otel.instrumentation"), (path.name, module)
            assert not module.startswith("reasonflow_otel.local"), (path.name, module)
            assert not module.startswith("reasonflow_otel.recorder"), (path.name, module)
