"""Nothing leaks through errors: addresses stay out of client messages, values out of logs."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ccgate.api.errors import error_for_turn
from ccgate.engine.events import ErrorKind, TurnError, TurnStarted
from ccgate.engine.gate import Gate
from ccgate.logs import JSONFormatter, format_exception, statement_kind
from ccgate.loops.events import Failed
from ccgate.loops.runtime import LoopRuntime
from ccgate.redact import hide_addresses
from ccgate.store.database import Database
from ccgate.store.loops import LoopRecord

pytestmark = pytest.mark.unit

SECRET_VALUE = "sha256-of-a-client-key-0f1e2d3c"


@pytest.mark.parametrize(
    ("message", "address"),
    [
        ("connect ECONNREFUSED 127.0.0.1:43745", "127.0.0.1:43745"),
        ("connect ECONNREFUSED ::1:8080", "::1:8080"),
        ("getaddrinfo ENOTFOUND llm-proxy.internal.corp", "llm-proxy.internal.corp"),
        ("fetch failed (http://127.0.0.1:4000/v1/messages?beta=true)", "127.0.0.1:4000"),
        ("request to https://[::1]:9000/v1 failed", "::1]:9000"),
        ("dial tcp 10.0.0.5:8080: connect: connection refused", "10.0.0.5"),
        ("upstream gw.example.com:443 closed the connection", "gw.example.com"),
        ("nothing listens on localhost:8787", "localhost:8787"),
        ("no route to 192.168.1.20", "192.168.1.20"),
    ],
)
def test_addresses_are_hidden(message: str, address: str) -> None:
    hidden = hide_addresses(message)
    assert address not in hidden
    assert "[address]" in hidden


@pytest.mark.parametrize(
    "message",
    [
        "API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)",
        "this key's limit is reached; it resets at 2026-11-24 12:35:00 UTC (in 4 s)",
        "There's an issue with the selected model (claude-haiku-4-5). Claude Code 2.1.330",
        "messages[1].content[0]: Input should be a valid string",
        "API Error: 529 overloaded_error",
    ],
)
def test_other_text_is_kept(message: str) -> None:
    assert hide_addresses(message) == message


@pytest.mark.parametrize(
    "kind",
    [
        "authentication",
        "billing",
        "rate_limit",
        "overloaded",
        "invalid_request",
        "timeout",
        "unavailable",
        "cli_crashed",
        "upstream",
    ],
)
def test_turn_errors_reach_clients_without_the_upstream_address(kind: ErrorKind) -> None:
    error = error_for_turn(TurnError(kind, "API Error: connect ECONNREFUSED 127.0.0.1:43745"))
    assert "127.0.0.1" not in error.message and "43745" not in error.message
    assert "ECONNREFUSED [address]" in error.message


class _FailingAgent:
    """An agent whose every turn fails the way a CLI with an unreachable upstream does."""

    alive = True

    async def run(self, content: str, mode: str) -> AsyncIterator[Any]:
        yield TurnStarted("sonnet", cold_start=True)
        yield TurnError("upstream", "API Error: connect ECONNREFUSED 127.0.0.1:43745")

    def interrupt(self) -> None:
        return None

    async def aclose(self) -> None:
        self.alive = False


async def test_a_loop_turn_error_reaches_watchers_without_the_address() -> None:
    async def start(record: LoopRecord, chooser: Callable[..., Awaitable[Any]]) -> Any:
        return _FailingAgent()

    record = LoopRecord("loop_x", "ns", "t", {}, "default", "sonnet", "sid", 1.0)
    runtime = LoopRuntime(record, start, idle_timeout=60, choice_timeout=60, gate=Gate(1, 0))
    turn = runtime.submit("hello", "default")
    while not turn.done:
        await turn.wait(len(turn.events), 5)
    await runtime.close("test")
    failed = turn.events[-1]
    assert isinstance(failed, Failed) and failed.code == "upstream"
    assert failed.message == "API Error: connect ECONNREFUSED [address]"


async def _database_error(tmp_path: Path) -> BaseException:
    """Return what SQLAlchemy raises for a failed statement that carried a secret value."""
    database = Database(f"sqlite:///{tmp_path / 'crash.db'}")
    try:
        async with database.write() as conn:
            await conn.execute(text("CREATE TABLE t (v TEXT UNIQUE)"))
            await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": SECRET_VALUE})
        async with database.write() as conn:
            await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": SECRET_VALUE})
    except DBAPIError as exc:
        return exc
    finally:
        await database.close()
    raise AssertionError("the statement did not fail")


async def test_database_errors_name_their_statement_never_its_values(tmp_path: Path) -> None:
    error = await _database_error(tmp_path)
    assert SECRET_VALUE not in str(error)  # the engine hides parameters at the source
    assert statement_kind(error) == "INSERT"
    try:
        raise RuntimeError("while recording usage") from error
    except RuntimeError as outer:
        chained = outer
    # Even an error whose text quotes a value (a driver's, or an engine without the option).
    quoting = sqlite3.IntegrityError(f"UNIQUE constraint failed: t.v = {SECRET_VALUE!r}")
    for exc in (error, chained, quoting):
        trace = format_exception(exc)
        assert SECRET_VALUE not in trace
        assert "Traceback (most recent call last)" in trace or exc is quoting
    trace = format_exception(chained)
    assert "a database error (statement INSERT;" in trace
    assert "RuntimeError: while recording usage" in trace
    assert "direct cause" in trace


def test_the_json_log_writes_tracebacks_through_the_safe_formatter() -> None:
    exc = sqlite3.OperationalError(f"no such table near {SECRET_VALUE!r}")
    record = logging.LogRecord(
        "ccgate",
        logging.ERROR,
        __file__,
        1,
        "request_crashed path=/x",
        None,
        (None, exc, None),  # type: ignore[arg-type]  # as a caller that skips the type does
    )
    body = json.loads(JSONFormatter().format(record))
    assert "sqlite3.OperationalError: a database error" in body["exception"]
    assert SECRET_VALUE not in json.dumps(body)
