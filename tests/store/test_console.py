"""The console sign-in store's conformance suite, run on every backend."""

from __future__ import annotations

import pytest

from ccgate.store.console import ConsoleSession, SqlConsoleSessionStore
from ccgate.store.database import Database

# Each test's cost marker comes with its backend (the `database` fixture, conftest.py).


@pytest.fixture
def signins(database: Database) -> SqlConsoleSessionStore:
    return SqlConsoleSessionStore(database)


def _session(
    token_hash: str, *, key_id: str | None = None, expires_at: float = 200.0
) -> ConsoleSession:
    return ConsoleSession(
        token_hash=token_hash,
        role="client" if key_id else "admin",
        namespace=key_id or "admin",
        key_id=key_id,
        name="alice" if key_id else "admin",
        csrf="c-" + token_hash,
        created_at=100.0,
        expires_at=expires_at,
    )


async def test_a_sign_in_is_found_by_its_hash_until_it_expires(
    signins: SqlConsoleSessionStore,
) -> None:
    await signins.create(_session("h1"))
    assert await signins.get("h1", now=150.0) == _session("h1")
    assert await signins.get("h1", now=200.0) is None
    assert await signins.get("other", now=150.0) is None


async def test_sign_out_and_a_revoked_key_end_sign_ins(signins: SqlConsoleSessionStore) -> None:
    await signins.create(_session("h1"))
    await signins.create(_session("h2", key_id="key_a"))
    await signins.create(_session("h3", key_id="key_a"))
    await signins.delete("h1")
    assert await signins.get("h1", now=150.0) is None
    assert await signins.delete_key("key_a") == 2
    assert await signins.get("h2", now=150.0) is None


async def test_expire_removes_only_the_expired(signins: SqlConsoleSessionStore) -> None:
    await signins.create(_session("old", expires_at=120.0))
    await signins.create(_session("new", expires_at=300.0))
    assert await signins.expire(now=150.0) == 1
    assert await signins.get("new", now=150.0) is not None
