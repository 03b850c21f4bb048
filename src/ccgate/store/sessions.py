"""Conversation sessions: the contract (:class:`SessionStore`) and its SQL implementation.

Contract of a :class:`SessionStore` (one conformance suite runs it on SQLite
and Postgres):

- Sessions live in a ``namespace`` (one per client key); nothing crosses
  namespaces: a key, a fingerprint or an id from one namespace never finds a
  session of another.
- ``create`` refuses a ``key`` already used in that namespace
  (:class:`SessionExists`); ``get`` returns ``None`` for unknown keys.
- ``record_turn`` is atomic: counters, ``last_used_at`` and the new history
  fingerprint change together or not at all. Recording the same fingerprint
  again (a retried request) changes nothing and returns ``False``.
- ``match`` takes fingerprints of history prefixes, longest first, and returns
  the session whose stored fingerprint is the longest match, with how many
  messages that prefix holds.
- ``expire(before)`` deletes sessions idle since before ``before`` and returns
  them, so their transcripts can be removed too.
- A session's shared transcript (``store.transcripts``, keyed by its
  ``cli_session_id``) goes with it: ``expire``, ``delete`` and ``delete_all``
  delete it, and ``repoint`` the one of the Claude Code session it leaves, in
  the same transaction.
"""

from __future__ import annotations

import functools
import secrets
import time
from typing import Protocol

from sqlalchemy import (
    Float,
    Insert,
    Integer,
    String,
    Update,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import ColumnElement

from ccgate.store.database import Database
from ccgate.store.records import SessionRecord
from ccgate.store.tables import session_fingerprints, sessions, transcripts

__all__ = ["SessionExists", "SessionRecord", "SessionStore", "SqlSessionStore"]


class SessionExists(Exception):
    """A session with that key already exists in the namespace."""


class SessionStore(Protocol):
    """Where sessions are kept; see the module docstring for the contract."""

    async def create(
        self,
        namespace: str,
        key: str,
        model: str,
        cli_session_id: str,
        *,
        now: float | None = None,
    ) -> SessionRecord:
        """Store a new session."""
        ...

    async def get(self, namespace: str, key: str) -> SessionRecord | None:
        """Return the session ``key`` of ``namespace``."""
        ...

    async def list_sessions(self, namespace: str) -> list[SessionRecord]:
        """Return the namespace's sessions, most recently used first."""
        ...

    async def record_turn(
        self,
        session_id: str,
        *,
        fingerprint: str,
        message_count: int,
        input_tokens: int = 0,
        output_tokens: int = 0,
        now: float | None = None,
    ) -> bool:
        """Count a finished turn and remember the conversation's new fingerprint."""
        ...

    async def repoint(self, session_id: str, cli_session_id: str, model: str) -> None:
        """Point a session at a new Claude Code session (its history was rebuilt)."""
        ...

    async def head(self, session_id: str) -> str | None:
        """Return the fingerprint of the session's longest recorded conversation."""
        ...

    async def match(
        self, namespace: str, fingerprints: list[str]
    ) -> tuple[SessionRecord, int] | None:
        """Return the session with the longest stored history prefix, and its length."""
        ...

    async def delete(self, namespace: str, key: str) -> SessionRecord | None:
        """Delete one session; return it, or ``None`` if it did not exist."""
        ...

    async def delete_all(self, namespace: str) -> list[SessionRecord]:
        """Delete every session of the namespace; return them."""
        ...

    async def expire(self, before: float) -> list[SessionRecord]:
        """Delete sessions last used before ``before``; return them."""
        ...


def _record(row: object) -> SessionRecord:
    m = row._mapping  # type: ignore[attr-defined]
    return SessionRecord(
        id=m["id"],
        namespace=m["namespace"],
        key=m["key"],
        model=m["model"],
        cli_session_id=m["cli_session_id"],
        created_at=m["created_at"],
        last_used_at=m["last_used_at"],
        turns=m["turns"],
        input_tokens=m["input_tokens"],
        output_tokens=m["output_tokens"],
    )


# A finished turn's statements, built once (SQLAlchemy then reuses their compiled form).


@functools.cache
def _add_fingerprint(dialect: str) -> Insert:
    """The fingerprint row, with the session's namespace, unless the session is gone or
    already holds this fingerprint (a retried request): one statement."""
    make = pg_insert if dialect == "postgresql" else sqlite_insert
    c = sessions.c
    return (
        make(session_fingerprints)
        .from_select(
            ["namespace", "fingerprint", "session_id", "message_count", "created_at"],
            select(
                c.namespace,
                bindparam("t_fp", type_=String),
                c.id,
                bindparam("t_count", type_=Integer),
                bindparam("t_at", type_=Float),
            ).where(c.id == bindparam("t_sid")),
        )
        .on_conflict_do_nothing()
    )


@functools.cache
def _count_turn() -> Update:
    c = sessions.c
    return (
        update(sessions)
        .where(c.id == bindparam("t_sid"))
        .values(
            turns=c.turns + 1,
            input_tokens=c.input_tokens + bindparam("t_in", type_=Integer),
            output_tokens=c.output_tokens + bindparam("t_out", type_=Integer),
            last_used_at=bindparam("t_at", type_=Float),
        )
    )


class SqlSessionStore:
    """A :class:`SessionStore` on SQLAlchemy Core (SQLite or Postgres)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(
        self,
        namespace: str,
        key: str,
        model: str,
        cli_session_id: str,
        *,
        now: float | None = None,
    ) -> SessionRecord:
        """Store a new session."""
        stamp = time.time() if now is None else now
        values = {
            "id": "sess_" + secrets.token_hex(12),
            "namespace": namespace,
            "key": key,
            "model": model,
            "cli_session_id": cli_session_id,
            "created_at": stamp,
            "last_used_at": stamp,
            "turns": 0,
            "input_tokens": 0,
            "output_tokens": 0,
        }
        try:
            async with self._db.write() as conn:
                await conn.execute(insert(sessions), values)
        except IntegrityError:
            raise SessionExists(f"session {key!r} exists") from None
        return SessionRecord(**values)  # type: ignore[arg-type]

    async def get(self, namespace: str, key: str) -> SessionRecord | None:
        """Return the session ``key`` of ``namespace``."""
        query = select(sessions).where(sessions.c.namespace == namespace, sessions.c.key == key)
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row else None

    async def list_sessions(self, namespace: str) -> list[SessionRecord]:
        """Return the namespace's sessions, most recently used first."""
        query = (
            select(sessions)
            .where(sessions.c.namespace == namespace)
            .order_by(sessions.c.last_used_at.desc(), sessions.c.id)
        )
        async with self._db.engine.connect() as conn:
            return [_record(r) for r in await conn.execute(query)]

    async def record_turn(
        self,
        session_id: str,
        *,
        fingerprint: str,
        message_count: int,
        input_tokens: int = 0,
        output_tokens: int = 0,
        now: float | None = None,
    ) -> bool:
        """Count a finished turn and remember the conversation's new fingerprint."""
        stamp = time.time() if now is None else now
        bound = {
            "t_sid": session_id,
            "t_fp": fingerprint,
            "t_count": message_count,
            "t_at": stamp,
            "t_in": input_tokens,
            "t_out": output_tokens,
        }
        async with self._db.write() as conn:
            added = await conn.execute(_add_fingerprint(self._db.dialect), bound)
            if not added.rowcount:
                return False
            await conn.execute(_count_turn(), bound)
        return True

    async def match(
        self, namespace: str, fingerprints: list[str]
    ) -> tuple[SessionRecord, int] | None:
        """Return the session with the longest stored history prefix, and its length."""
        if not fingerprints:
            return None
        query = (
            select(sessions, session_fingerprints.c.message_count)
            .join(session_fingerprints, session_fingerprints.c.session_id == sessions.c.id)
            .where(
                session_fingerprints.c.namespace == namespace,
                sessions.c.namespace == namespace,
                session_fingerprints.c.fingerprint.in_(fingerprints),
            )
            .order_by(session_fingerprints.c.message_count.desc(), sessions.c.last_used_at.desc())
            .limit(1)
        )
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return _record(row), int(row._mapping["message_count"])

    async def repoint(self, session_id: str, cli_session_id: str, model: str) -> None:
        """Point a session at a new Claude Code session (its history was rebuilt)."""
        async with self._db.write() as conn:
            left = (
                await conn.execute(
                    select(sessions.c.cli_session_id).where(sessions.c.id == session_id)
                )
            ).scalar_one_or_none()
            await conn.execute(
                update(sessions)
                .where(sessions.c.id == session_id)
                .values(cli_session_id=cli_session_id, model=model)
            )
            if left is not None and left != cli_session_id:
                await conn.execute(delete(transcripts).where(transcripts.c.session_id == left))

    async def head(self, session_id: str) -> str | None:
        """Return the fingerprint of the session's longest recorded conversation."""
        query = (
            select(session_fingerprints.c.fingerprint)
            .where(session_fingerprints.c.session_id == session_id)
            .order_by(
                session_fingerprints.c.message_count.desc(),
                session_fingerprints.c.created_at.desc(),
            )
            .limit(1)
        )
        async with self._db.engine.connect() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        return str(value) if value is not None else None

    async def _delete_where(self, *conditions: ColumnElement[bool]) -> list[SessionRecord]:
        async with self._db.write() as conn:
            rows = [_record(r) for r in await conn.execute(select(sessions).where(*conditions))]
            if rows:
                ids = [r.id for r in rows]
                await conn.execute(
                    delete(session_fingerprints).where(session_fingerprints.c.session_id.in_(ids))
                )
                await conn.execute(delete(sessions).where(sessions.c.id.in_(ids)))
                cli_ids = [r.cli_session_id for r in rows]
                await conn.execute(delete(transcripts).where(transcripts.c.session_id.in_(cli_ids)))
        return rows

    async def delete(self, namespace: str, key: str) -> SessionRecord | None:
        """Delete one session; return it, or ``None`` if it did not exist."""
        rows = await self._delete_where(sessions.c.namespace == namespace, sessions.c.key == key)
        return rows[0] if rows else None

    async def delete_all(self, namespace: str) -> list[SessionRecord]:
        """Delete every session of the namespace; return them."""
        return await self._delete_where(sessions.c.namespace == namespace)

    async def expire(self, before: float) -> list[SessionRecord]:
        """Delete sessions last used before ``before``; return them."""
        return await self._delete_where(sessions.c.last_used_at < before)
