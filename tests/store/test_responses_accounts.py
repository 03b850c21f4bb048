"""The response and account stores on every backend (SQLite, and Postgres when reachable)."""

from __future__ import annotations

import pytest

from ccgate.store.accounts import AccountExists, SqlAccountStore
from ccgate.store.database import Database
from ccgate.store.responses import ResponseRecord, SqlResponseStore


def _record(rid: str, previous: str | None, status: str = "completed") -> ResponseRecord:
    return ResponseRecord(
        id=rid,
        namespace="ns",
        previous_id=previous,
        status=status,
        input=[{"type": "message", "role": "user", "content": rid}],
        body={"id": rid, "status": status, "output": []},
        created_at=1.0,
    )


async def test_responses_chain_namespaces_and_unfinished(database: Database) -> None:
    store = SqlResponseStore(database)
    await store.save(_record("r1", None))
    await store.save(_record("r2", "r1"))
    await store.save(_record("r3", "r2", status="in_progress"))
    chain = await store.chain("ns", "r3", 10)
    assert [r.id for r in chain] == ["r1", "r2", "r3"]
    assert [r.id for r in await store.chain("ns", "r3", 2)] == ["r2", "r3"]
    assert await store.get("other", "r1") is None and await store.chain("other", "r3", 10) == []
    # Saving again replaces.
    await store.save(_record("r3", "r2", status="completed"))
    got = await store.get("ns", "r3")
    assert got is not None and got.status == "completed" and got.input[0]["content"] == "r3"
    await store.save(_record("r4", "r3", status="queued"))
    assert await store.fail_unfinished("restarted") == 1
    failed = await store.get("ns", "r4")
    assert failed is not None and failed.status == "failed"
    assert failed.body["error"]["message"] == "restarted"
    assert await store.delete("ns", "r2") and not await store.delete("ns", "r2")
    assert [r.id for r in await store.chain("ns", "r3", 10)] == ["r3"], "the chain stops there"
    assert not await store.delete("other", "r1")


async def test_accounts_crud_and_plan(database: Database) -> None:
    store = SqlAccountStore(database)
    made = await store.create("home", "oauth_token", secret="v1:xx", secret_hint="…1234")
    with pytest.raises(AccountExists):
        await store.create("home", "api_key")
    other = await store.create("key", "api_key", priority=100)
    assert [a.name for a in await store.list_accounts()] == ["home", "key"]
    assert (await store.get("home")) == (await store.get(made.id))
    changed = await store.update(other.id, priority=-1, enabled=False)
    assert changed is not None and changed.priority == -1 and not changed.enabled
    assert [a.name for a in await store.list_accounts()] == ["key", "home"]
    with pytest.raises(AccountExists):
        await store.update(other.id, name="home")
    await store.save_plan(made.id, {"cooldown": {"until": 5.0, "reason": "r", "limit": "x"}})
    got = await store.get(made.id)
    assert got is not None and got.plan["cooldown"]["until"] == 5.0 and got.secret == "v1:xx"
    assert await store.update("acc_missing", priority=1) is None
    assert await store.delete(made.id) and not await store.delete(made.id)
