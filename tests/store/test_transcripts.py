"""The transcript store's conformance suite, run on every backend."""

from __future__ import annotations

import asyncio
import os
import zlib

from sqlalchemy import select

from ccgate.store.database import Database
from ccgate.store.sessions import SqlSessionStore
from ccgate.store.tables import transcript_parts, transcripts
from ccgate.store.transcripts import MAX_PARTS, SqlTranscriptStore, digest_of

# Each test's cost marker comes with its backend (the `database` fixture, conftest.py).

LINES = b'{"type":"user","message":{"role":"user","content":"hello"}}\n' * 50


async def test_save_load_and_digest(database: Database) -> None:
    shared = SqlTranscriptStore(database)
    assert await shared.load("s1") is None
    assert await shared.digest("s1") is None
    assert not await shared.has("s1")
    digest = await shared.save("s1", LINES, now=10.0)
    assert digest == digest_of(LINES)
    assert await shared.load("s1") == LINES
    assert await shared.digest("s1") == digest
    assert await shared.has("s1")
    assert await shared.load("s2") is None


async def test_save_replaces_the_whole_transcript(database: Database) -> None:
    shared = SqlTranscriptStore(database)
    await shared.save("s1", LINES, now=10.0)
    longer = LINES + b'{"type":"assistant"}\n'
    assert await shared.save("s1", longer, now=20.0) == digest_of(longer)
    assert await shared.load("s1") == longer
    shorter = b'{"type":"user"}\n'  # a rewound transcript is shorter: it still replaces
    await shared.save("s1", shorter, now=30.0)
    assert await shared.load("s1") == shorter
    assert await shared.digest("s1") == digest_of(shorter)


async def test_content_is_compressed_with_its_size(database: Database) -> None:
    shared = SqlTranscriptStore(database)
    await shared.save("s1", LINES, now=42.0)
    async with database.engine.connect() as conn:
        row = (
            await conn.execute(select(transcripts).where(transcripts.c.session_id == "s1"))
        ).one()
    assert row.size == len(LINES)
    assert len(row.content) < len(LINES) // 4
    assert zlib.decompress(row.content) == LINES
    assert row.updated_at == 42.0


async def test_any_bytes_round_trip(database: Database) -> None:
    shared = SqlTranscriptStore(database)
    blob = os.urandom(300_000) + "ünïcødé\n".encode() + b"\x00\xff"
    await shared.save("big", blob)
    assert await shared.load("big") == blob
    await shared.save("empty", b"")
    assert await shared.load("empty") == b""
    assert await shared.has("empty")


async def test_delete(database: Database) -> None:
    shared = SqlTranscriptStore(database)
    for name in ("a", "b", "c"):
        await shared.save(name, name.encode())
    assert await shared.delete(["a", "b", "nobody"]) == 2
    assert await shared.delete([]) == 0
    assert await shared.load("a") is None and await shared.load("b") is None
    assert await shared.load("c") == b"c"


async def test_concurrent_saves_leave_one_whole_version(database: Database) -> None:
    shared = SqlTranscriptStore(database)
    versions = [LINES * n for n in range(1, 6)]
    await asyncio.gather(*(shared.save("s", v) for v in versions))
    stored = await shared.load("s")
    assert stored in versions
    assert await shared.digest("s") == digest_of(stored or b"")


async def test_a_sessions_transcript_goes_with_it(database: Database) -> None:
    sessions = SqlSessionStore(database)
    shared = SqlTranscriptStore(database)
    old = await sessions.create("ns", "old", "sonnet", "cli-old", now=10.0)
    kept = await sessions.create("ns", "kept", "sonnet", "cli-kept", now=50.0)
    gone = await sessions.create("ns", "gone", "sonnet", "cli-gone", now=50.0)
    other = await sessions.create("zz", "all", "sonnet", "cli-all", now=50.0)
    for name in ("cli-old", "cli-kept", "cli-gone", "cli-all", "loop-session"):
        await shared.save(name, name.encode())
    assert [r.id for r in await sessions.expire(before=20.0)] == [old.id]
    assert not await shared.has("cli-old")
    assert await sessions.delete("ns", "gone") is not None
    assert not await shared.has("cli-gone")
    assert [r.id for r in await sessions.delete_all("zz")] == [other.id]
    assert not await shared.has("cli-all")
    # A rebuilt conversation leaves its old Claude Code session: that transcript goes.
    await shared.save("cli-new", b"new")
    await sessions.repoint(kept.id, "cli-new", "opus")
    assert not await shared.has("cli-kept")
    assert await shared.load("cli-new") == b"new"
    assert gone.id != kept.id
    # Transcripts that belong to no conversation (a loop's) are not touched.
    assert await shared.load("loop-session") == b"loop-session"


# --- what a turn added, appended ------------------------------------------------------------


async def _parts(database: Database, session_id: str) -> int:
    async with database.engine.connect() as conn:
        rows = await conn.execute(
            select(transcript_parts.c.seq).where(transcript_parts.c.session_id == session_id)
        )
        return len(rows.all())


async def test_append_adds_a_turn_to_the_version_it_grew_from(database: Database) -> None:
    shared = SqlTranscriptStore(database)
    first = await shared.save("s1", LINES)
    turn = b'{"type":"assistant","message":{"content":"hi"}}\n'
    grown = LINES + turn
    assert await shared.append("s1", first, turn, digest_of(grown)) is True
    assert await shared.load("s1") == grown
    assert await shared.digest("s1") == digest_of(grown)
    more = grown + turn * 3
    assert await shared.append("s1", digest_of(grown), turn * 3, digest_of(more)) is True
    assert await shared.load("s1") == more and await _parts(database, "s1") == 2
    async with database.engine.connect() as conn:
        size = (
            await conn.execute(select(transcripts.c.size).where(transcripts.c.session_id == "s1"))
        ).scalar_one()
    assert size == len(more)
    # Another version stored meanwhile (another replica): nothing changes, save whole instead.
    assert await shared.append("s1", first, turn, "f" * 64) is False
    assert await shared.load("s1") == more
    assert await shared.append("nobody", first, turn, "f" * 64) is False
    assert await shared.load("nobody") is None
    # Saving whole starts over, without parts.
    await shared.save("s1", b"rewound\n")
    assert await shared.load("s1") == b"rewound\n" and await _parts(database, "s1") == 0


async def test_parts_are_bounded_then_the_transcript_is_saved_whole(database: Database) -> None:
    shared = SqlTranscriptStore(database)
    content = b"0\n"
    digest = await shared.save("s1", content)
    for n in range(MAX_PARTS):
        line = f"{n + 1}\n".encode()
        grown = content + line
        assert await shared.append("s1", digest, line, digest_of(grown)) is True
        content, digest = grown, digest_of(grown)
    assert await shared.append("s1", digest, b"x\n", digest_of(content + b"x\n")) is False
    assert await shared.load("s1") == content
    await shared.save("s1", content + b"x\n")
    assert await _parts(database, "s1") == 0


async def test_parts_go_with_their_transcript(database: Database) -> None:
    sessions = SqlSessionStore(database)
    shared = SqlTranscriptStore(database)
    await sessions.create("ns", "gone", "sonnet", "cli-gone", now=50.0)
    for name in ("cli-gone", "loop-session"):
        base = await shared.save(name, b"a\n")
        assert await shared.append(name, base, b"b\n", digest_of(b"a\nb\n"))
    assert await sessions.delete("ns", "gone") is not None
    assert await _parts(database, "cli-gone") == 0
    assert await shared.delete(["loop-session"]) == 1
    assert await _parts(database, "loop-session") == 0
