"""Console sign-ins: one record per signed-in browser, found by the hash of its cookie.

Contract of a :class:`ConsoleSessionStore` (one conformance suite runs it on
SQLite and Postgres):

- ``create`` stores a sign-in; the token itself is never stored, only its
  SHA-256 (``token_hash``);
- ``get(token_hash, now)`` returns the sign-in unless it expired by ``now``;
- ``delete`` ends one (sign-out); ``delete_key`` ends every sign-in of a
  client key (revoked or disabled); ``expire(now)`` removes the expired.
"""

from __future__ import annotations

import time
from typing import Protocol

from sqlalchemy import delete, insert, select

from ccgate.store.database import Database
from ccgate.store.records import ConsoleSession
from ccgate.store.tables import console_sessions

__all__ = ["ConsoleSession", "ConsoleSessionStore", "SqlConsoleSessionStore"]


class ConsoleSessionStore(Protocol):
    """Where console sign-ins are kept; see the module docstring for the contract."""

    async def create(self, session: ConsoleSession) -> None:
        """Store a sign-in."""
        ...

    async def get(self, token_hash: str, *, now: float | None = None) -> ConsoleSession | None:
        """Return the sign-in, unless it expired."""
        ...

    async def delete(self, token_hash: str) -> None:
        """End a sign-in."""
        ...

    async def delete_key(self, key_id: str) -> int:
        """End every sign-in of a client key; return how many."""
        ...

    async def expire(self, *, now: float | None = None) -> int:
        """Remove the expired sign-ins; return how many."""
        ...


class SqlConsoleSessionStore:
    """:class:`ConsoleSessionStore` on the database."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(self, session: ConsoleSession) -> None:
        """Store a sign-in."""
        async with self._db.write() as conn:
            await conn.execute(
                insert(console_sessions).values(
                    token_hash=session.token_hash,
                    role=session.role,
                    namespace=session.namespace,
                    key_id=session.key_id,
                    name=session.name,
                    csrf=session.csrf,
                    created_at=session.created_at,
                    expires_at=session.expires_at,
                )
            )

    async def get(self, token_hash: str, *, now: float | None = None) -> ConsoleSession | None:
        """Return the sign-in, unless it expired."""
        stamp = time.time() if now is None else now
        c = console_sessions.c
        query = select(console_sessions).where(c.token_hash == token_hash, c.expires_at > stamp)
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return ConsoleSession(
            token_hash=row.token_hash,
            role=row.role,
            namespace=row.namespace,
            key_id=row.key_id,
            name=row.name,
            csrf=row.csrf,
            created_at=float(row.created_at),
            expires_at=float(row.expires_at),
        )

    async def delete(self, token_hash: str) -> None:
        """End a sign-in."""
        async with self._db.write() as conn:
            await conn.execute(
                delete(console_sessions).where(console_sessions.c.token_hash == token_hash)
            )

    async def delete_key(self, key_id: str) -> int:
        """End every sign-in of a client key; return how many."""
        async with self._db.write() as conn:
            done = await conn.execute(
                delete(console_sessions).where(console_sessions.c.key_id == key_id)
            )
        return int(done.rowcount or 0)

    async def expire(self, *, now: float | None = None) -> int:
        """Remove the expired sign-ins; return how many."""
        stamp = time.time() if now is None else now
        async with self._db.write() as conn:
            done = await conn.execute(
                delete(console_sessions).where(console_sessions.c.expires_at <= stamp)
            )
        return int(done.rowcount or 0)
