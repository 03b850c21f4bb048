"""The Redis every replica shares: one client, the key prefix, and what an outage means.

Every call has a short timeout (``TIMEOUT``): a Redis that does not answer
makes a request fail fast or go on without it, never hang. :meth:`Shared.run`
turns a connection failure into :class:`ccgate.errors.SharedStateUnavailable`
(503 ``shared_state_unavailable``); callers that may go on without Redis
(``redis_outage=open``) ask :meth:`Shared.tolerate`, which logs the outage at
most once a minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Literal, TypeVar

from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ccgate.errors import ConfigError, SharedStateUnavailable

__all__ = ["DELETE_IF_HOLDS", "OUTAGES", "TIMEOUT", "Outage", "Shared"]

log = logging.getLogger("ccgate.cluster")

T = TypeVar("T")

Outage = Literal["closed", "open"]
OUTAGES: tuple[Outage, ...] = ("closed", "open")
#: Seconds a Redis call may take before it counts as an outage.
TIMEOUT = 1.0
#: The Retry-After of a request refused because Redis does not answer.
RETRY_AFTER = 2.0
#: How often an outage tolerated with ``redis_outage=open`` is logged at most.
_WARN_EVERY = 60.0
#: A Lua script: delete ``KEYS[1]`` if it holds ``ARGV[1]`` (a lease or a flight that only
#: its holder may end); return 1 if it was deleted, else 0.
DELETE_IF_HOLDS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Shared:
    """One Redis client for the whole replica, with ``prefix`` before every key."""

    def __init__(self, url: str, *, prefix: str, outage: Outage = "closed") -> None:
        try:
            self.client: aioredis.Redis = aioredis.Redis.from_url(
                url,
                socket_timeout=TIMEOUT,
                socket_connect_timeout=TIMEOUT,
                health_check_interval=30,
                decode_responses=False,
            )
        except ValueError as exc:
            raise ConfigError(f"redis_url is not a Redis URL: {exc}") from None
        self.prefix = prefix
        self.outage: Outage = outage
        self._warned = 0.0

    def key(self, *parts: str) -> str:
        """Return the Redis key (or channel) named by ``parts`` under the prefix."""
        return self.prefix + ":".join(parts)

    async def run(self, call: Awaitable[T]) -> T:
        """Await a Redis call; an unreachable Redis raises SharedStateUnavailable."""
        try:
            return await call
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise SharedStateUnavailable(
                "the Redis the replicas share does not answer "
                f"({type(exc).__name__}); requests that need it wait until it is back",
                retry_after=RETRY_AFTER,
            ) from None

    def tolerate(self, what: str) -> bool:
        """Tell whether ``what`` may go on without Redis (``redis_outage=open``); log it."""
        if self.outage != "open":
            return False
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            log.warning("redis_unavailable going_on_without=%s", what)
        return True

    async def ping(self) -> bool:
        """Tell whether Redis answers now."""
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()
