"""Parse ``[[demo: ...]]`` directives out of conversation text.

A directive is ``[[demo:`` followed by ``key=value`` pairs separated by
whitespace and closed by ``]]``. A value is a JSON string (``"..."``), a JSON
object or array (``{...}``, ``[...]``), or a bare token running to the next
whitespace or ``]]``. Parsing never raises: a malformed pair ends its directive
(the pairs before it are kept), an unterminated directive is left as plain text.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["parse_directives"]

_OPEN = "[[demo:"
_CLOSE = "]]"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_DECODER = json.JSONDecoder()


def parse_directives(text: str) -> tuple[str, list[tuple[str, Any]]]:
    """Return ``text`` without its directives, and the ``(key, value)`` pairs found."""
    kept: list[str] = []
    pairs: list[tuple[str, Any]] = []
    pos = 0
    while True:
        start = text.find(_OPEN, pos)
        if start < 0:
            kept.append(text[pos:])
            break
        found = _parse_body(text, start + len(_OPEN))
        if found is None:
            kept.append(text[pos:])
            break
        kept.append(text[pos:start])
        pairs.extend(found[0])
        pos = found[1]
    return "".join(kept).strip(), pairs


def _parse_body(text: str, pos: int) -> tuple[list[tuple[str, Any]], int] | None:
    """Parse pairs from ``pos`` up to ``]]``; return them and the end offset."""
    pairs: list[tuple[str, Any]] = []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return None
        if text.startswith(_CLOSE, pos):
            return pairs, pos + len(_CLOSE)
        match = _KEY.match(text, pos)
        value = _parse_value(text, match.end()) if match else None
        if match is None or value is None:
            end = text.find(_CLOSE, pos)
            return None if end < 0 else (pairs, end + len(_CLOSE))
        pairs.append((match.group()[:-1].lower(), value[0]))
        pos = value[1]


def _parse_value(text: str, pos: int) -> tuple[Any, int] | None:
    """Parse one value at ``pos``; return it and the offset after it."""
    if pos < len(text) and text[pos] in '"{[':
        try:
            return _DECODER.raw_decode(text, pos)
        except ValueError:
            return None
    end = pos
    while end < len(text) and not text[end].isspace() and not text.startswith(_CLOSE, end):
        end += 1
    if end == pos:
        return None
    return _bare(text[pos:end]), end


def _bare(token: str) -> Any:
    """Convert a bare token to an int or float when it looks like one."""
    for kind in (int, float):
        try:
            return kind(token)
        except ValueError:
            continue
    return token
