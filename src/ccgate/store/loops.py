"""Loops and the idempotency records of their messages.

Contract of a :class:`LoopStore` (one conformance suite runs it on SQLite and
Postgres):

- A loop belongs to one namespace; ``get`` finds it by id whatever the
  namespace (the caller checks ownership, to tell 403 from 404).
- ``list_loops`` pages a namespace's loops newest first: ``after`` gives the
  loops older than that one, ``before`` the newer ones; archived loops only
  when asked. It returns the page and whether more lie beyond it.
- ``archive`` stamps ``archived_at`` once.
- ``remember`` stores a message's idempotency record unless the namespace has
  one under that key already, and returns the record that holds; ``finish``
  saves its events; ``expire(before)`` removes records made before ``before``.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import replace
from typing import Any, Protocol

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ccgate.store.database import Database
from ccgate.store.records import LoopRecord, RequestRecord
from ccgate.store.tables import loop_requests, loops

__all__ = ["LoopRecord", "LoopStore", "RequestRecord", "SqlLoopStore"]


class LoopStore(Protocol):
    """Where loops are kept; see the module docstring for the contract."""

    async def create(
        self,
        namespace: str,
        *,
        title: str,
        metadata: dict[str, Any],
        permission_mode: str,
        model: str,
        session_id: str,
        now: float | None = None,
    ) -> LoopRecord:
        """Store a new loop."""
        ...

    async def get(self, loop_id: str) -> LoopRecord | None:
        """Return the loop ``loop_id``."""
        ...

    async def list_loops(
        self,
        namespace: str,
        *,
        limit: int,
        after: str | None = None,
        before: str | None = None,
        archived: bool = False,
    ) -> tuple[list[LoopRecord], bool]:
        """Return a page of the namespace's loops, newest first, and whether more follow."""
        ...

    async def archive(self, loop_id: str, *, now: float | None = None) -> LoopRecord | None:
        """Archive a loop; return it."""
        ...

    async def record_turn(self, loop_id: str, *, now: float | None = None) -> None:
        """Count a turn of the loop."""
        ...

    async def remember(self, record: RequestRecord) -> RequestRecord:
        """Store ``record`` unless its key is taken; return the record under the key."""
        ...

    async def finish(self, namespace: str, key: str, events: list[dict[str, Any]]) -> None:
        """Save the events of a request's turn, which is over."""
        ...

    async def expire(self, before: float) -> int:
        """Delete idempotency records made before ``before``; return how many."""
        ...


def _loop(row: Any) -> LoopRecord:
    m = row._mapping
    return LoopRecord(
        id=m["id"],
        namespace=m["namespace"],
        title=m["title"],
        metadata=json.loads(m["metadata"] or "{}"),
        permission_mode=m["permission_mode"],
        model=m["model"],
        session_id=m["session_id"],
        created_at=m["created_at"],
        archived_at=m["archived_at"],
        last_turn_at=m["last_turn_at"],
        turns=m["turns"],
    )


def _request(row: Any) -> RequestRecord:
    m = row._mapping
    return RequestRecord(
        namespace=m["namespace"],
        key=m["key"],
        loop_id=m["loop_id"],
        request_hash=m["request_hash"],
        turn_id=m["turn_id"],
        events=json.loads(m["events"] or "[]"),
        done=bool(m["done"]),
        created_at=m["created_at"],
    )


class SqlLoopStore:
    """A :class:`LoopStore` on SQLAlchemy Core (SQLite or Postgres)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(
        self,
        namespace: str,
        *,
        title: str,
        metadata: dict[str, Any],
        permission_mode: str,
        model: str,
        session_id: str,
        now: float | None = None,
    ) -> LoopRecord:
        """Store a new loop."""
        made = LoopRecord(
            id="loop_" + secrets.token_hex(12),
            namespace=namespace,
            title=title,
            metadata=metadata,
            permission_mode=permission_mode,
            model=model,
            session_id=session_id,
            created_at=time.time() if now is None else now,
        )
        values = {
            "id": made.id,
            "namespace": namespace,
            "title": title,
            "metadata": json.dumps(metadata),
            "permission_mode": permission_mode,
            "model": model,
            "session_id": session_id,
            "created_at": made.created_at,
        }
        async with self._db.write() as conn:
            await conn.execute(insert(loops).values(**values))
        return made

    async def get(self, loop_id: str) -> LoopRecord | None:
        """Return the loop ``loop_id``."""
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(select(loops).where(loops.c.id == loop_id))).first()
        return _loop(row) if row else None

    async def list_loops(
        self,
        namespace: str,
        *,
        limit: int,
        after: str | None = None,
        before: str | None = None,
        archived: bool = False,
    ) -> tuple[list[LoopRecord], bool]:
        """Return a page of the namespace's loops, newest first, and whether more follow."""
        c = loops.c
        query = select(loops).where(c.namespace == namespace)
        if not archived:
            query = query.where(c.archived_at.is_(None))
        cursor = await self.get(after or before or "") if (after or before) else None
        if (after or before) and (cursor is None or cursor.namespace != namespace):
            return [], False
        newer_first = before is None
        if cursor is not None:
            older = or_(
                c.created_at < cursor.created_at,
                and_(c.created_at == cursor.created_at, c.id < cursor.id),
            )
            newer = or_(
                c.created_at > cursor.created_at,
                and_(c.created_at == cursor.created_at, c.id > cursor.id),
            )
            query = query.where(older if after else newer)
        order = (c.created_at.desc(), c.id.desc()) if newer_first else (c.created_at, c.id)
        async with self._db.engine.connect() as conn:
            rows = [_loop(r) for r in await conn.execute(query.order_by(*order).limit(limit + 1))]
        more = len(rows) > limit
        page = rows[:limit]
        return (page if newer_first else list(reversed(page))), more

    async def archive(self, loop_id: str, *, now: float | None = None) -> LoopRecord | None:
        """Archive a loop; return it."""
        stamp = time.time() if now is None else now
        async with self._db.write() as conn:
            await conn.execute(
                update(loops)
                .where(loops.c.id == loop_id, loops.c.archived_at.is_(None))
                .values(archived_at=stamp)
            )
            row = (await conn.execute(select(loops).where(loops.c.id == loop_id))).first()
        return _loop(row) if row else None

    async def record_turn(self, loop_id: str, *, now: float | None = None) -> None:
        """Count a turn of the loop."""
        stamp = time.time() if now is None else now
        async with self._db.write() as conn:
            await conn.execute(
                update(loops)
                .where(loops.c.id == loop_id)
                .values(turns=loops.c.turns + 1, last_turn_at=stamp)
            )

    async def remember(self, record: RequestRecord) -> RequestRecord:
        """Store ``record`` unless its key is taken; return the record under the key."""
        values = {
            "namespace": record.namespace,
            "key": record.key,
            "loop_id": record.loop_id,
            "request_hash": record.request_hash,
            "turn_id": record.turn_id,
            "events": json.dumps(record.events),
            "done": record.done,
            "created_at": record.created_at,
        }
        try:
            async with self._db.write() as conn:
                await conn.execute(insert(loop_requests).values(**values))
            return replace(record)
        except IntegrityError:
            pass
        c = loop_requests.c
        query = select(loop_requests).where(c.namespace == record.namespace, c.key == record.key)
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _request(row) if row else record

    async def finish(self, namespace: str, key: str, events: list[dict[str, Any]]) -> None:
        """Save the events of a request's turn, which is over."""
        c = loop_requests.c
        async with self._db.write() as conn:
            await conn.execute(
                update(loop_requests)
                .where(c.namespace == namespace, c.key == key)
                .values(events=json.dumps(events), done=True)
            )

    async def expire(self, before: float) -> int:
        """Delete idempotency records made before ``before``; return how many."""
        async with self._db.write() as conn:
            result = await conn.execute(
                delete(loop_requests).where(loop_requests.c.created_at < before)
            )
        return int(result.rowcount or 0)
