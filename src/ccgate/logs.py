"""Structured JSON logs: ``event key=value ...`` messages become JSON objects.

Tracebacks are written without the text of database errors: SQLAlchemy's holds
the statement's parameters (a key's hash, a prompt), and drivers quote values
in theirs. The statement's kind (``INSERT``, ``SELECT``) is kept.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
import traceback
from typing import Any

__all__ = ["JSONFormatter", "configure_logging", "format_exception", "statement_kind"]

#: Packages whose exceptions may quote a statement's values.
_DATABASE_PACKAGES = frozenset(
    {"sqlalchemy", "sqlite3", "aiosqlite", "asyncpg", "psycopg", "psycopg2"}
)

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _chain(exc: BaseException) -> list[BaseException]:
    """Return ``exc`` and the exceptions it was raised from or during, newest first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 32:
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return chain


def statement_kind(exc: BaseException) -> str | None:
    """Return the kind (first word) of the SQL statement an exception is about, if any."""
    for link in _chain(exc):
        statement = getattr(link, "statement", None)
        if isinstance(statement, str) and statement.split():
            return statement.split(None, 1)[0].upper()
    return None


def _describe(exc: BaseException) -> str:
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    if kind.__module__.partition(".")[0] in _DATABASE_PACKAGES:
        statement = statement_kind(exc)
        which = f"statement {statement}; " if statement else ""
        return f"{name}: a database error ({which}its text is not logged: it may hold values)"
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the traceback
        text = "<unprintable>"
    return f"{name}: {text}" if text else name


def format_exception(exc: BaseException) -> str:
    """Return ``exc``'s traceback as Python prints it, but without database errors' text."""
    parts: list[str] = []
    chain = _chain(exc)
    for index, link in enumerate(reversed(chain)):
        if index:
            parts.append(_CAUSE if link.__cause__ is not None else _CONTEXT)
        if link.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.format_tb(link.__traceback__))
        parts.append(_describe(link) + "\n")
    return "".join(parts).rstrip("\n")


_RESERVED = frozenset({"ts", "level", "logger", "event", "message", "exception"})


class JSONFormatter(logging.Formatter):
    """Format a record as one JSON object with an ``event`` name and its fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event, _, rest = message.partition(" ")
        body: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields: dict[str, str] = {}
        if event.replace("_", "").isalnum() and event.islower():
            try:
                tokens = shlex.split(rest)
            except ValueError:
                tokens = []
            if tokens and all("=" in t for t in tokens):
                fields = dict(t.split("=", 1) for t in tokens)
                body["event"] = event
            else:
                body["event"] = event
                if rest:
                    body["message"] = rest
        else:
            body["message"] = message
        for key, value in fields.items():
            # A field never overrides what the record itself says.
            body[key if key not in _RESERVED else f"field_{key}"] = value
        if record.exc_info and record.exc_info[1] is not None and record.levelno >= logging.ERROR:
            body["exception"] = format_exception(record.exc_info[1])
        return json.dumps(body, default=str)


def configure_logging(level: str) -> None:
    """Send ccgate's and uvicorn's logs to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
