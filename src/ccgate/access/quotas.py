"""Per-key limits: admit a request or refuse it with a 429 that says which limit and when.

A key's quota (``store.keys.Quota``) limits requests per minute and per day,
tokens per day, dollars per calendar month (UTC) and requests running at once.
Every admitted request of a key is counted in its minute, day and month
windows (``store.counters``), atomically and only if no limit is reached;
what a request spent is charged to its day and month when it ends.

Tokens and dollars are known only afterwards, so a request still running
holds one token and one micro-dollar against its key's limits: when a single
unit is left, one request may use it, not two. That hold, and the count of
running requests, live in this process; the counters themselves are shared
through the database by every process (through Redis when ccgate runs as
several replicas: ``store.redis_counters``). With several replicas a
:class:`RunningStore` (``store.redis_counters.RedisRunning``) counts the
running requests of ``max_concurrent`` across all of them: each holds a
place there, renewed while it runs (:meth:`Quotas.renew`) and given back
when it ends; a dead replica's places lapse by themselves.

A request's admission record (``store.admissions``), when the caller gives
one, is stored in the same transaction as its count (with the counters in
Redis: stored right after it, the count refunded if that fails), so a request
is never counted without a trace that leads to its ledger row.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from ccgate.errors import QuotaExceeded
from ccgate.store.admissions import AdmissionStore, Pending, Settlement
from ccgate.store.counters import Limit, Measure, Window
from ccgate.store.keys import KeyRecord
from ccgate.store.usage import UsageRecord

__all__ = ["Admission", "Quotas", "RunningStore", "windows_at"]

#: What a running request holds against the token and dollar limits of its key.
_HOLD_TOKENS = 1
_HOLD_USD = 1e-6


log = logging.getLogger("ccgate.access")


class RunningStore(Protocol):
    """Running requests per namespace, shared by replicas; see the module docstring."""

    async def hold(self, namespace: str, token: str, ceiling: int) -> int | None:
        """Hold a place (``None``), unless ``ceiling`` run already (return how many)."""
        ...

    async def release(self, namespace: str, token: str) -> None:
        """Give a place back."""
        ...

    async def renew(self, held: dict[str, list[str]]) -> None:
        """Keep the places of requests still running (namespace -> tokens)."""
        ...


def windows_at(now: float) -> tuple[Window, Window, Window]:
    """Return the minute, day and month (UTC) windows that contain ``now``."""
    t = time.gmtime(now)
    month = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0, 0, 0, 0))
    return (
        Window("minute", int(now // 60) * 60),
        Window("day", int(now // 86_400) * 86_400),
        Window("month", month),
    )


def _window_end(window: Window) -> float:
    if window.kind == "minute":
        return window.start + 60
    if window.kind == "day":
        return window.start + 86_400
    t = time.gmtime(window.start)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0))


_WHAT = {
    "requests_per_minute": "{} requests per minute",
    "requests_per_day": "{} requests per day",
    "tokens_per_day": "{} tokens per day",
    "budget_usd_per_month": "{} per month",
}


@dataclass
class Admission:
    """An admitted request: where to charge what it spends; settle it exactly once."""

    namespace: str
    windows: list[Window] = field(default_factory=list)
    counted: bool = False
    settled: bool = False
    #: The id of its admission record, when one was stored.
    id: str | None = None
    #: Its place among the running requests shared by replicas, when it holds one.
    hold: str | None = None


class Quotas:
    """Admit requests against their key's quota and charge what they spent."""

    def __init__(
        self,
        store: AdmissionStore,
        *,
        clock: Callable[[], float] = time.time,
        running: RunningStore | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._running: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._shared = running
        #: The places this replica holds in ``running``, by namespace.
        self._holds: dict[str, set[str]] = {}
        self._releasing: set[asyncio.Task[None]] = set()
        #: Tokens and cost of requests that ended but whose charge is still being written
        #: (behind their answers), by namespace: limits count them as reserved.
        self._owed: dict[str, tuple[int, float]] = {}

    def running(self, namespace: str) -> int:
        """Return how many admitted requests of a namespace have not settled."""
        return self._running.get(namespace, 0)

    async def admit(
        self, key: KeyRecord | None, namespace: str, pending: Pending | None = None
    ) -> Admission:
        """Admit one request of ``key`` (``None``: no key, no limits) or raise QuotaExceeded.

        ``pending`` is stored with the count (it learns the windows it is charged to).
        May raise :class:`ccgate.errors.DatabaseBusy` or, with the counters in Redis,
        :class:`ccgate.errors.SharedStateUnavailable` (nothing is counted then).
        """
        made = pending.id if pending is not None else None
        if key is None:
            if pending is not None:
                await self._store.admit(namespace, pending, [], [])
            return Admission(namespace, id=made)
        lock = self._locks.setdefault(namespace, asyncio.Lock())
        async with lock:
            quota = key.quota
            running = self.running(namespace)
            hold = None
            if quota.max_concurrent == 0:
                raise _never("max_concurrent")
            if quota.max_concurrent is not None and self._shared is not None:
                hold = uuid.uuid4().hex
                busy = await self._shared.hold(namespace, hold, quota.max_concurrent)
                if busy is not None:
                    raise _too_many(quota.max_concurrent, busy)
            elif quota.max_concurrent is not None and running >= quota.max_concurrent:
                raise _too_many(quota.max_concurrent, running)
            now = self._clock()
            minute, day, month = windows_at(now)
            owed_tokens, owed_usd = self._owed.get(namespace, (0, 0.0))
            wanted: list[tuple[str, Window, Measure, float | None, float]] = [
                ("requests_per_minute", minute, "requests", quota.requests_per_minute, 0.0),
                ("requests_per_day", day, "requests", quota.requests_per_day, 0.0),
                (
                    "tokens_per_day",
                    day,
                    "tokens",
                    quota.tokens_per_day,
                    _HOLD_TOKENS * running + owed_tokens,
                ),
                (
                    "budget_usd_per_month",
                    month,
                    "cost_usd",
                    quota.budget_usd_per_month,
                    _HOLD_USD * running + owed_usd,
                ),
            ]
            limits = [
                Limit(name, window, measure, float(ceiling), reserved)
                for name, window, measure, ceiling, reserved in wanted
                if ceiling is not None
            ]
            stored = replace(pending, windows=(day, month)) if pending is not None else None
            try:
                reached = await self._store.admit(namespace, stored, [minute, day, month], limits)
            except BaseException:
                self._give_back(namespace, hold)
                raise
            if reached is not None:
                self._give_back(namespace, hold)
                raise _exceeded(reached, now)
            # Read again: requests may have settled while the counters were written.
            self._running[namespace] = self.running(namespace) + 1
            if hold is not None:
                self._holds.setdefault(namespace, set()).add(hold)
        return Admission(namespace, [day, month], counted=True, id=made, hold=hold)

    def _give_back(self, namespace: str, hold: str | None) -> None:
        """Release a shared place in the background (a request that ends must not wait)."""
        if hold is None or self._shared is None:
            return
        held = self._holds.get(namespace)
        if held is not None:
            held.discard(hold)
            if not held:
                del self._holds[namespace]
        task = asyncio.get_running_loop().create_task(
            self._release(namespace, hold), name="ccgate-release-place"
        )
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release(self, namespace: str, hold: str) -> None:
        assert self._shared is not None
        try:
            await self._shared.release(namespace, hold)
        except Exception:  # noqa: BLE001 - the place lapses by itself
            log.warning("running_place_not_released namespace=%s", namespace, exc_info=True)

    async def renew(self) -> None:
        """Keep this replica's places among the running requests (call every few seconds)."""
        if self._shared is not None and self._holds:
            await self._shared.renew({ns: sorted(held) for ns, held in self._holds.items()})

    def settlement(
        self,
        admission: Admission,
        *,
        tokens: int,
        cost_usd: float,
        record: UsageRecord | None = None,
    ) -> Settlement:
        """Return what closes an admitted request: its ledger ``record`` and its charge."""
        windows = tuple(admission.windows) if admission.counted else ()
        return Settlement(admission.id, admission.namespace, windows, tokens, cost_usd, record)

    def owe(self, settlement: Settlement) -> None:
        """Count a settlement being written as spent until :meth:`paid` (exact limits)."""
        self._owe(settlement, 1)

    def paid(self, settlement: Settlement) -> None:
        """Forget what :meth:`owe` counted: the settlement is in the counters (or the journal)."""
        self._owe(settlement, -1)

    def _owe(self, settlement: Settlement, sign: int) -> None:
        if not settlement.windows or not (settlement.tokens or settlement.cost_usd):
            return
        tokens, usd = self._owed.get(settlement.namespace, (0, 0.0))
        tokens += sign * settlement.tokens
        usd += sign * settlement.cost_usd
        if tokens <= 0 and usd <= 1e-12:
            self._owed.pop(settlement.namespace, None)
        else:
            self._owed[settlement.namespace] = (tokens, usd)

    def release(self, admission: Admission) -> None:
        """Let an admitted request go (it no longer runs); only the first call counts."""
        if admission.settled:
            return
        admission.settled = True
        self._give_back(admission.namespace, admission.hold)
        if not admission.counted:
            return
        left = self._running.get(admission.namespace, 1) - 1
        if left > 0:
            self._running[admission.namespace] = left
        else:
            self._running.pop(admission.namespace, None)

    async def settle(
        self,
        admission: Admission,
        *,
        tokens: int,
        cost_usd: float,
        record: UsageRecord | None = None,
    ) -> None:
        """Charge what an admitted request spent (now) and let it go; only the first call counts."""
        if admission.settled:
            return
        settlement = self.settlement(admission, tokens=tokens, cost_usd=cost_usd, record=record)
        try:
            if admission.id is not None or settlement.windows or record is not None:
                await self._store.settle(settlement)
        finally:
            self.release(admission)


def _too_many(ceiling: int, running: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"this key may run {ceiling} request(s) at once "
        f"(max_concurrent) and {running} are running; retry when one has finished",
        limit="max_concurrent",
        retry_after=1,
        should_retry=True,
    )


def _never(limit: str) -> QuotaExceeded:
    return QuotaExceeded(
        f"this key's {limit} is 0: it may not make requests until an administrator raises it",
        limit=limit,
    )


def _usd(value: float) -> str:
    return f"${value:.2f}" if value >= 0.01 or value == 0 else f"${value:g}"


def _exceeded(limit: Limit, now: float) -> QuotaExceeded:
    if limit.ceiling == 0:
        return _never(limit.name)
    end = _window_end(limit.window)
    wait = max(1.0, end - now)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(end))
    ceiling = _usd(limit.ceiling) if limit.measure == "cost_usd" else f"{limit.ceiling:g}"
    what = _WHAT[limit.name].format(ceiling)
    verb = "is spent" if limit.measure == "cost_usd" else "is reached"
    short = limit.window.kind == "minute"
    return QuotaExceeded(
        f"this key's limit of {what} ({limit.name}) {verb}; it resets at {when} (in {wait:.0f} s)",
        limit=limit.name,
        retry_after=wait if short else None,
        should_retry=short,
    )
