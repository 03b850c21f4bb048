"""Stored responses of the OpenAI Responses API, per namespace.

Contract of a :class:`ResponseStore` (one conformance suite runs it on SQLite and
Postgres):

- ``save(record)`` stores a response or replaces the one with its id (a response
  is saved when it starts and again when it ends);
- ``get(namespace, id)`` returns a response of that namespace, ``None`` for
  another namespace's or an unknown id (a key never learns another's ids exist);
- ``chain(namespace, id, limit)`` returns the responses a conversation is made
  of, oldest first, ending with ``id``: each one's ``previous_id`` leads to the
  one before; at most ``limit`` of them;
- ``delete(namespace, id)`` removes one and tells whether it existed; the
  responses that continued it keep their own items;
- ``fail_unfinished(message)`` marks every ``queued`` or ``in_progress`` response
  ``failed`` with that message (a background response whose ccgate stopped).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import delete, insert, select, update

from ccgate.store.database import Database
from ccgate.store.tables import responses

__all__ = ["ResponseRecord", "ResponseStore", "SqlResponseStore"]


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """One stored response: the request's new input items and the response object."""

    id: str
    namespace: str
    previous_id: str | None
    status: str
    input: list[dict[str, Any]]
    body: dict[str, Any]
    created_at: float


class ResponseStore(Protocol):
    """Where responses are kept; see the module docstring for the contract."""

    async def save(self, record: ResponseRecord) -> None:
        """Store a response (or replace the one with its id)."""
        ...

    async def get(self, namespace: str, response_id: str) -> ResponseRecord | None:
        """Return a response of the namespace."""
        ...

    async def chain(self, namespace: str, response_id: str, limit: int) -> list[ResponseRecord]:
        """Return the conversation's responses, oldest first, ending with ``response_id``."""
        ...

    async def delete(self, namespace: str, response_id: str) -> bool:
        """Remove a response; tell whether it existed."""
        ...

    async def fail_unfinished(self, message: str) -> int:
        """Mark every queued or running response failed with ``message`` (at start)."""
        ...


def _record(row: Any) -> ResponseRecord:
    m = row._mapping
    return ResponseRecord(
        id=m["id"],
        namespace=m["namespace"],
        previous_id=m["previous_id"],
        status=m["status"],
        input=json.loads(m["input"]),
        body=json.loads(m["body"]),
        created_at=float(m["created_at"]),
    )


class SqlResponseStore:
    """:class:`ResponseStore` on the database."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def save(self, record: ResponseRecord) -> None:
        """Store a response (or replace the one with its id)."""
        values = {
            "namespace": record.namespace,
            "previous_id": record.previous_id,
            "status": record.status,
            "input": json.dumps(record.input, ensure_ascii=False),
            "body": json.dumps(record.body, ensure_ascii=False),
            "updated_at": time.time(),
        }
        async with self._db.write() as conn:
            done = await conn.execute(
                update(responses).where(responses.c.id == record.id).values(**values)
            )
            if not done.rowcount:
                await conn.execute(
                    insert(responses).values(id=record.id, created_at=record.created_at, **values)
                )

    async def get(self, namespace: str, response_id: str) -> ResponseRecord | None:
        """Return a response of the namespace."""
        c = responses.c
        query = select(responses).where(c.id == response_id, c.namespace == namespace)
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row is not None else None

    async def chain(self, namespace: str, response_id: str, limit: int) -> list[ResponseRecord]:
        """Return the conversation's responses, oldest first, ending with ``response_id``."""
        found: list[ResponseRecord] = []
        seen: set[str] = set()
        current: str | None = response_id
        c = responses.c
        async with self._db.engine.connect() as conn:
            while current is not None and current not in seen and len(found) < limit:
                seen.add(current)
                query = select(responses).where(c.id == current, c.namespace == namespace)
                row = (await conn.execute(query)).first()
                if row is None:
                    break
                record = _record(row)
                found.append(record)
                current = record.previous_id
        return found[::-1]

    async def delete(self, namespace: str, response_id: str) -> bool:
        """Remove a response; tell whether it existed."""
        c = responses.c
        async with self._db.write() as conn:
            done = await conn.execute(
                delete(responses).where(c.id == response_id, c.namespace == namespace)
            )
        return bool(done.rowcount)

    async def fail_unfinished(self, message: str) -> int:
        """Mark every queued or running response failed with ``message`` (at start)."""
        c = responses.c
        query = select(responses).where(c.status.in_(("queued", "in_progress")))
        async with self._db.engine.connect() as conn:
            rows = [_record(row) for row in await conn.execute(query)]
        for record in rows:
            body = {
                **record.body,
                "status": "failed",
                "error": {"code": "server_error", "message": message},
            }
            await self.save(
                ResponseRecord(
                    record.id,
                    record.namespace,
                    record.previous_id,
                    "failed",
                    record.input,
                    body,
                    record.created_at,
                )
            )
        return len(rows)
