"""Fair share: a key may use only its share of an account's 5-hour window when it runs low.

A key's ``plan_share`` (a fraction, 0 to 1) limits how much of each account's
5-hour window it may use. The upstream reports the window's utilisation for the
account as a whole, so a key's part of it is estimated from the ledger: its
cost on that account since the window began, against the cost of every key
there (tokens when no cost is known), times the window's utilisation. The limit
is enforced only once the window is ``enforce_at`` full (``plan_share_at``):
while there is plenty, nobody is held back. A key over its share on an account
that runs low does not run there; when no account is left for it, it gets a 429
``plan_limit`` (limit ``plan_share``) until the window resets.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ccgate.accounts.meter import PlanMeter, when
from ccgate.accounts.plan import WINDOW_LENGTHS

__all__ = ["Barred", "FairShare", "Spend"]

#: How long one account's spend per key is reused before the ledger is asked again (s).
SPEND_TTL = 5.0

Spend = Callable[[str, float], Awaitable[dict[str, tuple[float, int]]]]


@dataclass(frozen=True, slots=True)
class Barred:
    """A key may not run on an account now: how much it used, and until when."""

    account: str
    used: float
    share: float
    until: float | None

    def reason(self, name: str) -> str:
        """Return why, for the refusal's message."""
        return (
            f"this key used about {self.used:.0%} of account {name!r}'s 5-hour window, over "
            f"its share of {self.share:.0%}, and the window is running low (until "
            f"{when(self.until)})"
        )


class FairShare:
    """Estimate each key's use of the accounts' 5-hour windows; see the module docstring."""

    def __init__(
        self,
        meter: PlanMeter,
        spend: Spend,
        *,
        enforce_at: float = 0.8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._meter = meter
        self._spend = spend
        self.enforce_at = enforce_at
        self._clock = clock
        self._cache: dict[tuple[str, float], tuple[float, dict[str, tuple[float, int]]]] = {}

    async def used(self, namespace: str, account: str) -> tuple[float, float, float | None]:
        """Return ``(key's estimated use, window utilisation, reset)`` of ``account``'s window."""
        reading = self._meter.state(account).reading
        window = reading.window("five_hour") if reading is not None else None
        if window is None or window.utilization is None or window.resets_at is None:
            return 0.0, 0.0, None
        since = window.resets_at - WINDOW_LENGTHS["five_hour"]
        spend = await self._spend_since(account, since)
        cost_total = sum(cost for cost, _ in spend.values())
        mine = spend.get(namespace, (0.0, 0))
        if cost_total > 0:
            part = mine[0] / cost_total
        else:
            tokens_total = sum(tokens for _, tokens in spend.values())
            part = mine[1] / tokens_total if tokens_total else 0.0
        return window.utilization * part, window.utilization, window.resets_at

    async def barred(
        self, namespace: str, share: float | None, accounts: list[str]
    ) -> list[Barred]:
        """Return the accounts where the key is over ``share`` while the window runs low."""
        if share is None:
            return []
        out = []
        for account in accounts:
            used, utilization, resets_at = await self.used(namespace, account)
            if utilization >= self.enforce_at and used >= share:
                out.append(Barred(account, used, share, resets_at))
        return out

    async def _spend_since(self, account: str, since: float) -> dict[str, tuple[float, int]]:
        now = self._clock()
        key = (account, since)
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < SPEND_TTL:
            return hit[1]
        spend = await self._spend(account, since)
        self._cache = {k: v for k, v in self._cache.items() if now - v[0] < SPEND_TTL}
        self._cache[key] = (now, spend)
        return spend
