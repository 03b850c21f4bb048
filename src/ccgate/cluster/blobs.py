"""The response cache and singleflight every replica shares (``engine.cache.SharedAnswers``).

``answer:<key>`` holds a kept answer for the cache's ttl; ``flight:<key>``
names the replica whose turn computes it (``SET NX`` with a ttl, so a leader
that dies frees it). A follower polls every ``POLL`` seconds until the
answer is kept or the flight is gone: a turn takes seconds, a poll a fraction
of a millisecond, and pub/sub would add a connection per waiting request.
"""

from __future__ import annotations

import asyncio
import time

from ccgate.cluster.redis import DELETE_IF_HOLDS, Shared

__all__ = ["POLL", "SharedBlobs"]

#: Seconds between a follower's looks at the leader's flight.
POLL = 0.05


class SharedBlobs:
    """Answers and flights in Redis; ``owner`` tells this replica's flights from others'."""

    def __init__(self, shared: Shared, owner: str) -> None:
        self._shared = shared
        self._owner = owner
        self._drop_if = shared.client.register_script(DELETE_IF_HOLDS)

    def _answer(self, key: str) -> str:
        return self._shared.key("answer", key)

    def _flight(self, key: str) -> str:
        return self._shared.key("flight", key)

    async def get(self, key: str) -> bytes | None:
        """Return the answer kept for ``key``."""
        value = await self._shared.run(self._shared.client.get(self._answer(key)))
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Keep ``value`` for ``ttl`` seconds."""
        ms = max(1, int(ttl * 1000))
        await self._shared.run(self._shared.client.set(self._answer(key), value, px=ms))

    async def lead(self, key: str, ttl: float) -> bool:
        """Tell whether this replica runs the turn of ``key`` (no other replica does)."""
        ms = max(1, int(ttl * 1000))
        done = await self._shared.run(
            self._shared.client.set(self._flight(key), self._owner, px=ms, nx=True)
        )
        return bool(done)

    async def land(self, key: str) -> None:
        """End this replica's flight of ``key``."""
        await self._shared.run(self._drop_if(keys=[self._flight(key)], args=[self._owner]))

    async def wait(self, key: str, timeout: float) -> bytes | None:
        """Return the answer of another replica's flight of ``key`` once it is kept."""
        end = time.monotonic() + timeout
        client = self._shared.client
        while True:
            async with client.pipeline(transaction=False) as pipe:
                pipe.get(self._answer(key))
                pipe.exists(self._flight(key))
                answer, flying = await self._shared.run(pipe.execute())
            if isinstance(answer, bytes):
                return answer
            if not flying or time.monotonic() >= end:
                return None
            await asyncio.sleep(POLL)
