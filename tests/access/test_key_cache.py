"""Authenticated keys are cached for a second, and forgotten at once when they change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ccgate.access.keys import KEY_CACHE_TTL, KeyManager
from ccgate.errors import AuthenticationFailed
from ccgate.store.database import Database
from ccgate.store.keys import KeyRecord, SqlKeyStore

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingStore(SqlKeyStore):
    """The SQL key store, counting lookups by hash."""

    lookups = 0

    async def by_hash(self, key_hash: str) -> KeyRecord | None:
        self.lookups += 1
        return await super().by_hash(key_hash)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'keys.db'}")
    await db.migrate()
    yield db
    await db.close()


async def test_a_busy_key_is_looked_up_once_a_second(database: Database) -> None:
    store, clock = CountingStore(database), Clock()
    keys = KeyManager(store, clock=clock)
    made = await keys.create("alice")
    for _ in range(50):
        assert (await keys.authenticate(made.key)).id == made.record.id
    assert store.lookups == 1
    clock.now += KEY_CACHE_TTL
    await keys.authenticate(made.key)
    assert store.lookups == 2


async def test_a_revoked_key_is_refused_at_once_here_and_told_to_the_others(
    database: Database,
) -> None:
    told: list[str] = []

    async def tell(key_id: str) -> None:
        told.append(key_id)

    clock = Clock()
    here = KeyManager(SqlKeyStore(database), on_change=tell, clock=clock)
    there = KeyManager(SqlKeyStore(database), clock=clock)  # another replica, same database
    made = await here.create("bob")
    await here.authenticate(made.key)
    await there.authenticate(made.key)
    await here.revoke(made.record.id)
    assert told == [made.record.id]
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await here.authenticate(made.key)
    # The other replica hears of it over the bus (forget), or finds out within the ttl.
    await there.authenticate(made.key)  # still cached: the message has not arrived
    there.forget(made.record.id)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await there.authenticate(made.key)
    disabled = await here.create("carol")
    await there.authenticate(disabled.key)
    await here.update(disabled.record.id, disabled=True)
    clock.now += KEY_CACHE_TTL  # no message heard at all: the ttl
    with pytest.raises(AuthenticationFailed, match="disabled"):
        await there.authenticate(disabled.key)
    there.forget(None)  # after messages may have been missed: everything
