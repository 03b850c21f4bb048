"""Quotas and what accounting records (no CLI)."""

from __future__ import annotations

import asyncio
import calendar
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ccgate.access.accounting import Accounting, Ticket, estimate_cost
from ccgate.access.caller import Caller
from ccgate.access.quotas import Quotas, windows_at
from ccgate.engine.events import AgentEvent, TextDelta, ToolCallDelta, TurnEnd, Usage
from ccgate.engine.models import Catalogue
from ccgate.errors import QuotaExceeded
from ccgate.metrics import Gauges, Metrics
from ccgate.store.admissions import Settlement, SqlAdmissionStore
from ccgate.store.counters import SqlCounterStore, Window
from ccgate.store.database import Database
from ccgate.store.journal import Journal
from ccgate.store.keys import KeyRecord, Quota
from ccgate.store.usage import SqlUsageStore

pytestmark = pytest.mark.unit

NOW = calendar.timegm((2026, 11, 24, 12, 34, 56, 0, 0, 0))


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await db.migrate()
    yield db
    await db.close()


def _key(**quota: float) -> KeyRecord:
    return KeyRecord("key_a", "alice", "h" * 64, "ccg_x…", quota=Quota(**quota))  # type: ignore[arg-type]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_windows_are_utc_minute_day_and_month() -> None:
    minute, day, month = windows_at(NOW)
    assert minute == Window("minute", NOW - 56)
    assert day == Window("day", calendar.timegm((2026, 11, 24, 0, 0, 0, 0, 0, 0)))
    assert month == Window("month", calendar.timegm((2026, 11, 1, 0, 0, 0, 0, 0, 0)))


async def test_minute_limit_names_itself_and_when_it_resets(database: Database) -> None:
    quotas = Quotas(SqlAdmissionStore(database), clock=Clock(NOW))
    key = _key(requests_per_minute=2)
    for _ in range(2):
        await quotas.settle(await quotas.admit(key, key.id), tokens=0, cost_usd=0)
    with pytest.raises(QuotaExceeded) as caught:
        await quotas.admit(key, key.id)
    error = caught.value
    assert error.param == "requests_per_minute"
    assert "2 requests per minute" in error.message
    assert "2026-11-24 12:35:00 UTC (in 4 s)" in error.message
    assert error.headers() == {
        "retry-after": "4",
        "x-should-retry": "true",
        "x-ccgate-limit": "key_quota",
    }


async def test_day_and_month_limits_say_not_to_retry(database: Database) -> None:
    clock = Clock(NOW)
    quotas = Quotas(SqlAdmissionStore(database), clock=clock)
    key = _key(tokens_per_day=100, budget_usd_per_month=1.0)
    admission = await quotas.admit(key, key.id)
    await quotas.settle(admission, tokens=100, cost_usd=0.5)
    with pytest.raises(QuotaExceeded) as caught:
        await quotas.admit(key, key.id)
    assert caught.value.param == "tokens_per_day"
    assert caught.value.headers() == {"x-should-retry": "false", "x-ccgate-limit": "key_quota"}
    assert "2026-11-25 00:00:00 UTC" in caught.value.message
    clock.now += 86_400  # a new day, the same month: the budget still counts
    admission = await quotas.admit(key, key.id)
    await quotas.settle(admission, tokens=1, cost_usd=0.5)
    with pytest.raises(QuotaExceeded) as caught:
        await quotas.admit(key, key.id)
    assert caught.value.param == "budget_usd_per_month"
    assert "$1.00 per month" in caught.value.message and "is spent" in caught.value.message
    assert "2026-12-01 00:00:00 UTC" in caught.value.message


async def test_the_last_token_goes_to_one_request_only(database: Database) -> None:
    quotas = Quotas(SqlAdmissionStore(database), clock=Clock(NOW))
    key = _key(tokens_per_day=10)
    first = await quotas.admit(key, key.id)
    await quotas.settle(first, tokens=9, cost_usd=0)
    running = await quotas.admit(key, key.id)  # may use the tenth token
    with pytest.raises(QuotaExceeded, match="tokens_per_day"):
        await quotas.admit(key, key.id)
    await quotas.settle(running, tokens=0, cost_usd=0)
    await quotas.admit(key, key.id)  # nothing used after all: the token is free again


async def test_concurrency_limit_frees_on_settle(database: Database) -> None:
    quotas = Quotas(SqlAdmissionStore(database), clock=Clock(NOW))
    key = _key(max_concurrent=2)
    held = [await quotas.admit(key, key.id) for _ in range(2)]
    with pytest.raises(QuotaExceeded) as caught:
        await quotas.admit(key, key.id)
    assert caught.value.param == "max_concurrent"
    assert "(max_concurrent)" in caught.value.message
    assert caught.value.headers()["x-should-retry"] == "true"
    await quotas.settle(held[0], tokens=0, cost_usd=0)
    await quotas.settle(held[0], tokens=0, cost_usd=0)  # a second settle changes nothing
    assert quotas.running(key.id) == 1
    await quotas.admit(key, key.id)


async def test_parallel_admissions_are_exact(database: Database) -> None:
    quotas = Quotas(SqlAdmissionStore(database), clock=Clock(NOW))
    key = _key(requests_per_day=5)
    results = await asyncio.gather(
        *(quotas.admit(key, key.id) for _ in range(10)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 5
    assert all(isinstance(r, QuotaExceeded) for r in results if isinstance(r, Exception))


async def test_callers_without_a_key_are_not_counted(database: Database) -> None:
    quotas = Quotas(SqlAdmissionStore(database), clock=Clock(NOW))
    admission = await quotas.admit(None, "local")
    assert not admission.counted
    await quotas.settle(admission, tokens=5, cost_usd=1)
    _, day, _ = windows_at(NOW)
    assert (await SqlCounterStore(database).totals("local", day)).tokens == 0


def _metrics() -> Metrics:
    return Metrics(lambda: Gauges(0, 0, 0, 0, 0, 0, 0), per_key=True)


def _accounting(
    database: Database, tmp_path: Path, metrics: Metrics | None = None, *, ledger: bool = True
) -> Accounting:
    """Return accounting on ``database`` as the app builds it, its journal in ``tmp_path``."""
    store = SqlAdmissionStore(database)

    async def settle(payload: dict[str, object]) -> None:
        await store.settle(Settlement.from_json(payload))

    journal = Journal(tmp_path / "journal.jsonl", {"settle": settle})
    return Accounting(
        Quotas(store), metrics or _metrics(), journal, store, owner="test/1/1", ledger=ledger
    )


async def test_accounting_records_once_and_estimates_what_was_cut(
    database: Database, tmp_path: Path
) -> None:
    metrics = _metrics()
    accounting = _accounting(database, tmp_path, metrics)
    sonnet = Catalogue.load().resolve("sonnet")
    key = _key()
    ticket = await accounting.admit(Caller(key.id, key), "/v1/messages", sonnet, "sonnet")
    events: list[AgentEvent] = [
        Usage(input_tokens=100, partial=True),
        TextDelta("x" * 40),
        ToolCallDelta("t", "y" * 8),
    ]
    await accounting.close(ticket, events)
    await accounting.close(ticket, events)
    await accounting.flush()  # written behind the answer
    records = await SqlUsageStore(database).recent(key.id)
    assert len(records) == 1
    record = records[0]
    assert record.status == "cancelled"
    assert (record.input_tokens, record.output_tokens) == (100, 12)
    expected = estimate_cost(sonnet, Usage(input_tokens=100, output_tokens=12))
    assert record.cost_usd == pytest.approx(expected)
    _, day, _ = windows_at(record.created_at)
    assert (await SqlCounterStore(database).totals(key.id, day)).tokens == 112
    assert await SqlAdmissionStore(database).pending() == []
    text = metrics.render().decode()
    assert 'key="alice"' in text and "ccg_" not in text


async def test_a_cached_answer_costs_nothing_but_counts(database: Database, tmp_path: Path) -> None:
    accounting = _accounting(database, tmp_path)
    sonnet = Catalogue.load().resolve("sonnet")
    key = _key()
    ticket: Ticket = await accounting.admit(Caller(key.id, key), "/v1/messages", sonnet, "sonnet")
    ticket.cached = True
    await accounting.close(ticket, [Usage(input_tokens=50, output_tokens=5), TurnEnd()])
    await accounting.flush()
    [record] = await SqlUsageStore(database).recent(key.id)
    assert record.cached and record.status == "ok" and record.cost_usd == 0
    assert (record.input_tokens, record.output_tokens) == (0, 0)
    _, day, _ = windows_at(record.created_at)
    totals = await SqlCounterStore(database).totals(key.id, day)
    assert (totals.requests, totals.tokens) == (1, 0)


async def test_accounting_without_a_ledger_still_charges(
    database: Database, tmp_path: Path
) -> None:
    accounting = _accounting(database, tmp_path, ledger=False)
    sonnet = Catalogue.load().resolve("sonnet")
    key = _key()
    ticket = await accounting.admit(Caller(key.id, key), "/v1/messages", sonnet, "sonnet")
    # The admission is on record while the request runs, even without a ledger.
    assert [p.ledger for p in await SqlAdmissionStore(database).pending()] == [False]
    await accounting.close(
        ticket, [Usage(input_tokens=3, output_tokens=4, cost_usd=0.5), TurnEnd()]
    )
    await accounting.flush()
    _, day, _ = windows_at(time.time())
    totals = await SqlCounterStore(database).totals(key.id, day)
    assert (totals.tokens, totals.cost_usd) == (7, 0.5)
    assert await SqlUsageStore(database).summarize(None) == []
    assert await SqlAdmissionStore(database).pending() == []


async def test_a_limit_of_zero_says_never_to_retry(database: Database) -> None:
    quotas = Quotas(SqlAdmissionStore(database), clock=Clock(NOW))
    for quota in ({"requests_per_minute": 0}, {"max_concurrent": 0}):
        key = _key(**quota)
        with pytest.raises(QuotaExceeded) as caught:
            await quotas.admit(key, key.id)
        assert "is 0" in caught.value.message
        assert caught.value.headers() == {"x-should-retry": "false", "x-ccgate-limit": "key_quota"}


async def test_a_small_budget_is_shown_as_it_is(database: Database) -> None:
    quotas = Quotas(SqlAdmissionStore(database), clock=Clock(NOW))
    key = _key(budget_usd_per_month=0.0001)
    await quotas.settle(await quotas.admit(key, key.id), tokens=1, cost_usd=0.001)
    with pytest.raises(QuotaExceeded, match=r"\$0\.0001 per month"):
        await quotas.admit(key, key.id)


async def test_running_requests_are_counted_exactly_while_others_settle(
    database: Database,
) -> None:
    quotas = Quotas(SqlAdmissionStore(database), clock=Clock(NOW))
    key = _key(max_concurrent=1000)

    async def one() -> None:
        admission = await quotas.admit(key, key.id)
        await asyncio.sleep(0)
        await quotas.settle(admission, tokens=1, cost_usd=0)

    await asyncio.gather(*(one() for _ in range(60)))
    assert quotas.running(key.id) == 0


async def test_a_charge_still_being_written_counts_against_the_limits(
    database: Database, tmp_path: Path
) -> None:
    store = SqlAdmissionStore(database)
    opened = asyncio.Event()

    async def settle_many(payloads: list[dict[str, object]]) -> None:
        await opened.wait()  # the database takes its time
        await store.settle_many([Settlement.from_json(p) for p in payloads])

    async def settle(payload: dict[str, object]) -> None:
        await store.settle(Settlement.from_json(payload))

    journal = Journal(
        tmp_path / "journal.jsonl", {"settle": settle}, batches={"settle": settle_many}
    )
    quotas = Quotas(store)
    accounting = Accounting(quotas, _metrics(), journal, store, owner="test/1/1", ledger=True)
    sonnet = Catalogue.load().resolve("sonnet")
    key = _key(tokens_per_day=100)
    ticket = await accounting.admit(Caller(key.id, key), "/v1/messages", sonnet, "sonnet")
    await accounting.close(ticket, [Usage(input_tokens=90, output_tokens=20), TurnEnd()])
    # Answered, its charge not yet in the counters: the next request is refused all the same.
    _, day, _ = windows_at(time.time())
    assert (await SqlCounterStore(database).totals(key.id, day)).tokens == 0
    with pytest.raises(QuotaExceeded) as refused:
        await accounting.admit(Caller(key.id, key), "/v1/messages", sonnet, "sonnet")
    assert "tokens_per_day" in str(refused.value)
    opened.set()
    await accounting.flush()
    assert (await SqlCounterStore(database).totals(key.id, day)).tokens == 110
    with pytest.raises(QuotaExceeded):
        await accounting.admit(Caller(key.id, key), "/v1/messages", sonnet, "sonnet")
    await journal.aclose()
