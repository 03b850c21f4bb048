"""JSON log formatting."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from ccgate.logs import JSONFormatter

pytestmark = pytest.mark.unit


def _format(msg: str, *args: object, level: int = logging.INFO) -> dict[str, object]:
    record = logging.LogRecord("ccgate.test", level, __file__, 1, msg, args, None)
    line = JSONFormatter().format(record)
    assert "\n" not in line
    body = json.loads(line)
    assert isinstance(body, dict)
    return body


def test_event_with_fields() -> None:
    body = _format("turn_finished model=%s ms=%d", "x", 3)
    assert body["event"] == "turn_finished"
    assert body["model"] == "x"
    assert body["ms"] == "3"
    assert body["level"] == "info"
    assert body["logger"] == "ccgate.test"
    assert "message" not in body
    assert isinstance(body["ts"], str) and str(body["ts"]).endswith("Z")


def test_event_with_quoted_field() -> None:
    body = _format("request_started path=%s note='two words'", "/v1/messages")
    assert body["event"] == "request_started"
    assert body["path"] == "/v1/messages"
    assert body["note"] == "two words"


def test_event_alone() -> None:
    body = _format("gateway_stopping")
    assert body["event"] == "gateway_stopping"
    assert "message" not in body


def test_fields_do_not_clobber_record_keys() -> None:
    body = _format("turn_finished level=debug logger=evil model=x")
    assert body["level"] == "info"
    assert body["logger"] == "ccgate.test"
    assert body["model"] == "x"


@pytest.mark.parametrize(
    "message",
    [
        "Uvicorn running on http://127.0.0.1:8787 (Press CTRL+C to quit)",
        "Application startup complete.",
        "Something odd: x=1",
    ],
)
def test_plain_messages_kept(message: str) -> None:
    body = _format(message)
    assert body["message"] == message
    assert "event" not in body


def test_error_with_exception() -> None:
    try:
        raise ValueError("kaput")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "ccgate", logging.ERROR, __file__, 1, "request_crashed path=/x", None, exc_info
    )
    body = json.loads(JSONFormatter().format(record))
    assert body["event"] == "request_crashed"
    assert body["level"] == "error"
    assert "ValueError: kaput" in body["exception"]
