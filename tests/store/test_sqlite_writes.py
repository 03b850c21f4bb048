"""SQLite writes: in the event loop's thread when the lock is free, else the waiting way."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from ccgate.errors import DatabaseBusy
from ccgate.store.database import Database, InlineConnection

pytestmark = pytest.mark.unit


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'ccgate.db'}", busy_timeout=2.0)
    await db.migrate()
    yield db
    await db.close()


def _other(database: Database) -> sqlite3.Connection:
    """Return another process's view of the file, as a backup or ``ccgate keys`` has."""
    path = database.url.split("///", 1)[1]
    return sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)


async def _count(database: Database) -> int:
    async with database.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM quota_counters"))).scalar_one())


async def _insert(conn: object, n: int) -> None:
    assert hasattr(conn, "execute")
    await conn.execute(
        text("INSERT INTO quota_counters (namespace, window, start) VALUES (:n, 'day', 0)"),
        {"n": f"ns_{n}"},
    )


async def test_a_free_lock_means_a_write_in_the_loop_s_thread(database: Database) -> None:
    async with database.write() as conn:
        assert isinstance(conn, InlineConnection)
        await _insert(conn, 1)
    assert await _count(database) == 1
    # Another connection sees it committed: the transaction is over, the lock free.
    other = _other(database)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.rollback()
    finally:
        other.close()


async def test_an_error_rolls_the_write_back(database: Database) -> None:
    with pytest.raises(RuntimeError):
        async with database.write() as conn:
            await _insert(conn, 1)
            raise RuntimeError("the caller's own failure")
    assert await _count(database) == 0
    async with database.write() as conn:  # the connection went back to the pool usable
        await _insert(conn, 2)
    assert await _count(database) == 1


async def test_a_held_lock_means_the_waiting_way_and_then_the_write(database: Database) -> None:
    other = _other(database)
    other.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.3, other.rollback)
    released.start()
    try:
        async with database.write() as conn:
            # The lock was taken: this write waited for it on the driver's thread.
            assert not isinstance(conn, InlineConnection)
            await _insert(conn, 1)
    finally:
        released.join()
        other.close()
    assert await _count(database) == 1


async def test_a_lock_held_too_long_is_database_busy_and_blocks_nothing_else(
    database: Database,
) -> None:
    hurried = database.hurried(0.3)
    other = _other(database)
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    try:
        with pytest.raises(DatabaseBusy):
            async with hurried.write() as conn:
                await _insert(conn, 1)
    finally:
        ticker.cancel()
        other.rollback()
        other.close()
    # The event loop ran on while the write waited for the lock.
    assert ticks >= 10
    assert await _count(database) == 0
