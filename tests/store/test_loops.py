"""The loop store's conformance suite, run on every backend."""

from __future__ import annotations

import pytest

from ccgate.store.database import Database
from ccgate.store.loops import RequestRecord, SqlLoopStore

# Each test's cost marker comes with its backend (the `database` fixture, conftest.py).


@pytest.fixture
def loops(database: Database) -> SqlLoopStore:
    return SqlLoopStore(database)


async def _make(loops: SqlLoopStore, namespace: str, at: float, title: str = "t") -> str:
    made = await loops.create(
        namespace,
        title=title,
        metadata={"k": [1, 2]},
        permission_mode="default",
        model="sonnet",
        session_id="sid-" + title,
        now=at,
    )
    return made.id


async def test_create_get_and_turns(loops: SqlLoopStore) -> None:
    loop_id = await _make(loops, "alice", 10.0, "first")
    got = await loops.get(loop_id)
    assert got is not None and loop_id.startswith("loop_")
    assert (got.namespace, got.title, got.metadata, got.session_id) == (
        "alice",
        "first",
        {"k": [1, 2]},
        "sid-first",
    )
    await loops.record_turn(loop_id, now=20.0)
    got = await loops.get(loop_id)
    assert got is not None and (got.turns, got.last_turn_at) == (1, 20.0)
    assert await loops.get("loop_missing") is None


async def test_pages_newest_first_with_cursors(loops: SqlLoopStore) -> None:
    ids = [await _make(loops, "alice", float(i), f"l{i}") for i in range(5)]
    await _make(loops, "bob", 99.0, "other")
    newest = list(reversed(ids))
    page, more = await loops.list_loops("alice", limit=2)
    assert [r.id for r in page] == newest[:2] and more
    page, more = await loops.list_loops("alice", limit=2, after=newest[1])
    assert [r.id for r in page] == newest[2:4] and more
    page, more = await loops.list_loops("alice", limit=2, after=newest[3])
    assert [r.id for r in page] == newest[4:] and not more
    page, more = await loops.list_loops("alice", limit=2, before=newest[3])
    assert [r.id for r in page] == newest[1:3] and more
    page, _ = await loops.list_loops("alice", limit=10, after="loop_unknown")
    assert page == []
    bobs, _ = await loops.list_loops("bob", limit=10, after=newest[0])
    assert bobs == []  # a cursor of another namespace finds nothing


async def test_archive_once_and_hidden_unless_asked(loops: SqlLoopStore) -> None:
    kept = await _make(loops, "alice", 1.0, "kept")
    gone = await _make(loops, "alice", 2.0, "gone")
    archived = await loops.archive(gone, now=5.0)
    assert archived is not None and archived.archived_at == 5.0
    again = await loops.archive(gone, now=9.0)
    assert again is not None and again.archived_at == 5.0
    assert [r.id for r in (await loops.list_loops("alice", limit=10))[0]] == [kept]
    everything, _ = await loops.list_loops("alice", limit=10, archived=True)
    assert {r.id for r in everything} == {kept, gone}


async def test_idempotency_records_keep_the_first_and_expire(loops: SqlLoopStore) -> None:
    first = RequestRecord("alice", "key-1", "loop_a", "h1", "turn_1", [], False, 100.0)
    assert await loops.remember(first) == first
    later = RequestRecord("alice", "key-1", "loop_a", "h2", "turn_2", [], False, 101.0)
    assert (await loops.remember(later)).turn_id == "turn_1"
    other_ns = RequestRecord("bob", "key-1", "loop_b", "h3", "turn_3", [], False, 102.0)
    assert (await loops.remember(other_ns)).turn_id == "turn_3"
    await loops.finish("alice", "key-1", [{"event": "Queued", "position": 1}])
    stored = await loops.remember(later)
    assert stored.done and stored.events == [{"event": "Queued", "position": 1}]
    assert await loops.expire(101.5) == 1
    assert (await loops.remember(later)).turn_id == "turn_2"  # the old one is gone
