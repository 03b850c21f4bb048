"""Structured JSON logs: ``event key=value ...`` messages become JSON objects."""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from typing import Any

__all__ = ["JSONFormatter", "configure_logging"]

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
        if record.exc_info and record.levelno >= logging.ERROR:
            body["exception"] = self.formatException(record.exc_info)
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
