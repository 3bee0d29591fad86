"""Any engine, by name: ``REASONFLOW_OTEL_TRACE_METHODS`` with no code changes.

Each comma-separated entry is ``module:qualified.name``, optionally followed by
``=workflow`` or ``=node`` (the default)::

    REASONFLOW_OTEL_TRACE_METHODS=myengine.core:WorkflowEngine.run=workflow,myengine.tasks:fetch

A module already imported is wrapped at once; any other is wrapped right after
its first import, by a finder this instrumentor puts on ``sys.meta_path`` (the
import hook contrib instrumentations use, removed again by ``uninstrument()``).
An entry that does not resolve gets one warning naming it and is skipped: when
its module is imported, or at exit when that module never was.
``uninstrument()`` puts every original back, the very same object.

The instrumentor also activates the ``@workflow``/``@node``/``step`` decorators.
With the variable unset it wraps nothing and hooks no import.
"""

from __future__ import annotations

import atexit
import inspect
import sys
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

from reasonflow_otel.guard import report_internal_error
from reasonflow_otel.instrumentation import callables
from reasonflow_otel.instrumentation.base import EngineInstrumentor
from reasonflow_otel.recorder import Recorder
from reasonflow_otel.settings import Settings, load_settings, warn_once

ROLES = {"workflow": True, "node": False}
_MISSING = object()


@dataclass(frozen=True)
class Entry:
    """One parsed ``REASONFLOW_OTEL_TRACE_METHODS`` entry."""

    text: str
    module: str
    path: tuple[str, ...]
    is_flow: bool


@dataclass(frozen=True)
class _Patch:
    """A wrapper installed on ``owner.name`` and what to put back."""

    owner: Any
    name: str
    original: Any
    owned: bool  # the original was in owner's own __dict__ (else inherited or absent)

    def restore(self) -> None:
        if self.owned:
            setattr(self.owner, self.name, self.original)
        else:
            delattr(self.owner, self.name)


class MethodsInstrumentor(EngineInstrumentor):
    """Traces the callables ``REASONFLOW_OTEL_TRACE_METHODS`` names; powers the decorators."""

    # BaseInstrumentor makes one instance per class and every ``MethodsInstrumentor()``
    # call runs __init__ again on it: the state is set up in _instrument instead.
    _lock = threading.Lock()
    _patches: list[_Patch]
    _pending: dict[str, list[Entry]]
    _watcher: _ImportWatcher | None = None
    _recorder: Recorder | None = None
    _entries: list[Entry]

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        kwargs["settings"] = kwargs.get("settings") or load_settings()
        self._entries = parse_entries(kwargs["settings"])
        self._patches, self._pending = [], {}
        super()._instrument(**kwargs)

    def _wrap(self, recorder: Recorder) -> None:
        self._recorder = recorder
        callables.activate(recorder)
        for entry in self._entries:
            module = sys.modules.get(entry.module)
            if module is not None:
                self._wrap_entry(entry, module)
            else:  # not imported yet (at startup, not even findable: no script dir on sys.path)
                self._pending.setdefault(entry.module, []).append(entry)
        if self._pending:
            self._watcher = _ImportWatcher(set(self._pending), self._module_imported)
            sys.meta_path.insert(0, self._watcher)
            atexit.register(self._warn_never_imported)

    def _unwrap(self) -> None:
        if self._watcher is not None:
            sys.meta_path.remove(self._watcher)
            self._watcher = None
            atexit.unregister(self._warn_never_imported)
            self._warn_never_imported()
        with self._lock:
            self._pending.clear()
            patches, self._patches = self._patches, []
        for patch in reversed(patches):
            patch.restore()
        if callables.active_recorder() is self._recorder:
            callables.activate(None)
        self._recorder = None

    def _warn_never_imported(self) -> None:
        """At exit or uninstrument: entries whose module never came (a typo, most often)."""
        with self._lock:
            pending = [entry for entries in self._pending.values() for entry in entries]
        for entry in pending:
            _warn(entry, f"module {entry.module!r} was never imported")

    def _module_imported(self, module: ModuleType) -> None:
        """Runs inside the application's import: it must never fail that import."""
        try:
            with self._lock:
                entries = self._pending.pop(module.__name__, [])
            for entry in entries:
                self._wrap_entry(entry, module)
        except Exception as error:
            report_internal_error("wrapping a module's named callables", error)

    def _wrap_entry(self, entry: Entry, module: ModuleType) -> None:
        try:
            owner = module
            for attribute in entry.path[:-1]:
                owner = getattr(owner, attribute)
            name = entry.path[-1]
            original = inspect.getattr_static(owner, name)
        except AttributeError:
            _warn(entry, f"module {entry.module!r} has no {'.'.join(entry.path)!r}")
            return
        if not callable(callables.function_of(original)):
            _warn(entry, f"{type(original).__name__} is not callable")
            return
        with self._lock:
            if any(p.owner is owner and p.name == name for p in self._patches):
                return  # named twice: wrapped once
            info = callables.describe(original, ".".join(entry.path), is_flow=entry.is_flow)
            owned = name in vars(owner)
            try:
                setattr(owner, name, callables.traced(original, info))
            except (TypeError, AttributeError) as error:  # e.g. a built-in type
                _warn(entry, f"cannot be wrapped ({error})")
                return
            self._patches.append(_Patch(owner, name, original, owned))


def parse_entries(settings: Settings) -> list[Entry]:
    """The well-formed entries; each malformed one is warned about once and skipped."""
    entries = []
    for text in settings.trace_methods:
        entry = parse_entry(text)
        if entry is not None:
            entries.append(entry)
    return entries


def parse_entry(text: str) -> Entry | None:
    target, has_role, role = text.partition("=")
    role = role.strip().lower() if has_role else "node"
    module, _, qualified = target.strip().partition(":")
    path = tuple(qualified.split("."))
    if role not in ROLES:
        _warn_text(text, f"unknown role {role!r}; expected workflow or node")
        return None
    if not all(part.isidentifier() for part in (*module.split("."), *path)):
        _warn_text(text, "expected module:qualified.name")
        return None
    return Entry(text, module, path, ROLES[role])


def _warn(entry: Entry, reason: str) -> None:
    _warn_text(entry.text, reason)


def _warn_text(text: str, reason: str) -> None:
    warn_once(
        "reasonflow-otel: cannot trace REASONFLOW_OTEL_TRACE_METHODS entry %r (%s); skipped",
        text,
        reason,
    )


class _ImportWatcher:
    """A meta path finder that calls back right after a watched module is executed."""

    def __init__(self, names: set[str], imported: Callable[[ModuleType], None]) -> None:
        self._names = names
        self._imported = imported

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self._names:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _NotifyingLoader(spec.loader, self._imported)
                return spec
        return None


class _NotifyingLoader:
    """The module's own loader, then the callback; everything else is the loader's."""

    def __init__(self, loader: Any, imported: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._imported = imported

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._imported(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)
