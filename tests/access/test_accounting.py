"""Admissions in accounting: checkpoints of running requests, owners, reconciliation (no CLI).

A process killed mid-turn leaves its admissions behind; the next start (or
another process) gives each one its ledger row with status ``interrupted``
and what its last checkpoint knew, exactly once.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ccgate.access.accounting import LEASE, Accounting, estimate_cost
from ccgate.access.caller import Caller
from ccgate.access.quotas import Quotas, windows_at
from ccgate.engine.events import TextDelta, TurnEnd, Usage
from ccgate.engine.models import Catalogue
from ccgate.metrics import Gauges, Metrics
from ccgate.store.admissions import INTERRUPTED, Pending, Settlement, SqlAdmissionStore
from ccgate.store.counters import SqlCounterStore
from ccgate.store.database import Database
from ccgate.store.journal import Journal
from ccgate.store.keys import KeyRecord, Quota
from ccgate.store.owners import owner_alive, process_owner
from ccgate.store.usage import SqlUsageStore

SONNET = Catalogue.load().resolve("sonnet")
KEY = KeyRecord("key_a", "alice", "h" * 64, "ccg_x…", quota=Quota())


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await db.migrate()
    yield db
    await db.close()


def _dead_owner() -> str:
    """Return the owner name of a process of this host that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return process_owner(child.pid).rsplit("/", 1)[0] + "/1"


def _accounting(database: Database, tmp_path: Path, owner: str) -> Accounting:
    store = SqlAdmissionStore(database)

    async def settle(payload: dict[str, object]) -> None:
        await store.settle(Settlement.from_json(payload))

    journal = Journal(tmp_path / "journal.jsonl", {"settle": settle})
    metrics = Metrics(lambda: Gauges(0, 0, 0, 0, 0, 0, 0), per_key=False)
    return Accounting(Quotas(store), metrics, journal, store, owner=owner)


@pytest.mark.server
def test_owners_name_a_process_and_tell_whether_it_runs() -> None:
    me = process_owner()
    host, pid, started = me.rsplit("/", 2)
    assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    assert owner_alive(me) is True
    assert owner_alive(_dead_owner()) is False
    # The same pid with another start time is another process: the one that owned the row
    # is gone (a restarted container reuses its pid).
    assert owner_alive(f"{host}/{pid}/{int(started) + 1}") is False
    assert owner_alive("another-host/1/1") is None
    assert owner_alive("garbage") is None


@pytest.mark.unit
async def test_a_checkpoint_keeps_what_a_running_request_spent(
    database: Database, tmp_path: Path
) -> None:
    accounting = _accounting(database, tmp_path, process_owner())
    ticket = await accounting.admit(Caller(KEY.id, KEY), "/v1/messages", SONNET, "sonnet")
    ticket.session_key = "ccs_1"
    ticket.saw(Usage(input_tokens=100, partial=True))
    ticket.saw(TextDelta("x" * 40))
    await accounting.checkpoint()
    [pending] = await SqlAdmissionStore(database).pending()
    assert pending.session_key == "ccs_1"
    assert (pending.progress.input_tokens, pending.progress.output_tokens) == (100, 10)
    expected = estimate_cost(SONNET, Usage(input_tokens=100, output_tokens=10))
    assert pending.progress.cost_usd == pytest.approx(expected)
    await accounting.close(ticket, [Usage(input_tokens=100, output_tokens=12), TurnEnd()])
    await accounting.flush()  # written behind the answer
    assert await SqlAdmissionStore(database).pending() == []


@pytest.mark.server
async def test_a_killed_process_s_requests_get_one_interrupted_row_each(
    database: Database, tmp_path: Path
) -> None:
    dead = _accounting(database, tmp_path / "dead", _dead_owner())
    (tmp_path / "dead").mkdir()
    cut = await dead.admit(Caller(KEY.id, KEY), "/v1/chat/completions", SONNET, "sonnet")
    cut.saw(Usage(input_tokens=50, partial=True))
    cut.saw(TextDelta("y" * 20))
    await dead.checkpoint()
    early = await dead.admit(Caller("local"), "/v1/messages", SONNET, "sonnet")
    # ... and the process dies: neither request is closed.
    restarted = _accounting(database, tmp_path, process_owner())
    interrupted = await restarted.reconcile()
    assert sorted(r.endpoint for r in interrupted) == ["/v1/chat/completions", "/v1/messages"]
    assert await restarted.reconcile() == []  # once
    [row] = await SqlUsageStore(database).recent(KEY.id)
    assert (row.status, row.input_tokens, row.output_tokens) == (INTERRUPTED, 50, 5)
    [local] = await SqlUsageStore(database).recent("local")
    assert (local.status, local.model, local.input_tokens) == (INTERRUPTED, SONNET.id, 0)
    _, day, _ = windows_at(row.created_at)
    totals = await SqlCounterStore(database).totals(KEY.id, day)
    assert (totals.requests, totals.tokens) == (1, 55)
    assert totals.cost_usd == pytest.approx(row.cost_usd)
    # Closing the cut request late (its process was not dead after all) adds nothing.
    await dead.close(cut, [TurnEnd()])
    await dead.close(early, [TurnEnd()])
    await dead.flush()
    assert len(await SqlUsageStore(database).recent(KEY.id)) == 1
    assert len(await SqlUsageStore(database).recent("local")) == 1


@pytest.mark.server
async def test_reconcile_spares_the_living_and_what_the_journal_holds(
    database: Database, tmp_path: Path
) -> None:
    store = SqlAdmissionStore(database)
    now = time.time()

    def pending(admission_id: str, owner: str, seen_at: float) -> Pending:
        return Pending(admission_id, "local", "/v1/messages", "sonnet", owner, now, seen_at=seen_at)

    for made in (
        pending("adm_running", process_owner(), now - 10 * LEASE),  # alive on this host
        pending("adm_elsewhere", "other-host/7/7", now),  # another host, seen recently
        pending("adm_lost", "other-host/8/8", now - 2 * LEASE),  # another host, gone quiet
        pending("adm_journal", _dead_owner(), now),  # dead, but its settlement waits
        pending("adm_dead", _dead_owner(), now),
    ):
        await store.admit("local", made, [], [])
    accounting = _accounting(database, tmp_path, "this-gateway/1/1")
    done = await accounting.reconcile(skip={"adm_journal"})
    assert len(done) == 2
    left = {p.id for p in await store.pending()}
    assert left == {"adm_running", "adm_elsewhere", "adm_journal"}


@pytest.mark.unit
async def test_a_shutdown_waits_for_requests_to_be_recorded(
    database: Database, tmp_path: Path
) -> None:
    accounting = _accounting(database, tmp_path, process_owner())
    ticket = await accounting.admit(Caller("local"), "/v1/messages", SONNET, "sonnet")
    assert await accounting.drain(0.01) == 1  # still running: it would be found interrupted
    waiting = asyncio.ensure_future(accounting.drain(30))
    await asyncio.sleep(0)
    assert not waiting.done()
    await accounting.close(ticket, [TurnEnd()])
    assert await waiting == 0
    assert len(await SqlUsageStore(database).recent("local")) == 1
