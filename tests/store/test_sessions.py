"""The session store's conformance suite, run on every backend."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect

from ccgate.errors import ConfigError
from ccgate.store.database import Database, async_url
from ccgate.store.sessions import SessionExists, SqlSessionStore

# Each test's cost marker comes with its backend (the `database` fixture, conftest.py).


async def test_create_get_and_namespaces(store: SqlSessionStore) -> None:
    made = await store.create("alice", "conv-1", "sonnet", "uuid-1", now=100.0)
    assert made.id.startswith("sess_")
    got = await store.get("alice", "conv-1")
    assert got == made
    assert await store.get("bob", "conv-1") is None
    other = await store.create("bob", "conv-1", "opus", "uuid-2")
    assert other.id != made.id
    with pytest.raises(SessionExists):
        await store.create("alice", "conv-1", "sonnet", "uuid-3")


async def test_record_turn_counts_once_per_fingerprint(store: SqlSessionStore) -> None:
    made = await store.create("ns", "k", "sonnet", "u", now=1.0)
    assert await store.record_turn(
        made.id, fingerprint="f2", message_count=2, input_tokens=10, output_tokens=5, now=2.0
    )
    assert not await store.record_turn(made.id, fingerprint="f2", message_count=2, now=3.0)
    got = await store.get("ns", "k")
    assert got is not None
    assert (got.turns, got.input_tokens, got.output_tokens, got.last_used_at) == (1, 10, 5, 2.0)
    assert not await store.record_turn("sess_missing", fingerprint="x", message_count=1)


async def test_match_finds_the_longest_prefix_in_the_namespace(store: SqlSessionStore) -> None:
    a = await store.create("ns", "a", "sonnet", "u1")
    await store.record_turn(a.id, fingerprint="p2", message_count=2)
    await store.record_turn(a.id, fingerprint="p4", message_count=4)
    b = await store.create("other", "b", "sonnet", "u2")
    await store.record_turn(b.id, fingerprint="p6", message_count=6)
    found = await store.match("ns", ["p6", "p4", "p2"])
    assert found is not None and found[0].id == a.id and found[1] == 4
    assert await store.match("ns", ["zz"]) is None
    assert await store.match("ns", []) is None
    other = await store.match("other", ["p6", "p4"])
    assert other is not None and other[0].id == b.id


async def test_list_delete_and_expire(store: SqlSessionStore) -> None:
    old = await store.create("ns", "old", "sonnet", "u1", now=10.0)
    await store.record_turn(old.id, fingerprint="o", message_count=2, now=10.0)
    await store.create("ns", "new", "sonnet", "u2", now=50.0)
    await store.create("zz", "elsewhere", "sonnet", "u3", now=5.0)
    assert [s.key for s in await store.list_sessions("ns")] == ["new", "old"]
    expired = await store.expire(before=20.0)
    assert sorted(s.key for s in expired) == ["elsewhere", "old"]
    assert await store.match("ns", ["o"]) is None
    assert (await store.delete("ns", "new")) is not None
    assert await store.delete("ns", "new") is None
    await store.create("ns", "x", "sonnet", "u4")
    await store.create("ns", "y", "sonnet", "u5")
    assert len(await store.delete_all("ns")) == 2
    assert await store.list_sessions("ns") == []


async def test_concurrent_turns_are_counted_exactly(store: SqlSessionStore) -> None:
    made = await store.create("ns", "k", "sonnet", "u")
    await asyncio.gather(
        *(store.record_turn(made.id, fingerprint=f"f{i}", message_count=i) for i in range(10))
    )
    got = await store.get("ns", "k")
    assert got is not None and got.turns == 10


async def test_migrations_are_idempotent_and_create_the_schema(database: Database) -> None:
    await database.migrate()
    async with database.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"sessions", "session_fingerprints", "alembic_version"} <= names


@pytest.mark.unit
async def test_sqlite_file_is_created_under_a_new_dir(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'deep' / 'dir' / 'ccgate.db'}")
    await db.migrate()
    await db.close()
    assert (tmp_path / "deep" / "dir" / "ccgate.db").exists()


@pytest.mark.unit
def test_async_url_picks_the_async_drivers() -> None:
    assert async_url("sqlite:////tmp/x.db") == "sqlite+aiosqlite:////tmp/x.db"
    assert async_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_url("postgresql+asyncpg://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    with pytest.raises(ConfigError, match="unsupported database"):
        async_url("mysql://u@h/db")
    with pytest.raises(ConfigError):
        async_url("not a url")


async def test_two_sessions_may_share_a_history(store: SqlSessionStore) -> None:
    a = await store.create("ns", "a", "sonnet", "u1", now=1.0)
    b = await store.create("ns", "b", "sonnet", "u2", now=2.0)
    assert await store.record_turn(a.id, fingerprint="same", message_count=2, now=3.0)
    assert await store.record_turn(b.id, fingerprint="same", message_count=2, now=4.0)
    found = await store.match("ns", ["same"])
    assert found is not None and found[0].id == b.id


async def test_repoint_changes_the_cli_session(store: SqlSessionStore) -> None:
    made = await store.create("ns", "k", "sonnet", "u1")
    await store.repoint(made.id, "u2", "opus")
    got = await store.get("ns", "k")
    assert got is not None and (got.cli_session_id, got.model) == ("u2", "opus")


async def test_head_is_the_longest_recorded_state(store: SqlSessionStore) -> None:
    made = await store.create("ns", "k", "sonnet", "u1")
    assert await store.head(made.id) is None
    await store.record_turn(made.id, fingerprint="two", message_count=2, now=1.0)
    await store.record_turn(made.id, fingerprint="four", message_count=4, now=2.0)
    assert await store.head(made.id) == "four"
