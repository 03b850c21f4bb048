"""Quota counters in the Redis several replicas share (``redis_url``).

A :class:`RedisCounterStore` keeps the contract of :class:`CounterStore`
(``store.counters``) with Redis in place of the database, so that every
replica counts against the same windows, exactly, with one round trip per
admission:

- Each window is a hash ``<prefix>quota:{<namespace>}:<kind>:<start>`` with
  the fields ``requests``, ``tokens`` and ``cost_usd`` (the cost is added by
  ``HINCRBYFLOAT``). The namespace is percent-encoded (``%`` ``:`` ``*``
  ``{`` ``}`` and every other byte outside ``A-Z a-z 0-9 _ . - ~``), so no
  two namespaces share a key, none reads as a glob pattern to ``SCAN MATCH``,
  and the braces make a hash tag: a namespace's windows sit in one slot,
  should the Redis be a cluster.
- ``admit`` is one Lua script (``EVALSHA``): it checks every limit (``value +
  reserved >= ceiling`` refuses, counting nothing) and only then adds one
  request to every given window. Redis runs a script alone, so two replicas
  never both pass the last unit of a limit.
- ``charge`` is one script too; ``refund`` (not part of the protocol) takes
  back a request ``admit`` counted, for a caller whose next step failed
  (``SqlAdmissionStore``).
- Every write sets its window's expiry: the window's end plus what the
  database's sweeper keeps (an hour for a minute, two days for a day, forty
  days for a month; ``gateway._sweep``), and never less than that from the
  write itself, so a late charge (or a window long past, as tests use) keeps
  its hash that long. Redis forgets old windows by itself: ``sweep`` has
  nothing to do and returns 0.

When Redis does not answer (the call fails at once or after its timeout):

- ``admit`` raises :class:`ccgate.errors.SharedStateUnavailable` (503), unless
  the outage policy lets requests go on without Redis (``redis_outage=open``:
  ``tolerate("quota counters")``); then the request is admitted uncounted
  (``None``) — limits go unenforced while Redis is away.
- ``charge`` and ``refund`` raise it too under ``closed`` (a settlement then
  rolls back and waits in the journal); under ``open`` what they would have
  added is logged and dropped.
- ``totals`` always raises it.

This module takes what it needs of the shared Redis as a protocol
(:class:`SharedRedis`, which ``cluster.redis.Shared`` is) rather than
importing ``ccgate.cluster``: ``store`` and ``cluster`` are independent rooms.
"""

from __future__ import annotations

import calendar
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar
from urllib.parse import quote

from redis.asyncio import Redis

from ccgate.errors import SharedStateUnavailable
from ccgate.store.counters import Limit, Totals, Window

__all__ = ["GRACE", "HOLD_LIFETIME", "RedisCounterStore", "RedisRunning", "SharedRedis"]

log = logging.getLogger("ccgate.store")

T = TypeVar("T")

#: How long after its end a window's hash is kept (what the database's sweeper keeps).
GRACE = {"minute": 3600, "day": 2 * 86_400, "month": 40 * 86_400}
_GRACE_OTHER = 40 * 86_400

#: What the outage policy is asked about.
_WHAT = "quota counters"


class SharedRedis(Protocol):
    """What a :class:`RedisCounterStore` needs of the Redis the replicas share."""

    @property
    def client(self) -> Redis:
        """The client."""
        ...

    def key(self, *parts: str) -> str:
        """Return the key named by ``parts`` under the prefix."""
        ...

    async def run(self, call: Awaitable[T]) -> T:
        """Await a Redis call; an unreachable Redis raises SharedStateUnavailable."""
        ...

    def tolerate(self, what: str) -> bool:
        """Tell whether ``what`` may go on without Redis; log the outage."""
        ...


# KEYS: every window read or written, the ones to count first.
# ARGV: how many KEYS to count in, how many limits, each KEY's TTL,
# then each limit as (index into KEYS, field, ceiling, reserved).
# Returns the 1-based index of the first limit reached, or 0 once counted.
_ADMIT = """
local counted = tonumber(ARGV[1])
local limits = tonumber(ARGV[2])
local at = 3 + #KEYS
for i = 1, limits do
  local value = tonumber(redis.call('HGET', KEYS[tonumber(ARGV[at])], ARGV[at + 1]) or '0')
  if value + tonumber(ARGV[at + 3]) >= tonumber(ARGV[at + 2]) then
    return i
  end
  at = at + 4
end
for i = 1, counted do
  redis.call('HINCRBY', KEYS[i], 'requests', 1)
  redis.call('EXPIRE', KEYS[i], ARGV[2 + i])
end
return 0
"""

# KEYS: the windows. ARGV: tokens, cost, then each KEY's TTL.
_CHARGE = """
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'tokens', ARGV[1])
  redis.call('HINCRBYFLOAT', KEYS[i], 'cost_usd', ARGV[2])
  redis.call('EXPIRE', KEYS[i], ARGV[2 + i])
end
return 0
"""

# KEYS: the windows a request was counted in. Takes it back where the window still is.
_REFUND = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HINCRBY', KEYS[i], 'requests', -1)
  end
end
return 0
"""

_FIELDS = ("requests", "tokens", "cost_usd")


def _end(window: Window) -> int:
    if window.kind == "minute":
        return window.start + 60
    if window.kind == "day":
        return window.start + 86_400
    if window.kind == "month":
        t = time.gmtime(window.start)
        year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0))
    return window.start


def ttl(window: Window, now: float) -> int:
    """Return the seconds a window's hash is kept after a write at ``now``."""
    grace = GRACE.get(window.kind, _GRACE_OTHER)
    return max(math.ceil(_end(window) + grace - now), grace)


def _number(value: float) -> str:
    """Return ``value`` as Lua's ``tonumber`` reads it (infinities included)."""
    if math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    return repr(float(value))


class RedisCounterStore:
    """A :class:`CounterStore` in Redis, exact across replicas; see the module docstring."""

    def __init__(self, shared: SharedRedis, *, clock: Callable[[], float] = time.time) -> None:
        self._shared = shared
        self._clock = clock
        client = shared.client
        self._admit = client.register_script(_ADMIT)
        self._charge = client.register_script(_CHARGE)
        self._refund = client.register_script(_REFUND)

    def key(self, namespace: str, window: Window) -> str:
        """Return the Redis key of a namespace's window."""
        tag = "{" + quote(namespace, safe="") + "}"
        return self._shared.key("quota", tag, quote(window.kind, safe=""), str(window.start))

    def _ttls(self, windows: Sequence[Window]) -> list[int]:
        now = self._clock()
        return [ttl(w, now) for w in windows]

    async def admit(
        self, namespace: str, windows: list[Window], limits: list[Limit]
    ) -> Limit | None:
        """Count one request in ``windows`` unless a limit is reached; return that limit.

        Raises SharedStateUnavailable when Redis does not answer, unless the outage
        policy lets the request go on uncounted (then ``None``).
        """
        counted = list(dict.fromkeys(windows))
        # A NaN is never reached (as in SQL, where the comparison is false).
        checked = [
            limit
            for limit in limits
            if not (math.isnan(limit.ceiling) or math.isnan(limit.reserved))
        ]
        every = list(dict.fromkeys([*counted, *(limit.window for limit in checked)]))
        if not every:
            return None
        place = {window: i for i, window in enumerate(every, start=1)}
        args: list[str | int] = [len(counted), len(checked), *self._ttls(counted)]
        args += [0] * (len(every) - len(counted))  # the limit-only windows are never written
        for limit in checked:
            args += [
                place[limit.window],
                limit.measure,
                _number(limit.ceiling),
                _number(limit.reserved),
            ]
        keys = [self.key(namespace, w) for w in every]
        try:
            reached = int(await self._shared.run(self._admit(keys=keys, args=args)))
        except SharedStateUnavailable:
            if self._shared.tolerate(_WHAT):
                return None
            raise
        return checked[reached - 1] if reached else None

    async def charge(
        self, namespace: str, windows: list[Window], *, tokens: int, cost_usd: float
    ) -> None:
        """Add what a request spent to ``windows`` (dropped in an outage under ``open``)."""
        windows = list(dict.fromkeys(windows))
        if not windows or (not tokens and not cost_usd):
            return
        keys = [self.key(namespace, w) for w in windows]
        args: list[str | int] = [int(tokens), _number(cost_usd), *self._ttls(windows)]
        try:
            await self._shared.run(self._charge(keys=keys, args=args))
        except SharedStateUnavailable:
            if not self._shared.tolerate(_WHAT):
                raise
            log.warning(
                "quota_charge_dropped namespace=%s tokens=%d cost_usd=%g",
                namespace,
                tokens,
                cost_usd,
            )

    async def refund(self, namespace: str, windows: list[Window]) -> None:
        """Take back one request ``admit`` counted in ``windows`` (not below what was there).

        Not part of :class:`CounterStore`: for a caller whose step after ``admit`` failed.
        """
        windows = list(dict.fromkeys(windows))
        if not windows:
            return
        keys = [self.key(namespace, w) for w in windows]
        try:
            await self._shared.run(self._refund(keys=keys, args=[]))
        except SharedStateUnavailable:
            if not self._shared.tolerate(_WHAT):
                raise
            log.warning("quota_refund_dropped namespace=%s", namespace)

    async def totals(self, namespace: str, window: Window) -> Totals:
        """Return what a window has counted (raises SharedStateUnavailable in an outage)."""
        call: Awaitable[list[bytes | None]] = self._shared.client.hmget(  # type: ignore[assignment]
            self.key(namespace, window), list(_FIELDS)
        )
        requests, tokens, cost = await self._shared.run(call)
        return Totals(
            int(requests or 0),
            int(tokens or 0),
            float(cost or 0.0),
        )

    async def sweep(self, kind: str, before: int) -> int:
        """Do nothing and return 0: every window's hash expires by itself (module docstring)."""
        return 0


# KEYS[1] the namespace's running set; ARGV[1] token, ARGV[2] ceiling, ARGV[3] lifetime (s).
# Drop holds whose replica stopped renewing them, then hold one more unless at the ceiling
# (returns -1) or say how many run (>= 0). Redis's own clock: replicas' clocks may differ.
_HOLD = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
local running = redis.call('ZCARD', KEYS[1])
if running >= tonumber(ARGV[2]) then return running end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
return -1
"""

# KEYS[1] a running set; ARGV[1] lifetime (s), ARGV[2..] tokens still running: renew them.
_RENEW = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', t + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000))
return 0
"""

#: How long a running request's hold lasts unless its replica renews it.
HOLD_LIFETIME = 30.0


class RedisRunning:
    """Requests running at once per namespace, counted across replicas (``max_concurrent``).

    Each running request holds a member of ``<prefix>running:{<namespace>}``, a
    sorted set scored by when the hold lapses. Its replica renews its holds
    (:meth:`renew`, every few seconds) and releases each when its request ends; a
    replica that dies stops renewing, and its holds lapse after ``lifetime``
    seconds, so a killed replica's requests stop counting by themselves.
    """

    def __init__(self, shared: SharedRedis, *, lifetime: float = HOLD_LIFETIME) -> None:
        self._shared = shared
        self._lifetime = lifetime
        client = shared.client
        self._hold = client.register_script(_HOLD)
        self._renew = client.register_script(_RENEW)

    def key(self, namespace: str) -> str:
        """Return the Redis key of a namespace's running requests."""
        return self._shared.key("running", "{" + quote(namespace, safe="") + "}")

    async def hold(self, namespace: str, token: str, ceiling: int) -> int | None:
        """Hold a place for one more running request: ``None`` when held, else how many
        run (the ceiling is reached). Raises SharedStateUnavailable when Redis does not
        answer, unless the outage policy lets the request go on (then ``None``)."""
        try:
            running = await self._shared.run(
                self._hold(keys=[self.key(namespace)], args=[token, ceiling, self._lifetime])
            )
        except SharedStateUnavailable:
            if self._shared.tolerate("running requests"):
                return None  # redis_outage=open: not held, not limited
            raise
        return None if int(running) < 0 else int(running)

    async def release(self, namespace: str, token: str) -> None:
        """Give a request's place back."""
        await self._shared.run(self._shared.client.zrem(self.key(namespace), token))

    async def renew(self, held: dict[str, list[str]]) -> None:
        """Keep the places of requests still running here (namespace -> tokens)."""
        for namespace, tokens in held.items():
            if tokens:
                await self._shared.run(
                    self._renew(keys=[self.key(namespace)], args=[self._lifetime, *tokens])
                )
