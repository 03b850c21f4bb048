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


async def test_a_claim_holds_the_renewal_of_one_version_until_it_lapses(
    database: Database,
) -> None:
    logins = SqlLoginStore(database)
    assert not await logins.claim("login", 1_000, by="r1", until=70.0, now=10.0)  # none stored
    await logins.put("login", "v1:a", 1_000, by="r0")
    assert not await logins.claim("login", 999, by="r1", until=70.0, now=10.0)  # another version
    assert await logins.claim("login", 1_000, by="r1", until=70.0, now=10.0)
    assert not await logins.claim("login", 1_000, by="r2", until=80.0, now=20.0)
    assert not await logins.claim("login", 1_000, by="r1", until=80.0, now=69.0)  # not even r1
    assert await logins.claim("login", 1_000, by="r2", until=131.0, now=71.0)  # lapsed
    # Storing the renewed login clears the claim; the new version can be claimed at once.
    assert await logins.put("login", "v1:b", 2_000, by="r2")
    assert not await logins.claim("login", 1_000, by="r3", until=200.0, now=140.0)
    assert await logins.claim("login", 2_000, by="r3", until=200.0, now=100.0)


async def test_racing_claims_grant_one(database: Database) -> None:
    logins = SqlLoginStore(database)
    await logins.put("login", "v1:a", 1_000, by="r0")
    granted = await asyncio.gather(
        *(logins.claim("login", 1_000, by=f"r{i}", until=70.0, now=10.0) for i in range(6))
    )
    assert sorted(granted) == [False] * 5 + [True]
