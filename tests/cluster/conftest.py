"""Fixtures for what replicas share through Redis: a real Redis, a private key prefix per test."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable

import pytest

from ccgate.cluster.redis import Outage, Shared

REDIS_URL = os.environ.get("CCGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: Makes another client of the test's Redis with the test's prefix (another replica).
Replica = Callable[..., Shared]


@pytest.fixture
async def redis() -> AsyncIterator[Shared]:
    """Return a client of the test Redis whose keys (a unique prefix) are deleted afterwards."""
    prefix = f"ccgate-test-{secrets.token_hex(6)}:"
    shared = Shared(REDIS_URL, prefix=prefix)
    if not await shared.ping():
        await shared.aclose()
        pytest.skip(f"Redis not reachable at {REDIS_URL} (set CCGATE_TEST_REDIS_URL)")
    try:
        yield shared
    finally:
        keys = [key async for key in shared.client.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await shared.client.delete(*keys)
        await shared.aclose()


@pytest.fixture
async def replica(redis: Shared) -> AsyncIterator[Replica]:
    """Return a maker of more clients on the test's prefix, as other replicas would hold."""
    made: list[Shared] = []

    def make(outage: Outage = "closed") -> Shared:
        shared = Shared(REDIS_URL, prefix=redis.prefix, outage=outage)
        made.append(shared)
        return shared

    yield make
    for shared in made:
        await shared.aclose()
