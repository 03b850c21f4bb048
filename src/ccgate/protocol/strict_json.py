"""Read a request body as strict JSON (RFC 8259): what ``json.loads`` lets through, refused.

Python's reader accepts text no protocol allows and ccgate cannot carry: lone
UTF-16 surrogates (``"\\ud800"``: a ``str`` that cannot be encoded, so it fails
wherever the text is hashed, stored, logged or sent to the CLI), ``NaN`` and
``Infinity``, numbers that overflow to infinity, integers of thousands of
digits, and nesting deep enough to exhaust the stack of whatever walks it later.
:func:`loads` refuses each with a :class:`json.JSONDecodeError` whose message
says what and where, which the API answers as the protocol's own 400.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_DIGITS", "loads"]

#: Deepest nesting of arrays and objects accepted (a request's own structure plus tool
#: schemas and tool arguments stays far below it).
MAX_DEPTH = 64
#: Most digits an integer may have (what fits a 64-bit float's range, with room to spare).
MAX_DIGITS = 400

_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused(Exception):
    """Raised from inside the parser's hooks; turned into a JSONDecodeError."""


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number; send a finite number or null")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is too large to be represented")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _Refused(f"an integer has more than {MAX_DIGITS} digits")
    return int(text)


def _where(path: list[str | int]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out or "the body"


def _check(value: Any) -> None:
    """Refuse lone surrogates (in keys or values) and nesting deeper than MAX_DEPTH."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise _Refused(
                    f"{_where(path)} holds a lone UTF-16 surrogate (like \\ud800), which is not "
                    "valid Unicode; send text as valid UTF-8"
                )
            continue
        if not isinstance(item, dict | list):
            continue
        if len(path) >= MAX_DEPTH:
            raise _Refused(f"{_where(path)} is nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            for key, member in item.items():
                if _SURROGATE.search(key):
                    raise _Refused(
                        f"a key in {_where(path)} holds a lone UTF-16 surrogate, which is not "
                        "valid Unicode"
                    )
                stack.append((member, [*path, key]))
        else:
            stack.extend((member, [*path, i]) for i, member in enumerate(item))


def loads(body: bytes | str) -> Any:
    """Parse ``body`` as strict JSON; raise json.JSONDecodeError saying what is refused."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError(
                f"the body is not valid UTF-8 (byte {exc.start})", "", exc.start
            ) from None
    else:
        text = body
    text = text.removeprefix("\ufeff")  # a byte order mark may be ignored (RFC 8259 §8.1)
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
        _check(value)
    except _Refused as exc:
        raise json.JSONDecodeError(str(exc), text, 0) from None
    except RecursionError:
        raise json.JSONDecodeError(
            f"the body is nested more than {MAX_DEPTH} levels deep", text, 0
        ) from None
    return value
