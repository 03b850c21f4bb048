"""The login store's conformance suite, run on every backend."""

from __future__ import annotations

import asyncio

from ccgate.store.database import Database
from ccgate.store.logins import SqlLoginStore

# Each test's cost marker comes with its backend (the `database` fixture, conftest.py).


async def test_put_then_get(database: Database) -> None:
    logins = SqlLoginStore(database)
    assert await logins.get("login") is None
    assert await logins.put("login", "v1:sealed-a", 1_000, by="r1", now=5.0)
    stored = await logins.get("login")
    assert stored is not None
    assert (stored.sealed, stored.expires_at, stored.updated_at, stored.updated_by) == (
        "v1:sealed-a",
        1_000,
        5.0,
        "r1",
    )
    assert "sealed" not in repr(stored)
    assert await logins.get("other") is None


async def test_only_a_later_expiry_replaces_the_stored_login(database: Database) -> None:
    logins = SqlLoginStore(database)
    assert await logins.put("login", "v1:b", 2_000, by="r1")
    assert not await logins.put("login", "v1:older", 1_000, by="r2")
    assert not await logins.put("login", "v1:same", 2_000, by="r2")
    stored = await logins.get("login")
    assert stored is not None and (stored.sealed, stored.updated_by) == ("v1:b", "r1")
    assert await logins.put("login", "v1:c", 3_000, by="r3")
    stored = await logins.get("login")
    assert stored is not None and (stored.sealed, stored.expires_at) == ("v1:c", 3_000)


async def test_racing_puts_keep_the_latest_expiry(database: Database) -> None:
    logins = SqlLoginStore(database)
    expiries = [1_000 + i for i in (5, 1, 9, 3, 7, 2)]
    await asyncio.gather(
        *(logins.put("login", f"v1:{e}", e, by=f"r{e}") for e in expiries),
        return_exceptions=False,
    )
    stored = await logins.get("login")
    assert stored is not None and (stored.sealed, stored.expires_at) == ("v1:1009", 1_009)
