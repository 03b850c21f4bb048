"""Run every store test on SQLite and, when it is reachable, on Postgres."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from ccgate.store.database import Database
from ccgate.store.sessions import SqlSessionStore

POSTGRES_URL = os.environ.get(
    "CCGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _postgres_reachable() -> bool:
    parts = urlsplit(POSTGRES_URL)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 5432), timeout=2):
            return True
    except OSError:
        return False


# The backend sets the test's cost: SQLite is in-process (unit), Postgres a real server.
@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.unit),
        pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.server]),
    ]
)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """Return a migrated database of each backend, private to the test."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'ccgate.db'}")
        await db.migrate()
        yield db
        await db.close()
        return
    if not _postgres_reachable():
        pytest.skip(f"Postgres not reachable at {POSTGRES_URL} (set CCGATE_TEST_POSTGRES_URL)")
    schema = "ccgate_test_" + secrets.token_hex(6)
    admin = Database(POSTGRES_URL)
    async with admin.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    db = Database(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        await db.migrate()
        yield db
    finally:
        await db.close()
        async with admin.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.close()


@pytest.fixture
def store(database: Database) -> SqlSessionStore:
    """Return the session store on the test's database."""
    return SqlSessionStore(database)
