"""The plan card: each upstream account's plan windows, as the overview and the accounts page
show them, and who used each account in its current 5-hour window.

Who sees what (:func:`plan_view`):

- ``full``, the operator (the admin, or ``local`` with ``auth_mode=none``): every
  account by name, its kind, cooldown with its reason, extra usage, and each key's
  requests and cost on it since its 5-hour window began;
- ``restricted``, a key holder (a client key or the shared key) when
  ``usage_shows_plan`` is on: the enabled accounts as "Account 1", "Account 2"…, each
  window's percentage, status and reset time, and when a paused account serves again:
  no name, kind, secret hint, reason or any key's usage;
- nothing (``None``) for a key holder otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Literal

from ccgate.access.signins import Viewer
from ccgate.accounts.meter import PlanState
from ccgate.accounts.plan import WINDOW_LABELS, WINDOW_LENGTHS, Window
from ccgate.console.web import namespaces
from ccgate.gateway import Gateway
from ccgate.store.records import AccountRecord

__all__ = [
    "FIVE_HOURS",
    "RECORDS_MAX",
    "AccountPlan",
    "Bar",
    "Spend",
    "View",
    "plan_card",
    "plan_view",
    "sees_accounts",
]

View = Literal["full", "restricted"]

#: The 5-hour window's length (seconds): who used an account is counted over it.
FIVE_HOURS = WINDOW_LENGTHS["five_hour"]
#: Ledger rows read at most to count requests per key (cost and tokens are always whole).
RECORDS_MAX = 50_000
#: The order windows are shown in (others after them, by name).
_ORDER = ("five_hour", "seven_day", "seven_day_opus", "seven_day_sonnet")
_KINDS = {"login": "Claude login", "oauth_token": "OAuth token", "api_key": "API key"}
_LIMITS = {
    "plan_window": "plan window",
    "extra_usage": "extra usage",
    "rate_limit": "rate limit",
    "credentials": "credentials",
}


@dataclass(frozen=True, slots=True)
class Bar:
    """One plan window as a bar: ``percent`` is ``None`` when only its status is known."""

    label: str
    percent: int | None
    status: str
    resets_at: float | None
    #: Seconds until it resets (``None``: unknown).
    resets_in: float | None


@dataclass(frozen=True, slots=True)
class Spend:
    """What one key spent on an account since its 5-hour window began."""

    who: str
    requests: int
    #: More requests than :data:`RECORDS_MAX` were made: ``requests`` is a lower bound.
    at_least: bool
    tokens: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class AccountPlan:
    """One account's row of the plan card; the fields after ``paused_in`` are ``full``'s."""

    #: For element ids and forms: the account's id (``full``) or its place (``restricted``).
    ref: str
    name: str
    bars: tuple[Bar, ...]
    #: Said when there is no window to show.
    no_plan: str | None
    #: The account as a whole, when it reports no windows (``allowed``, ``rejected``…).
    status: str | None
    paused_until: float | None
    paused_in: float | None
    id: str | None = None
    kind: str | None = None
    kind_label: str | None = None
    source: str | None = None
    secret_hint: str | None = None
    priority: int | None = None
    enabled: bool = True
    available: bool = True
    unavailable_reason: str | None = None
    cooldown_reason: str | None = None
    cooldown_limit: str | None = None
    observed_at: float | None = None
    observed_ago: float | None = None
    overage_status: str | None = None
    overage_resets_at: float | None = None
    overage_reason: str | None = None
    overage_in_use: bool = False
    extra_usage_at: float | None = None
    #: When the current 5-hour window began, and whether the plan said so (else: 5 h ago).
    window_since: float | None = None
    window_known: bool = False
    used_by: tuple[Spend, ...] = ()
    #: Turns the router started on it since ccgate started (``None``: no router).
    turns: int | None = None

    @property
    def resettable(self) -> bool:
        """Tell whether a person's reset would change anything (a cooldown or a refusal)."""
        return (
            self.paused_until is not None
            or self.status == "rejected"
            or any(bar.status == "rejected" for bar in self.bars)
        )


def sees_accounts(viewer: Viewer) -> bool:
    """Tell whether ``viewer`` manages the accounts (the admin, or ``local``)."""
    return viewer.role in ("admin", "local")


def plan_view(gateway: Gateway, viewer: Viewer) -> View | None:
    """Return how much of the plan ``viewer`` sees (see the module docstring)."""
    if sees_accounts(viewer):
        return "full"
    return "restricted" if gateway.settings.usage_shows_plan else None


async def plan_card(
    gateway: Gateway, viewer: Viewer, view: View, *, now: float | None = None
) -> list[AccountPlan]:
    """Return the card's rows, in the accounts' priority order."""
    stamp = time.time() if now is None else now
    accounts = gateway.accounts
    if view == "restricted":
        enabled = [r for r in accounts.records() if r.enabled]
        return [
            _restricted(str(place), accounts.meter.state(r.id), stamp)
            for place, r in enumerate(enabled, 1)
        ]
    router = gateway.router
    rows = [
        _full(gateway, record, stamp, router.routed.turns.get(record.id, 0) if router else None)
        for record in accounts.records()
    ]
    return await _who_used(gateway, viewer, rows, stamp)


def _bars(state: PlanState, now: float) -> tuple[Bar, ...]:
    reading = state.reading
    if reading is None:
        return ()
    windows = sorted(reading.windows, key=_rank)
    return tuple(_bar(w, now) for w in windows if w.name != "overage")


def _rank(window: Window) -> tuple[int, str]:
    place = _ORDER.index(window.name) if window.name in _ORDER else len(_ORDER)
    return place, window.name


def _bar(window: Window, now: float) -> Bar:
    used = window.utilization
    percent = None if used is None else round(max(0.0, used) * 100)
    ends = window.resets_at
    return Bar(
        WINDOW_LABELS.get(window.name, window.name),
        percent,
        window.status,
        ends,
        None if ends is None else max(0.0, ends - now),
    )


def _paused(state: PlanState, now: float) -> tuple[float | None, float | None]:
    if state.cooldown is None:
        return None, None
    return state.cooldown.until, max(0.0, state.cooldown.until - now)


def _whole_status(state: PlanState) -> str | None:
    reading = state.reading
    if reading is None or reading.windows:
        return None
    return reading.status


def _restricted(place: str, state: PlanState, now: float) -> AccountPlan:
    bars = _bars(state, now)
    until, left = _paused(state, now)
    return AccountPlan(
        ref=f"account-{place}",
        name=f"Account {place}",
        bars=bars,
        no_plan=None if bars or state.reading else "no plan reading",
        status=_whole_status(state),
        paused_until=until,
        paused_in=left,
    )


def _full(gateway: Gateway, record: AccountRecord, now: float, turns: int | None) -> AccountPlan:
    accounts = gateway.accounts
    shown = accounts.view(record)
    state = accounts.meter.state(record.id)
    kind = str(shown["kind"])
    bars = _bars(state, now)
    until, left = _paused(state, now)
    reading = state.reading
    no_plan = None
    if reading is None:
        api_key = kind == "api_key"
        no_plan = "API key: billed per token, no plan" if api_key else "no plan reading yet"
    five = reading.window("five_hour") if reading is not None else None
    known = five is not None and five.resets_at is not None
    since = five.resets_at - FIVE_HOURS if five is not None and five.resets_at else now - FIVE_HOURS
    overage = reading.overage if reading is not None else None
    return AccountPlan(
        ref=f"account-{record.id}",
        name=record.name,
        bars=bars,
        no_plan=no_plan,
        status=_whole_status(state),
        paused_until=until,
        paused_in=left,
        id=record.id,
        kind=kind,
        kind_label=_KINDS.get(kind, kind),
        source=record.source,
        secret_hint=record.secret_hint,
        priority=record.priority,
        enabled=record.enabled,
        available=bool(shown["available"]),
        unavailable_reason=shown["unavailable_reason"] if record.enabled else None,
        cooldown_reason=state.cooldown.reason if state.cooldown else None,
        cooldown_limit=_LIMITS.get(state.cooldown.limit, state.cooldown.limit)
        if state.cooldown
        else None,
        observed_at=reading.observed_at if reading is not None else None,
        observed_ago=max(0.0, now - reading.observed_at) if reading is not None else None,
        overage_status=overage.status if overage is not None else None,
        overage_resets_at=overage.resets_at if overage is not None else None,
        overage_reason=overage.disabled_reason if overage is not None else None,
        overage_in_use=bool(overage and overage.in_use),
        extra_usage_at=state.extra_usage_at,
        window_since=since,
        window_known=known,
        turns=turns,
    )


async def _who_used(
    gateway: Gateway, viewer: Viewer, rows: list[AccountPlan], now: float
) -> list[AccountPlan]:
    """Fill in each key's requests, tokens and cost on each account since its window began.

    Cost and tokens are the ledger's sums (``account_spend``); requests are counted from
    its rows (at most :data:`RECORDS_MAX` of them: beyond, the count says "at least").
    """
    if not rows:
        return rows
    names = await namespaces(gateway, viewer)
    earliest = min(row.window_since or now for row in rows)
    records = await gateway.ledger.between(None, since=earliest, until=now + 1, limit=RECORDS_MAX)
    cut = len(records) >= RECORDS_MAX
    counted: dict[tuple[str, str], int] = {}
    starts = {row.id: row.window_since or now for row in rows if row.id is not None}
    for record in records:
        account = record.account
        if account is not None and account in starts and record.created_at >= starts[account]:
            mark = (account, record.namespace)
            counted[mark] = counted.get(mark, 0) + 1
    done = []
    for row in rows:
        if row.id is None:
            continue
        spent = await gateway.ledger.account_spend(row.id, starts[row.id])
        used = [
            Spend(
                names.get(namespace, namespace),
                counted.get((row.id, namespace), 0),
                cut,
                tokens,
                cost,
            )
            for namespace, (cost, tokens) in spent.items()
        ]
        used.sort(key=lambda s: (-s.cost_usd, -s.requests, s.who))
        done.append(replace(row, used_by=tuple(used)))
    return done
