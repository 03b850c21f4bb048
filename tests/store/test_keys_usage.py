"""The key, usage and quota-counter stores' conformance suite, run on every backend."""

from __future__ import annotations

import asyncio

import pytest

from ccgate.store.counters import Limit, SqlCounterStore, Totals, Window
from ccgate.store.database import Database
from ccgate.store.keys import KeyExists, Quota, SqlKeyStore
from ccgate.store.usage import SqlUsageStore, UsageRecord, utc_day

# Each test's cost marker comes with its backend (the `database` fixture, conftest.py).

DAY = 86_400.0


@pytest.fixture
def keys(database: Database) -> SqlKeyStore:
    return SqlKeyStore(database)


@pytest.fixture
def usage(database: Database) -> SqlUsageStore:
    return SqlUsageStore(database)


@pytest.fixture
def counters(database: Database) -> SqlCounterStore:
    return SqlCounterStore(database)


async def test_keys_round_trip_and_hashes_are_unique(keys: SqlKeyStore) -> None:
    quota = Quota(requests_per_minute=5, budget_usd_per_month=2.5)
    made = await keys.create(
        "alice", "h" * 64, "ccg_abcd…", quota=quota, models=("sonnet",), expires_at=9.0, now=1.0
    )
    assert made.id.startswith("key_")
    assert await keys.get(made.id) == made
    assert await keys.by_hash("h" * 64) == made
    assert await keys.by_hash("x" * 64) is None
    assert made.quota == quota and made.models == ("sonnet",)
    with pytest.raises(KeyExists):
        await keys.create("other", "h" * 64, "ccg_abcd…")


async def test_update_changes_only_what_is_given(keys: SqlKeyStore) -> None:
    made = await keys.create("bob", "b" * 64, "ccg_b…", quota=Quota(requests_per_day=3))
    changed = await keys.update(made.id, name="robert", disabled=True)
    assert changed is not None
    assert (changed.name, changed.disabled, changed.quota) == ("robert", True, made.quota)
    changed = await keys.update(made.id, quota=Quota(tokens_per_day=100), models=None)
    assert changed is not None and changed.quota == Quota(tokens_per_day=100)
    assert changed.models is None and changed.name == "robert"
    assert await keys.update("key_missing", name="x") is None
    with pytest.raises(TypeError):
        await keys.update(made.id, key_hash="z" * 64)


async def test_revoke_is_once_and_final(keys: SqlKeyStore) -> None:
    made = await keys.create("carol", "c" * 64, "ccg_c…")
    other = await keys.create("dave", "d" * 64, "ccg_d…")
    revoked = await keys.revoke(made.id, now=50.0)
    assert revoked is not None and revoked.revoked_at == 50.0
    again = await keys.revoke(made.id, now=60.0)
    assert again is not None and again.revoked_at == 50.0
    after = await keys.update(made.id, name="back")
    assert after is not None and after.name == "carol"  # a revoked key is not changed
    assert [k.id for k in await keys.list_keys()] == [other.id]
    assert {k.id for k in await keys.list_keys(include_revoked=True)} == {made.id, other.id}
    assert await keys.revoke("key_missing") is None


async def test_touch_writes_at_most_once_a_minute(keys: SqlKeyStore) -> None:
    made = await keys.create("erin", "e" * 64, "ccg_e…")
    touched = await keys.touch(made, now=1000.0)
    assert touched.last_used_at == 1000.0
    assert (await keys.touch(touched, now=1030.0)).last_used_at == 1000.0
    stored = await keys.get(made.id)
    assert stored is not None and stored.last_used_at == 1000.0


def _record(namespace: str, model: str, at: float, **extra: object) -> UsageRecord:
    values: dict[str, object] = {
        "namespace": namespace,
        "endpoint": "/v1/messages",
        "model": model,
        "status": "ok",
        "duration_ms": 10.0,
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": 0.25,
        "created_at": at,
        **extra,
    }
    return UsageRecord(**values)  # type: ignore[arg-type]


async def test_usage_summaries_by_day_model_and_key(usage: SqlUsageStore) -> None:
    day1, day2 = 10 * DAY + 5, 11 * DAY + 5
    await usage.record(_record("k1", "sonnet", day1))
    await usage.record(_record("k1", "opus", day1, status="rate_limit", output_tokens=0))
    await usage.record(_record("k1", "sonnet", day2, cached=True, input_tokens=0, cost_usd=0.0))
    await usage.record(_record("k2", "sonnet", day2, cache_read_tokens=7))
    by_day = await usage.summarize("k1", group_by="day")
    assert [s.group for s in by_day] == [utc_day(day1), utc_day(day2)]
    assert (by_day[0].requests, by_day[0].failed_requests, by_day[0].output_tokens) == (2, 1, 5)
    assert (by_day[1].cached_requests, by_day[1].input_tokens) == (1, 0)
    by_model = await usage.summarize(None, group_by="model")
    assert [(s.group, s.requests) for s in by_model] == [("opus", 1), ("sonnet", 3)]
    by_key = await usage.summarize(None, group_by="key", since=day2, until=day2 + 1)
    assert [(s.group, s.requests, s.cache_read_tokens) for s in by_key] == [
        ("k1", 1, 0),
        ("k2", 1, 7),
    ]
    assert by_key[1].cost_usd == pytest.approx(0.25)
    assert await usage.summarize("nobody") == []
    newest = await usage.recent("k1", limit=2)
    assert [r.created_at for r in newest] == [day2, day1]
    assert newest[0].cached and newest[0].tokens == 5
    window = await usage.between(None, since=day1, until=day2 + 1, limit=10)
    assert [(r.namespace, r.created_at) for r in window][:2] == [("k1", day1), ("k1", day1)]
    assert len(window) == 4
    assert len(await usage.between("k2", since=0, until=day2 + 1, limit=10)) == 1
    assert len(await usage.between(None, since=day1, until=day2 + 1, limit=3)) == 3
    assert await usage.between(None, since=day1, until=day1, limit=10) == []


MINUTE, TODAY = Window("minute", 600), Window("day", 0)


async def test_admit_counts_until_the_ceiling(counters: SqlCounterStore) -> None:
    limit = Limit("requests_per_minute", MINUTE, "requests", 2)
    assert await counters.admit("k", [MINUTE, TODAY], [limit]) is None
    assert await counters.admit("k", [MINUTE, TODAY], [limit]) is None
    assert await counters.admit("k", [MINUTE, TODAY], [limit]) == limit
    assert await counters.totals("k", MINUTE) == Totals(requests=2)
    assert (await counters.totals("k", TODAY)).requests == 2
    assert await counters.totals("other", MINUTE) == Totals()
    # Another window starts from zero.
    later = Limit("requests_per_minute", Window("minute", 660), "requests", 2)
    assert await counters.admit("k", [later.window], [later]) is None


async def test_tokens_cost_and_reservations(counters: SqlCounterStore) -> None:
    await counters.charge("k", [TODAY], tokens=95, cost_usd=0.5)
    await counters.charge("k", [TODAY], tokens=4, cost_usd=0.25)
    assert await counters.totals("k", TODAY) == Totals(0, 99, 0.75)
    tokens = Limit("tokens_per_day", TODAY, "tokens", 100)
    assert await counters.admit("k", [TODAY], [tokens]) is None
    # One token left, held by a request still running: the next one is refused.
    held = Limit("tokens_per_day", TODAY, "tokens", 100, reserved=1)
    assert await counters.admit("k", [TODAY], [held]) == held
    budget = Limit("budget_usd_per_month", TODAY, "cost_usd", 0.75)
    assert await counters.admit("k", [TODAY], [budget]) == budget


async def test_concurrent_admissions_never_pass_the_last_unit(
    counters: SqlCounterStore,
) -> None:
    limit = Limit("requests_per_day", TODAY, "requests", 5)
    results = await asyncio.gather(*(counters.admit("busy", [TODAY], [limit]) for _ in range(10)))
    assert sum(r is None for r in results) == 5
    assert (await counters.totals("busy", TODAY)).requests == 5


async def test_sweep_removes_old_windows_of_one_kind(counters: SqlCounterStore) -> None:
    await counters.admit("k", [Window("minute", 60), Window("minute", 120), TODAY], [])
    assert await counters.sweep("minute", 100) == 1
    assert (await counters.totals("k", Window("minute", 120))).requests == 1
    assert (await counters.totals("k", TODAY)).requests == 1
