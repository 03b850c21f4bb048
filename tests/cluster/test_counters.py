"""Quota counters in Redis: the counter store's contract, exact across replicas, and outages.

The store's conformance tests (``tests/store/test_keys_usage.py``) run here
once more, on Redis; then what only Redis has: several clients counting at
once as several replicas would, keys that hold any namespace, expiry in place
of a sweep, and what an unreachable Redis does under each ``redis_outage``.
"""

from __future__ import annotations

import asyncio
import calendar
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from ccgate.access.quotas import Quotas
from ccgate.cluster.redis import OUTAGES, Outage, Shared
from ccgate.errors import QuotaExceeded, SharedStateUnavailable
from ccgate.store.admissions import Pending, Settlement, SqlAdmissionStore
from ccgate.store.counters import Limit, SqlCounterStore, Totals, Window
from ccgate.store.database import Database
from ccgate.store.keys import KeyRecord, Quota
from ccgate.store.redis_counters import GRACE, RedisCounterStore, RedisRunning
from ccgate.store.usage import SqlUsageStore, UsageRecord
from tests.cluster.conftest import Replica

# The store's own conformance suite, collected again here with `counters` on Redis (its
# sweep test is not: Redis expires windows instead, tested below).
from tests.store.test_keys_usage import (
    test_admit_counts_until_the_ceiling,
    test_concurrent_admissions_never_pass_the_last_unit,
    test_tokens_cost_and_reservations,
)

__all__ = [
    "test_admit_counts_until_the_ceiling",
    "test_concurrent_admissions_never_pass_the_last_unit",
    "test_tokens_cost_and_reservations",
]

pytestmark = pytest.mark.server

NOW = calendar.timegm((2026, 11, 24, 12, 34, 56, 0, 0, 0))
MINUTE = Window("minute", NOW - 56)
DAY = Window("day", calendar.timegm((2026, 11, 24, 0, 0, 0, 0, 0, 0)))
MONTH = Window("month", calendar.timegm((2026, 11, 1, 0, 0, 0, 0, 0, 0)))


@pytest.fixture
def counters(redis: Shared) -> RedisCounterStore:
    return RedisCounterStore(redis)


# --- exact across replicas ------------------------------------------------------------------


async def test_three_replicas_admit_exactly_the_limit(redis: Shared, replica: Replica) -> None:
    stores = [RedisCounterStore(replica()) for _ in range(3)]
    limit = Limit("requests_per_minute", MINUTE, "requests", 5)
    results = await asyncio.gather(
        *(stores[n % 3].admit("key_a", [MINUTE, DAY, MONTH], [limit]) for n in range(20))
    )
    assert sum(r is None for r in results) == 5
    assert all(r == limit for r in results if r is not None)
    for window in (MINUTE, DAY, MONTH):
        assert (await RedisCounterStore(redis).totals("key_a", window)).requests == 5


async def test_a_reservation_holds_the_last_unit(counters: RedisCounterStore) -> None:
    await counters.charge("key_a", [DAY, MONTH], tokens=99, cost_usd=0.5)
    tokens = Limit("tokens_per_day", DAY, "tokens", 100, reserved=1)
    assert await counters.admit("key_a", [MINUTE, DAY], [tokens]) == tokens
    assert await counters.totals("key_a", MINUTE) == Totals()  # refused: nothing counted
    # A limit on a window the request is not counted in is read, and that window left alone.
    budget = Limit("budget_usd_per_month", MONTH, "cost_usd", 0.5 + 1e-6, reserved=1e-6)
    assert await counters.admit("key_a", [MINUTE], [budget]) == budget
    looser = Limit("budget_usd_per_month", MONTH, "cost_usd", 0.5 + 2e-6, reserved=1e-6)
    assert await counters.admit("key_a", [MINUTE], [looser]) is None
    assert await counters.totals("key_a", MINUTE) == Totals(requests=1)
    assert await counters.totals("key_a", MONTH) == Totals(0, 99, 0.5)


async def test_charges_add_up_and_every_replica_reads_them(
    counters: RedisCounterStore, replica: Replica
) -> None:
    await counters.admit("key_a", [DAY, MONTH], [])
    await counters.charge("key_a", [DAY, MONTH], tokens=95, cost_usd=0.5)
    await counters.charge("key_a", [DAY, DAY], tokens=4, cost_usd=0.25)  # a window once
    await counters.charge("key_a", [DAY], tokens=0, cost_usd=0.0)  # nothing to add
    other = RedisCounterStore(replica())
    assert await other.totals("key_a", DAY) == Totals(1, 99, 0.75)
    assert await other.totals("key_a", MONTH) == Totals(1, 95, 0.5)
    assert await other.totals("key_b", DAY) == Totals()


async def test_any_namespace_has_keys_of_its_own(
    counters: RedisCounterStore, redis: Shared
) -> None:
    odd = ["a:b", "a%3Ab", "*", "a*", "[x]", "{tag}", "key_a minute", "é\n\x00", "", "a:b:minute"]
    for n, namespace in enumerate(odd, start=1):
        for _ in range(n):
            await counters.admit(namespace, [MINUTE], [])
    for n, namespace in enumerate(odd, start=1):
        assert (await counters.totals(namespace, MINUTE)).requests == n, namespace
    key = counters.key("a:b", MINUTE)
    assert key.endswith(f"quota:{{a%3Ab}}:minute:{MINUTE.start}")
    for namespace in odd:
        tail = counters.key(namespace, MINUTE).removeprefix(redis.prefix)
        assert not set(tail) & set("*?[]\\"), tail  # nothing SCAN MATCH would read as a glob
    found = [k async for k in redis.client.scan_iter(match=redis.prefix + "quota:*")]
    assert len(found) == len(odd)


async def test_windows_expire_by_themselves_so_sweep_does_nothing(
    counters: RedisCounterStore, redis: Shared
) -> None:
    now = time.time()
    minute, day = Window("minute", int(now // 60) * 60), Window("day", int(now // 86_400) * 86_400)
    old = Window("day", 0)
    await counters.admit("key_a", [minute, day, old], [])
    await counters.charge("key_a", [MONTH], tokens=1, cost_usd=0.0)
    left = {w: await redis.client.ttl(counters.key("key_a", w)) for w in (minute, day, old, MONTH)}
    assert minute.start + 60 + 3600 - now - 2 <= left[minute] <= minute.start + 60 + 3600 - now + 1
    assert day.start + 3 * 86_400 - now - 2 <= left[day] <= day.start + 3 * 86_400 - now + 1
    # A window long past is kept for its grace from the write (what the sweeper would keep).
    assert GRACE["day"] - 2 <= left[old] <= GRACE["day"]
    assert left[MONTH] >= GRACE["month"] - 2
    assert await counters.sweep("minute", int(now) + 3600) == 0
    assert (await counters.totals("key_a", minute)).requests == 1


# --- an unreachable Redis -------------------------------------------------------------------


@pytest.fixture
def closed_port() -> Iterator[str]:
    """Return the URL of a Redis that is not there (a port nothing listens on)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
async def gone(closed_port: str) -> AsyncIterator[dict[Outage, RedisCounterStore]]:
    """Return counters on a Redis that does not answer, under each outage policy."""
    made = {o: Shared(closed_port, prefix="ccgate-gone:", outage=o) for o in OUTAGES}
    yield {o: RedisCounterStore(shared) for o, shared in made.items()}
    for shared in made.values():
        await shared.aclose()


async def test_closed_refuses_fast_when_redis_is_gone(
    gone: dict[Outage, RedisCounterStore],
) -> None:
    counters = gone["closed"]
    limit = Limit("requests_per_minute", MINUTE, "requests", 5)
    started = time.monotonic()
    with pytest.raises(SharedStateUnavailable) as caught:
        await counters.admit("key_a", [MINUTE, DAY], [limit])
    assert time.monotonic() - started < 2
    assert caught.value.status == 503 and caught.value.code == "shared_state_unavailable"
    with pytest.raises(SharedStateUnavailable):
        await counters.charge("key_a", [DAY], tokens=5, cost_usd=0.1)
    with pytest.raises(SharedStateUnavailable):
        await counters.totals("key_a", DAY)
    # Nothing to ask Redis: nothing that could fail.
    assert await counters.admit("key_a", [], []) is None
    await counters.charge("key_a", [DAY], tokens=0, cost_usd=0.0)


async def test_open_admits_uncounted_and_drops_charges_when_redis_is_gone(
    gone: dict[Outage, RedisCounterStore],
) -> None:
    counters = gone["open"]
    limit = Limit("requests_per_minute", MINUTE, "requests", 0)  # would refuse every request
    started = time.monotonic()
    assert await counters.admit("key_a", [MINUTE, DAY], [limit]) is None
    assert time.monotonic() - started < 2
    await counters.charge("key_a", [DAY], tokens=5, cost_usd=0.1)
    await counters.refund("key_a", [DAY])
    with pytest.raises(SharedStateUnavailable):
        await counters.totals("key_a", DAY)


# --- the admission store with its counters in Redis -----------------------------------------


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'ccgate.db'}")
    await db.migrate()
    yield db
    await db.close()


@pytest.fixture
def admissions(database: Database, counters: RedisCounterStore) -> SqlAdmissionStore:
    return SqlAdmissionStore(database, counters=counters)


def _pending(admission_id: str = "adm_1") -> Pending:
    return Pending(
        admission_id, "key_a", "/v1/messages", "sonnet", "host/1/2", 1000.0, windows=(DAY, MONTH)
    )


def _settlement(admission_id: str | None = "adm_1") -> Settlement:
    record = UsageRecord(
        namespace="key_a",
        endpoint="/v1/messages",
        model="sonnet",
        status="ok",
        duration_ms=12.0,
        input_tokens=20,
        output_tokens=10,
        cost_usd=0.25,
        created_at=1010.0,
    )
    return Settlement(admission_id, "key_a", (DAY, MONTH), 30, 0.25, record)


async def test_admit_counts_in_redis_and_stores_the_record_in_sql(
    admissions: SqlAdmissionStore, counters: RedisCounterStore, database: Database
) -> None:
    limit = Limit("requests_per_day", DAY, "requests", 1)
    assert await admissions.admit("key_a", _pending(), [MINUTE, DAY, MONTH], [limit]) is None
    [stored] = await admissions.pending()
    assert stored.id == "adm_1" and stored.seen_at == 1000.0
    assert (await counters.totals("key_a", DAY)).requests == 1
    assert await SqlCounterStore(database).totals("key_a", DAY) == Totals()  # not in SQL
    # A reached limit stores nothing and counts nothing.
    assert await admissions.admit("key_a", _pending("adm_2"), [MINUTE, DAY], [limit]) == limit
    assert [p.id for p in await admissions.pending()] == ["adm_1"]
    assert (await counters.totals("key_a", MINUTE)).requests == 1
    # Without a pending admission it only counts.
    assert await admissions.admit("key_a", None, [DAY], []) is None
    assert (await counters.totals("key_a", DAY)).requests == 2


async def test_a_record_that_cannot_be_stored_refunds_its_count(
    admissions: SqlAdmissionStore, counters: RedisCounterStore
) -> None:
    assert await admissions.admit("key_a", _pending(), [MINUTE, DAY, MONTH], []) is None
    with pytest.raises(IntegrityError):  # the same id again: the insert fails
        await admissions.admit("key_a", _pending(), [MINUTE, DAY, MONTH], [])
    for window in (MINUTE, DAY, MONTH):
        assert (await counters.totals("key_a", window)).requests == 1
    assert len(await admissions.pending()) == 1


async def test_settle_charges_redis_once_and_writes_the_row_in_sql(
    admissions: SqlAdmissionStore, counters: RedisCounterStore, database: Database
) -> None:
    await admissions.admit("key_a", _pending(), [MINUTE, DAY, MONTH], [])
    assert await admissions.settle(_settlement()) is True
    assert await admissions.settle(_settlement()) is False  # a replay changes nothing
    assert await admissions.pending() == []
    assert [r.status for r in await SqlUsageStore(database).recent("key_a")] == ["ok"]
    assert await counters.totals("key_a", DAY) == Totals(1, 30, 0.25)
    assert await counters.totals("key_a", MONTH) == Totals(1, 30, 0.25)
    assert await SqlCounterStore(database).totals("key_a", DAY) == Totals()


async def test_a_settlement_waits_while_redis_is_gone_under_closed(
    admissions: SqlAdmissionStore,
    counters: RedisCounterStore,
    database: Database,
    gone: dict[Outage, RedisCounterStore],
) -> None:
    await admissions.admit("key_a", _pending(), [DAY, MONTH], [])
    cut_off = SqlAdmissionStore(database, counters=gone["closed"])
    with pytest.raises(SharedStateUnavailable):
        await cut_off.settle(_settlement())
    # Rolled back whole: the admission waits, no row, no charge (the journal retries it).
    assert [p.id for p in await admissions.pending()] == ["adm_1"]
    assert await SqlUsageStore(database).recent("key_a") == []
    assert await admissions.settle(_settlement()) is True
    assert await counters.totals("key_a", DAY) == Totals(1, 30, 0.25)


async def test_under_open_requests_go_on_uncounted_while_redis_is_gone(
    database: Database, gone: dict[Outage, RedisCounterStore]
) -> None:
    admissions = SqlAdmissionStore(database, counters=gone["open"])
    limit = Limit("requests_per_day", DAY, "requests", 0)
    assert await admissions.admit("key_a", _pending(), [DAY, MONTH], [limit]) is None
    assert [p.id for p in await admissions.pending()] == ["adm_1"]
    assert await admissions.settle(_settlement()) is True  # the charge is dropped
    assert len(await SqlUsageStore(database).recent("key_a")) == 1


async def test_quotas_on_redis_counters_refuse_past_the_limit(
    admissions: SqlAdmissionStore,
) -> None:
    quotas = Quotas(admissions, clock=lambda: NOW)
    key = KeyRecord("key_a", "alice", "h" * 64, "ccg_x…", quota=Quota(requests_per_minute=2))
    for n in range(2):
        admitted = await quotas.admit(key, key.id, _pending(f"adm_{n}"))
        await quotas.settle(admitted, tokens=3, cost_usd=0.01)
    with pytest.raises(QuotaExceeded) as caught:
        await quotas.admit(key, key.id, _pending("adm_9"))
    assert caught.value.param == "requests_per_minute"
    assert await admissions.pending() == []


# --- max_concurrent across replicas --------------------------------------------------------


async def test_max_concurrent_counts_the_requests_running_on_every_replica(
    redis: Shared, replica: Replica, database: Database
) -> None:
    """Two replicas' Quotas share one running count; a dead replica's places lapse."""
    key = KeyRecord("key_c", "carol", "h" * 64, "ccg_x…", quota=Quota(max_concurrent=2))
    store = SqlAdmissionStore(database)
    here = Quotas(store, running=RedisRunning(redis))
    there = Quotas(store, running=RedisRunning(replica(), lifetime=1.0))
    first = await here.admit(key, key.id)
    second = await there.admit(key, key.id)
    with pytest.raises(QuotaExceeded) as caught:
        await here.admit(key, key.id)
    assert caught.value.param == "max_concurrent" and "2 are running" in caught.value.message
    await here.settle(first, tokens=1, cost_usd=0.0)  # ends: its place is given back
    for _ in range(50):
        if await redis.client.zcard(RedisRunning(redis).key(key.id)) == 1:
            break
        await asyncio.sleep(0.02)
    third = await there.admit(key, key.id)
    # "there" dies: it stops renewing, and its two places lapse after their lifetime (1 s).
    assert second.hold is not None and third.hold is not None
    await asyncio.sleep(1.3)
    fourth = await here.admit(key, key.id)
    await here.renew()  # renewing keeps only what still runs here
    assert await redis.client.zcard(RedisRunning(redis).key(key.id)) == 1
    await here.settle(fourth, tokens=0, cost_usd=0.0)


async def test_a_place_is_given_back_when_the_count_refuses(
    redis: Shared, database: Database
) -> None:
    key = KeyRecord(
        "key_d", "dave", "h" * 64, "ccg_x…", quota=Quota(max_concurrent=5, requests_per_minute=1)
    )
    quotas = Quotas(SqlAdmissionStore(database), running=RedisRunning(redis))
    await quotas.admit(key, key.id)
    with pytest.raises(QuotaExceeded):
        await quotas.admit(key, key.id)  # the minute's limit: no place kept for it
    for _ in range(50):
        if await redis.client.zcard(RedisRunning(redis).key(key.id)) == 1:
            break
        await asyncio.sleep(0.02)
    assert await redis.client.zcard(RedisRunning(redis).key(key.id)) == 1
