"""Claude Code's session transcripts, kept in the database so every replica can resume a session.

A Claude Code session is a JSONL file under one replica's data dir; a copy of
it here lets another replica (one that never saw the conversation, or the one
that takes over from a replica that died) write the file back and resume the
same session. The Claude adapter (``claude.shared``) decides when to save and
load; this module only keeps the bytes.

Contract of a :class:`TranscriptStore` (one conformance suite runs it on SQLite
and Postgres):

- A transcript is keyed by its Claude Code session id and holds the file's
  bytes exactly: ``load`` returns what the last ``save`` of that id was given,
  or ``None`` when there is none.
- ``save`` replaces the whole transcript (an upsert) and returns its digest
  (SHA-256 of the bytes, hex); saving the same bytes again changes nothing but
  ``updated_at``.
- ``digest`` returns the stored transcript's digest without reading its
  content (cheap: a replica compares it with its own file's before deciding
  whether to load); ``has`` tells whether one is stored.
- ``delete`` removes the given sessions' transcripts (unknown ids are no
  error) and returns how many it removed. A conversation's transcript goes with
  its session: ``store.sessions`` deletes it in the transaction that expires,
  deletes or re-points the session.
- ``append(session_id, base, tail, digest)`` adds ``tail`` to the stored
  transcript if its digest is ``base`` (the version the caller last stored or
  fetched), and records ``digest`` (the caller's digest of the whole new
  content) as its digest; it returns ``False`` and changes nothing when the
  digest is another, when none is stored, or when ``MAX_PARTS`` parts were
  appended since the transcript was last saved whole (the caller then saves it
  whole). A turn thus stores what it added, not the whole file again.
- The content is stored zlib-compressed (transcripts are repetitive JSON), with
  its uncompressed ``size``; so is each appended part.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import zlib
from collections.abc import Callable, Collection
from typing import Protocol

from sqlalchemy import delete, insert, literal, select, union_all, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ccgate.store.database import Database
from ccgate.store.tables import transcript_parts, transcripts

__all__ = ["MAX_PARTS", "SqlTranscriptStore", "TranscriptStore", "digest_of"]

#: How many parts may be appended to a transcript before it is saved whole again (a load
#: reads at most this many parts).
MAX_PARTS = 32


#: Content larger than this is (de)compressed in a thread, not on the event loop.
_LARGE = 256 * 1024


async def _off_loop(work: Callable[[bytes], bytes], data: bytes) -> bytes:
    return await asyncio.to_thread(work, data) if len(data) > _LARGE else work(data)


def digest_of(content: bytes) -> str:
    """Return the digest a :class:`TranscriptStore` gives ``content`` (SHA-256, hex)."""
    return hashlib.sha256(content).hexdigest()


class TranscriptStore(Protocol):
    """Where session transcripts are shared; see the module docstring for the contract."""

    async def save(self, session_id: str, content: bytes, *, now: float | None = None) -> str:
        """Store ``content`` as the session's transcript; return its digest."""
        ...

    async def append(
        self, session_id: str, base: str, tail: bytes, digest: str, *, now: float | None = None
    ) -> bool:
        """Add ``tail`` to the transcript if it is still version ``base``; say whether it was."""
        ...

    async def load(self, session_id: str) -> bytes | None:
        """Return the session's transcript, or ``None`` when none is stored."""
        ...

    async def digest(self, session_id: str) -> str | None:
        """Return the stored transcript's digest, or ``None`` when none is stored."""
        ...

    async def has(self, session_id: str) -> bool:
        """Tell whether the session's transcript is stored."""
        ...

    async def delete(self, session_ids: Collection[str]) -> int:
        """Delete the sessions' transcripts; return how many there were."""
        ...


class SqlTranscriptStore:
    """A :class:`TranscriptStore` on SQLAlchemy Core (SQLite or Postgres)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def save(self, session_id: str, content: bytes, *, now: float | None = None) -> str:
        """Store ``content`` as the session's transcript; return its digest."""
        digest = digest_of(content)
        values = {
            "content": await _off_loop(zlib.compress, content),
            "size": len(content),
            "digest": digest,
            "updated_at": time.time() if now is None else now,
            "parts": 0,
        }
        make = pg_insert if self._db.dialect == "postgresql" else sqlite_insert
        upsert = (
            make(transcripts)
            .values(session_id=session_id, **values)
            .on_conflict_do_update(index_elements=[transcripts.c.session_id], set_=values)
        )
        async with self._db.write() as conn:
            await conn.execute(upsert)
            await conn.execute(
                delete(transcript_parts).where(transcript_parts.c.session_id == session_id)
            )
        return digest

    async def append(
        self, session_id: str, base: str, tail: bytes, digest: str, *, now: float | None = None
    ) -> bool:
        """Add ``tail`` to the transcript if it is still version ``base``; say whether it was."""
        packed = await _off_loop(zlib.compress, tail)
        c = transcripts.c
        grow = (
            update(transcripts)
            .where(c.session_id == session_id, c.digest == base, c.parts < MAX_PARTS)
            .values(
                digest=digest,
                size=c.size + len(tail),
                parts=c.parts + 1,
                updated_at=time.time() if now is None else now,
            )
            .returning(c.parts)
        )
        async with self._db.write() as conn:
            seq = (await conn.execute(grow)).scalar_one_or_none()
            if seq is None:
                return False
            await conn.execute(
                insert(transcript_parts).values(
                    session_id=session_id, seq=seq, content=packed, size=len(tail)
                )
            )
        return True

    async def load(self, session_id: str) -> bytes | None:
        """Return the session's transcript, or ``None`` when none is stored."""
        whole, part = transcripts.c, transcript_parts.c
        # One statement: the stored content and its parts as one snapshot, in order.
        query = union_all(
            select(literal(0).label("seq"), whole.content).where(whole.session_id == session_id),
            select(part.seq, part.content).where(part.session_id == session_id),
        ).order_by("seq")
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        if not rows or rows[0].seq != 0:
            return None
        pieces = [await _off_loop(zlib.decompress, row.content) for row in rows]
        return b"".join(pieces)

    async def digest(self, session_id: str) -> str | None:
        """Return the stored transcript's digest, or ``None`` when none is stored."""
        query = select(transcripts.c.digest).where(transcripts.c.session_id == session_id)
        async with self._db.engine.connect() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        return str(value) if value is not None else None

    async def has(self, session_id: str) -> bool:
        """Tell whether the session's transcript is stored."""
        return await self.digest(session_id) is not None

    async def delete(self, session_ids: Collection[str]) -> int:
        """Delete the sessions' transcripts; return how many there were."""
        if not session_ids:
            return 0
        async with self._db.write() as conn:
            done = await conn.execute(
                delete(transcripts).where(transcripts.c.session_id.in_(list(session_ids)))
            )
        return int(done.rowcount or 0)
