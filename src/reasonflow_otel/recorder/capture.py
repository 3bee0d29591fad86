"""Payloads as span attributes: any Python value as bounded, redacted text.

Captured values leave the process, so every one of them obeys three rules:

- it never raises: any object is accepted (cycles, broken ``__repr__``, bytes,
  huge containers, integers too long to print);
- it is at most ``capture_max_length`` characters, and producing it costs about
  that much work however big the value is (the walk stops when the text is full);
- what looks like a secret is replaced by ``[REDACTED]`` before the text is cut,
  so a cut never leaves half a secret behind. A mapping key that names a secret
  (``password``, ``api_key``, ``Authorization``, ...) hides its whole value;
  inside text, known credential formats and ``name=value`` assignments of such
  names are replaced, plus every match of the user's ``redact_patterns``.

Prep, exec and post results and the shared store are captured only when
``Settings.capture`` names their phase. Batch-flow parameters are always
recorded (they tell the parameter sets apart) and go through the same redaction
and limits.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from reasonflow_otel import semconv
from reasonflow_otel.guard import safe_str
from reasonflow_otel.settings import Settings

REDACTED = "[REDACTED]"
CUT_MARK = "…"

# How far past the end of the kept text a string is still scanned for secrets, so
# that a secret straddling the cut is recognised whole and not kept in part.
_SCAN_MARGIN = 512
_MAX_DEPTH = 24

# Secret names, as mapping keys or on the left of ``name=value`` in text.
_SECRET_NAME = (
    r"pass(?:word|wd|phrase)|pwd|secret|token(?!s|iz)|api[-_]?key|access[-_]?key"
    r"|authorization|cookie|private[-_]?key|credential"
)
_SECRET_KEY = re.compile(_SECRET_NAME, re.IGNORECASE)
_BUILT_IN_TEXT_PATTERNS: tuple[tuple[str, str], ...] = (
    # PEM private keys, also when the text ends before the END line.
    (r"-----BEGIN[A-Z ]*PRIVATE KEY-----(?:.*?-----END[A-Z ]*PRIVATE KEY-----|.*\Z)", REDACTED),
    # Credentials in URLs: scheme://user:password@host
    (r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@", rf"\1{REDACTED}@"),
    # name=value, name: value, "name": "value", with an optional auth scheme.
    (
        rf"(?i)((?<![\w.-])[\w.-]*?(?:{_SECRET_NAME})[\w.-]*[\"']?\s*[:=]\s*[\"']?"
        r"(?:(?:Bearer|Basic|Token)\s+)?)[^\s\"',;&}\]]+",
        rf"\1{REDACTED}",
    ),
    # Authorization header values on their own.
    (r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", rf"\1 {REDACTED}"),
    # Well-known token formats: OpenAI/Anthropic, AWS, GitHub, Slack, Google,
    # Hugging Face, Stripe, JSON Web Tokens.
    (
        r"\b(?:sk-[A-Za-z0-9_-]{16,}|(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
        r"|github_pat_\w{30,}|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}"
        r"|hf_[A-Za-z0-9]{30,}|[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"
        r"|eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*)",
        REDACTED,
    ),
)


class Redactor:
    """Recognises secrets in mapping keys and in text."""

    def __init__(self, user_patterns: Iterable[str] = ()) -> None:
        self._user_patterns = tuple(re.compile(pattern) for pattern in user_patterns)
        self._built_in_patterns = tuple(
            (re.compile(pattern, re.DOTALL), replacement)
            for pattern, replacement in _BUILT_IN_TEXT_PATTERNS
        )

    def is_secret_key(self, key: str) -> bool:
        """A key whose whole value must be hidden."""
        return bool(_SECRET_KEY.search(key)) or any(p.search(key) for p in self._user_patterns)

    def key(self, key: str) -> str:
        """A key stays readable unless it is a credential itself (a cache keyed by token)."""
        for pattern, replacement in self._built_in_patterns:
            key = pattern.sub(replacement, key)
        return key

    def text(self, text: str) -> str:
        text = self.key(text)
        for pattern in self._user_patterns:
            text = pattern.sub(REDACTED, text)
        return text


class _Full(Exception):
    """The text reached its length limit: the walk stops."""


class _Text:
    """Collects output pieces up to ``limit`` characters, then raises :class:`_Full`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pieces: list[str] = []
        self.length = 0

    @property
    def room(self) -> int:
        return self.limit - self.length

    def add(self, piece: str) -> None:
        self.pieces.append(piece)
        self.length += len(piece)
        if self.length > self.limit:
            raise _Full

    def result(self) -> str:
        text = "".join(self.pieces)
        return text if len(text) <= self.limit else text[: self.limit - 1] + CUT_MARK


class Capture:
    """Turns payloads into attribute values according to the capture settings."""

    def __init__(self, settings: Settings) -> None:
        self.phases = frozenset(settings.capture)
        self._max_length = settings.capture_max_length
        self._redactor = Redactor(settings.redact_patterns)
        self._shared_keys = frozenset(settings.capture_shared_keys)
        self._excluded_keys = frozenset(settings.exclude_shared_keys)

    def text(self, value: Any) -> str:
        """Containers and numbers as compact JSON, a string as itself, any other
        object as its ``repr()``; redacted and bounded."""
        out = _Text(self._max_length)
        try:
            if isinstance(value, str):
                out.add(self._string(value, out.room))
            elif _is_opaque(value):
                out.add(self._opaque(value, out.room))
            else:
                self._write(value, out, depth=0, path=set())
        except _Full:
            pass
        return out.result()

    def shared(self, store: Any) -> str:
        """The shared store, restricted to the keys chosen for capture."""
        if not isinstance(store, Mapping):
            return self.text(store)
        return self.text(
            {key: value for key, value in store.items() if self._shared_key_captured(key)}
        )

    def params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Node parameters as ``reasonflow.params.<key>`` attributes."""
        attributes: dict[str, Any] = {}
        for key, value in params.items():
            name = safe_str(key)
            if self._redactor.is_secret_key(name):
                value = REDACTED
            elif not isinstance(value, (bool, int, float)):
                value = self.text(value)
            attributes[semconv.PARAMS_PREFIX + name] = value
        return attributes

    def _shared_key_captured(self, key: Any) -> bool:
        name = safe_str(key)
        if self._shared_keys and name not in self._shared_keys:
            return False
        return name not in self._excluded_keys

    def _string(self, text: str, room: int) -> str:
        """Redacted first, then cut: a secret across the cut is still recognised."""
        scanned = text[: max(room, 0) + _SCAN_MARGIN]
        return self._redactor.text(scanned)

    def _opaque(self, value: Any, room: int) -> str:
        return self._string(_safe_repr(value, room), room)

    def _write(self, value: Any, out: _Text, depth: int, path: set[int]) -> None:
        if value is None or isinstance(value, (bool, int, float)):
            out.add(_scalar(value))
        elif isinstance(value, str):
            out.add(_quoted(self._string(value, out.room)))
        elif depth >= _MAX_DEPTH:
            out.add(_quoted(CUT_MARK))
        elif id(value) in path:
            out.add(_quoted("<cycle>"))
        else:
            path.add(id(value))
            try:
                self._write_container(value, out, depth, path)
            except _Full:
                raise
            except Exception:  # a mapping that fails to iterate, a dict changed meanwhile
                out.add(_quoted(f"<unreadable {type(value).__qualname__}>"))
            finally:
                path.discard(id(value))

    def _write_container(self, value: Any, out: _Text, depth: int, path: set[int]) -> None:
        items = _items(value)
        if items is not None:
            out.add("{")
            for index, (key, item) in enumerate(items):
                name = safe_str(key)
                shown = self._redactor.key(name[: out.room + _SCAN_MARGIN])
                out.add(("," if index else "") + _quoted(shown) + ":")
                if self._redactor.is_secret_key(name):
                    out.add(_quoted(REDACTED))
                else:
                    self._write(item, out, depth + 1, path)
            out.add("}")
        elif isinstance(value, (list, tuple, set, frozenset)):
            out.add("[")
            for index, item in enumerate(value):
                if index:
                    out.add(",")
                self._write(item, out, depth + 1, path)
            out.add("]")
        else:
            out.add(_quoted(self._opaque(value, out.room)))


def _is_opaque(value: Any) -> bool:
    """Neither a scalar, a string, a sequence or set, nor something with named items."""
    return (
        value is not None
        and not isinstance(value, (bool, int, float, str, list, tuple, set, frozenset))
        and _items(value) is None
    )


def _items(value: Any) -> Iterable[tuple[Any, Any]] | None:
    """Key-value pairs of a mapping or a dataclass instance, else None."""
    if isinstance(value, Mapping):
        return value.items()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ((f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value))
    return None


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _scalar(value: bool | int | float | None) -> str:
    try:
        return json.dumps(value)
    except ValueError:  # an int too long to print in full
        return _quoted(f"<int of {value.bit_length()} bits>")  # type: ignore[union-attr]


def _safe_repr(value: Any, room: int) -> str:
    """``repr(value)`` cut to fit (bytes are cut before they are printed)."""
    if isinstance(value, (bytes, bytearray)) and len(value) > room + _SCAN_MARGIN:
        value = value[: room + _SCAN_MARGIN]
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"
