"""The admission store's conformance suite, and the bound on waiting for a lock, on every backend.

An admission is the durable trace of an admitted request until its ledger row
exists: settled when the request ends, interrupted when its process died —
whichever comes first writes the one row.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from ccgate.errors import DatabaseBusy
from ccgate.store.admissions import INTERRUPTED, Pending, Progress, Settlement, SqlAdmissionStore
from ccgate.store.counters import Limit, SqlCounterStore, Totals, Window
from ccgate.store.database import Database
from ccgate.store.usage import SqlUsageStore, UsageRecord

# Each test's cost marker comes with its backend (the `database` fixture, conftest.py).

DAY = Window("day", 86_400 * 20_000)
MONTH = Window("month", 86_400 * 19_990)
MINUTE = Window("minute", 86_400 * 20_000 + 600)


@pytest.fixture
def admissions(database: Database) -> SqlAdmissionStore:
    return SqlAdmissionStore(database)


def _pending(admission_id: str = "adm_1", *, ledger: bool = True, **fields: object) -> Pending:
    values: dict[str, object] = {
        "namespace": "key_a",
        "endpoint": "/v1/messages",
        "model": "sonnet",
        "owner": "host/123/456",
        "admitted_at": 1000.0,
        "windows": (DAY, MONTH),
        **fields,
    }
    return Pending(admission_id, ledger=ledger, **values)  # type: ignore[arg-type]


def _record(status: str = "ok", tokens: int = 30) -> UsageRecord:
    return UsageRecord(
        namespace="key_a",
        endpoint="/v1/messages",
        model="sonnet",
        status=status,
        duration_ms=12.0,
        input_tokens=tokens - 10,
        output_tokens=10,
        cost_usd=0.25,
        created_at=1010.0,
    )


def _settlement(admission_id: str | None = "adm_1", tokens: int = 30) -> Settlement:
    return Settlement(admission_id, "key_a", (DAY, MONTH), tokens, 0.25, _record(tokens=tokens))


async def test_admit_counts_and_stores_in_one_step(
    admissions: SqlAdmissionStore, database: Database
) -> None:
    counters = SqlCounterStore(database)
    limit = Limit("requests_per_day", DAY, "requests", 1)
    assert await admissions.admit("key_a", _pending(), [MINUTE, DAY, MONTH], [limit]) is None
    [stored] = await admissions.pending()
    assert stored == _pending(seen_at=1000.0)
    assert (await counters.totals("key_a", DAY)).requests == 1
    # A reached limit stores nothing and counts nothing.
    assert await admissions.admit("key_a", _pending("adm_2"), [MINUTE, DAY], [limit]) == limit
    assert [p.id for p in await admissions.pending()] == ["adm_1"]
    assert (await counters.totals("key_a", DAY)).requests == 1
    # Without a pending admission it only counts; without windows it only stores.
    assert await admissions.admit("key_a", None, [DAY], []) is None
    assert (await counters.totals("key_a", DAY)).requests == 2
    assert await admissions.admit("local", _pending("adm_3", windows=()), [], []) is None
    assert len(await admissions.pending()) == 2


async def test_settle_writes_the_row_and_the_charge_once(
    admissions: SqlAdmissionStore, database: Database
) -> None:
    await admissions.admit("key_a", _pending(), [DAY, MONTH], [])
    assert await admissions.settle(_settlement()) is True
    assert await admissions.settle(_settlement()) is False  # a replay changes nothing
    assert await admissions.pending() == []
    assert await SqlUsageStore(database).recent("key_a") == [_record()]
    totals = await SqlCounterStore(database).totals("key_a", DAY)
    assert totals == Totals(requests=1, tokens=30, cost_usd=0.25)
    assert await SqlCounterStore(database).totals("key_a", MONTH) == totals


async def test_settle_many_settles_each_once_in_one_transaction(
    admissions: SqlAdmissionStore, database: Database
) -> None:
    for made in ("adm_1", "adm_2", "adm_3"):
        await admissions.admit("key_a", _pending(made), [DAY, MONTH], [])
    assert await admissions.settle(_settlement("adm_2")) is True
    batch = [
        _settlement("adm_1", 30),
        _settlement("adm_2", 40),  # settled already: nothing more
        _settlement("adm_3", 50),
        _settlement(None, 60),  # no admission: always
    ]
    assert await admissions.settle_many(batch) == [True, False, True, True]
    assert await admissions.settle_many(batch[:3]) == [False, False, False]  # a replay
    assert await admissions.pending() == []
    rows = await SqlUsageStore(database).recent("key_a")
    assert sorted(r.input_tokens + r.output_tokens for r in rows) == [30, 30, 50, 60]
    totals = await SqlCounterStore(database).totals("key_a", DAY)
    assert (totals.requests, totals.tokens) == (3, 30 + 30 + 50 + 60)
    assert totals.cost_usd == pytest.approx(4 * 0.25)
    assert await admissions.settle_many([]) == []


async def test_a_settlement_without_an_admission_always_applies(
    admissions: SqlAdmissionStore, database: Database
) -> None:
    assert await admissions.settle(_settlement(None)) is True
    assert len(await SqlUsageStore(database).recent("key_a")) == 1


async def test_interrupt_writes_what_was_known_and_loses_to_a_settlement(
    admissions: SqlAdmissionStore, database: Database
) -> None:
    await admissions.admit("key_a", _pending("adm_1"), [DAY], [])
    await admissions.admit("key_a", _pending("adm_2"), [DAY], [])
    spent = Progress(input_tokens=100, output_tokens=7, cost_usd=0.5, session_key="ccs_x")
    await admissions.checkpoint("host/123/456", {"adm_1": spent}, 1030.0)
    first, second = await admissions.pending()
    assert (first.progress.tokens, first.progress.cost_usd, first.seen_at) == (107, 0.5, 1030.0)
    assert first.session_key == "ccs_x"
    assert (second.progress, second.seen_at) == (Progress(), 1030.0)
    record = await admissions.interrupt(first)
    assert record is not None
    assert (record.status, record.session_key, record.created_at) == (INTERRUPTED, "ccs_x", 1030.0)
    assert (record.input_tokens, record.output_tokens, record.cost_usd) == (100, 7, 0.5)
    assert record.duration_ms == pytest.approx(30_000)
    assert await admissions.interrupt(first) is None
    assert await admissions.settle(_settlement("adm_1")) is False  # too late: interrupted
    # ... and the other way round: a settled admission is not interrupted.
    assert await admissions.settle(_settlement("adm_2")) is True
    assert await admissions.interrupt(second) is None
    rows = await SqlUsageStore(database).recent("key_a")
    assert sorted(r.status for r in rows) == [INTERRUPTED, "ok"]
    totals = await SqlCounterStore(database).totals("key_a", DAY)
    assert (totals.requests, totals.tokens) == (2, 107 + 30)


async def test_without_the_ledger_only_the_charge_is_written(
    admissions: SqlAdmissionStore, database: Database
) -> None:
    await admissions.admit("key_a", _pending(ledger=False), [DAY], [])
    [pending] = await admissions.pending()
    assert pending.ledger is False
    await admissions.checkpoint("host/123/456", {"adm_1": Progress(input_tokens=5)}, 1001.0)
    [pending] = await admissions.pending()
    assert await admissions.interrupt(pending) is not None
    assert await SqlUsageStore(database).recent("key_a") == []
    assert (await SqlCounterStore(database).totals("key_a", DAY)).tokens == 5


async def test_checkpoint_touches_only_its_owner(admissions: SqlAdmissionStore) -> None:
    await admissions.admit("key_a", _pending("adm_1"), [], [])
    await admissions.admit("key_a", _pending("adm_2", owner="other/1/2"), [], [])
    await admissions.checkpoint("host/123/456", {}, 2000.0)
    seen = {p.id: p.seen_at for p in await admissions.pending()}
    assert seen == {"adm_1": 2000.0, "adm_2": 1000.0}


async def test_settle_and_interrupt_racing_write_one_row(
    admissions: SqlAdmissionStore, database: Database
) -> None:
    for n in range(10):
        await admissions.admit("key_a", _pending(f"adm_{n}"), [DAY], [])
    pending = await admissions.pending()
    results = await asyncio.gather(
        *(admissions.settle(_settlement(p.id)) for p in pending),
        *(admissions.interrupt(p) for p in pending),
    )
    settled = sum(1 for r in results[:10] if r)
    interrupted = sum(1 for r in results[10:] if r is not None)
    assert settled + interrupted == 10
    assert len(await SqlUsageStore(database).recent("key_a")) == 10
    assert await admissions.pending() == []


@pytest.mark.unit
def test_a_settlement_survives_the_journal() -> None:
    settlement = _settlement()
    assert Settlement.from_json(settlement.to_json()) == settlement
    bare = Settlement(None, "local")
    assert Settlement.from_json(bare.to_json()) == bare


# --- a lock held by another process ---------------------------------------------------------


@asynccontextmanager
async def _locked(database: Database) -> AsyncIterator[None]:
    """Hold the database's write lock from another connection, as a backup or a CLI would."""
    if database.dialect == "sqlite":
        path = make_url(database.url).database
        assert path is not None
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.rollback()
            other.close()
        return
    async with database.engine.connect() as locker:
        await locker.execute(text("LOCK TABLE admissions, quota_counters IN EXCLUSIVE MODE"))
        try:
            yield
        finally:
            await locker.rollback()


async def test_a_write_behind_a_lock_raises_database_busy_and_leaves_nothing(
    database: Database,
) -> None:
    hurried = SqlAdmissionStore(database.hurried(0.2))
    async with _locked(database):
        with pytest.raises(DatabaseBusy) as caught:
            await hurried.admit("key_a", _pending(), [DAY], [])
        with pytest.raises(DatabaseBusy):
            await hurried.settle(_settlement(None))
    assert caught.value.status == 503 and caught.value.code == "database_busy"
    assert caught.value.headers()["retry-after"] == "1"
    assert await hurried.pending() == []
    assert (await SqlCounterStore(database).totals("key_a", DAY)).requests == 0
    # Once the lock is gone the same writes go through, on the same connections.
    assert await hurried.admit("key_a", _pending(), [DAY], []) is None
    assert await hurried.settle(_settlement()) is True


async def test_writers_queued_behind_a_lock_are_bounded_too(database: Database) -> None:
    hurried = SqlAdmissionStore(database.hurried(0.2))
    async with _locked(database):
        results = await asyncio.gather(
            *(hurried.admit("key_a", _pending(f"adm_{n}"), [DAY], []) for n in range(4)),
            return_exceptions=True,
        )
    assert all(isinstance(r, DatabaseBusy) for r in results), results
    # The full-patience store is unaffected by the hurried one's settings.
    assert await SqlAdmissionStore(database).admit("key_a", _pending(), [DAY], []) is None
