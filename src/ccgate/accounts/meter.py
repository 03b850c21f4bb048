"""The plan meter: what ccgate knows of each upstream account's plan, and whether it can serve.

Every report of an account's plan (:class:`~ccgate.accounts.plan.Reading`) is
merged into that account's :class:`PlanState`, as are refusals seen without a
report (an API key's 429, credentials the upstream rejected). A refused account
*cools down* until the time its refusal ends: the reset of the window that
refused, never longer. It serves again by itself once that time passes (or the
window's reset retired the refusal), when a success is observed on it, or when
a person resets it.

:meth:`PlanMeter.verdict` is the one place that says whether an account may
take a request for a model family now, and how much headroom it has: the
router (``claude.accounts``), the health summary and the fair share all ask it.

Changes are told to ``on_change(account, state, news)``, where ``news`` names
what happened (``warning``, ``rejected``, ``extra_usage``, ``recovered``): the
gateway stores the state, logs it, and tells the console and the webhooks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ccgate.accounts.plan import FAMILY_WINDOWS, WINDOW_LABELS, Reading, Window

__all__ = ["Cooldown", "OnChange", "PlanMeter", "PlanState", "Verdict", "when"]

#: How long an account cools down after a refusal that names no reset time (seconds).
DEFAULT_COOLDOWN = 60.0


@dataclass(frozen=True, slots=True)
class Cooldown:
    """An account takes no requests until ``until``; ``limit`` says which limit refused."""

    until: float
    reason: str
    #: ``plan_window``, ``extra_usage``, ``rate_limit`` or ``credentials``.
    limit: str

    def as_json(self) -> dict[str, Any]:
        """Return the cooldown as JSON-ready data."""
        return {"until": self.until, "reason": self.reason, "limit": self.limit}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Cooldown:
        """Return the cooldown ``as_json`` described."""
        return cls(float(raw["until"]), str(raw["reason"]), str(raw.get("limit") or "plan_window"))


@dataclass(frozen=True, slots=True)
class PlanState:
    """What the meter knows of one account."""

    reading: Reading | None = None
    cooldown: Cooldown | None = None
    #: When an answer of this account was last billed as extra usage.
    extra_usage_at: float | None = None
    last_success: float | None = None
    last_refusal: float | None = None
    #: When a person last reset the account (a reset made elsewhere is adopted by it).
    reset_at: float | None = None

    def current(self, now: float) -> PlanState:
        """Return the state at ``now``: an ended cooldown and retired windows are gone."""
        reading = self.reading.current(now) if self.reading is not None else None
        cooldown = self.cooldown if self.cooldown and self.cooldown.until > now else None
        if reading is self.reading and cooldown is self.cooldown:
            return self
        return replace(self, reading=reading, cooldown=cooldown)

    def as_json(self) -> dict[str, Any]:
        """Return the state as JSON-ready data."""
        return {
            "reading": self.reading.as_json() if self.reading else None,
            "cooldown": self.cooldown.as_json() if self.cooldown else None,
            "extra_usage_at": self.extra_usage_at,
            "last_success": self.last_success,
            "last_refusal": self.last_refusal,
            "reset_at": self.reset_at,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PlanState:
        """Return the state ``as_json`` described."""
        reading = raw.get("reading")
        cooldown = raw.get("cooldown")
        return cls(
            reading=Reading.from_json(reading) if reading else None,
            cooldown=Cooldown.from_json(cooldown) if cooldown else None,
            extra_usage_at=raw.get("extra_usage_at"),
            last_success=raw.get("last_success"),
            last_refusal=raw.get("last_refusal"),
            reset_at=raw.get("reset_at"),
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an account may take a request now, and how much of its plan is left.

    ``headroom`` is 1 minus the highest utilisation of the windows that limit the
    request's model (1 when the account reports no plan). When ``usable`` is
    False, ``limit`` and ``reason`` say why and ``until`` when that ends.
    """

    usable: bool
    headroom: float = 1.0
    reason: str | None = None
    limit: str | None = None
    until: float | None = None


OnChange = Callable[[str, PlanState, tuple[str, ...]], None]


def when(timestamp: float | None) -> str:
    """Return a reset time as people read it in a message (UTC)."""
    if timestamp is None:
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


class PlanMeter:
    """Every account's :class:`PlanState`; see the module docstring."""

    def __init__(
        self,
        *,
        allow_extra_usage: bool = False,
        clock: Callable[[], float] = time.time,
        on_change: OnChange | None = None,
    ) -> None:
        self.allow_extra_usage = allow_extra_usage
        self._clock = clock
        self._on_change = on_change
        self._states: dict[str, PlanState] = {}

    def load(self, account: str, state: PlanState) -> None:
        """Take an account's stored state (at start), without telling anyone."""
        self._states[account] = state

    def forget(self, account: str) -> None:
        """Drop a removed account."""
        self._states.pop(account, None)

    def state(self, account: str) -> PlanState:
        """Return what is known of ``account`` now."""
        return self._states.get(account, PlanState()).current(self._clock())

    def observe(self, account: str, reading: Reading) -> None:
        """Merge a report of ``account``'s plan."""
        now = self._clock()
        before = self.state(account)
        merged = before.reading.merged(reading) if before.reading else reading
        news: list[str] = []
        state = replace(before, reading=merged)
        if merged.billed_as_extra_usage:
            state = replace(state, extra_usage_at=now)
            news.append("extra_usage")
        elif merged.status == "rejected" and merged.binding not in FAMILY_WINDOWS.values():
            # A per-model window refuses only its family (``verdict`` asks the reading).
            refusing = merged.refuses() or Window(merged.binding or "five_hour")
            until = merged.resets_at or refusing.resets_at or now + DEFAULT_COOLDOWN
            limit = "extra_usage" if refusing.name == "overage" else "plan_window"
            state = replace(
                state,
                cooldown=Cooldown(until, _refusal_reason(refusing.name, until), limit),
                last_refusal=now,
            )
            news.append("rejected")
        elif _warns(merged) and not (before.reading and _warns(before.reading)):
            news.append("warning")
        if before.cooldown is not None and state.cooldown is None:
            news.append("recovered")
        self._set(account, state, news)

    def refused(self, account: str, *, until: float | None, reason: str, limit: str) -> None:
        """Note a refusal of ``account`` that came without a plan report."""
        now = self._clock()
        state = self.state(account)
        end = until if until is not None and until > now else now + DEFAULT_COOLDOWN
        if state.cooldown is not None and state.cooldown.until >= end:
            return
        cooldown = Cooldown(end, reason, limit)
        self._set(account, replace(state, cooldown=cooldown, last_refusal=now), ["rejected"])

    def succeeded(self, account: str) -> None:
        """Note an answer of ``account``: a cooldown it was under is over (unless its plan
        still says a window is used up: that answer was extra usage, or came before)."""
        state = self.state(account)
        cooldown, reading = state.cooldown, state.reading
        held = cooldown is not None and cooldown.limit == "plan_window"
        if held and reading is not None and reading.status == "rejected":
            self._states[account] = replace(state, last_success=self._clock())
            return
        news = ["recovered"] if state.cooldown is not None else []
        state = replace(state, cooldown=None, last_success=self._clock())
        if news:
            self._set(account, state, news)
        else:
            self._states[account] = state

    def reset(self, account: str) -> None:
        """End ``account``'s cooldown and any refusal its last reading holds (a person asked)."""
        state = self.state(account)
        reading = state.reading
        if reading is not None:
            windows = tuple(replace(w, status="allowed") for w in reading.windows)
            reading = replace(
                reading, status="allowed", binding=None, windows=windows, error_code=None
            )
        state = replace(state, reading=reading, cooldown=None, reset_at=self._clock())
        self._set(account, state, ["recovered"])

    def verdict(self, account: str, family: str | None = None) -> Verdict:
        """Tell whether ``account`` may take a request for model ``family`` now."""
        state = self.state(account)
        reading = state.reading
        used = reading.utilization(family) if reading is not None else None
        headroom = 1.0 - min(1.0, max(0.0, used)) if used is not None else 1.0
        if state.cooldown is not None:
            c = state.cooldown
            return Verdict(False, headroom, c.reason, c.limit, c.until)
        if reading is None:
            return Verdict(True, headroom)
        refusing = reading.refuses(family)
        if refusing is not None:
            until = refusing.resets_at or reading.resets_at
            if reading.overage.available:
                if not self.allow_extra_usage:
                    return Verdict(
                        False,
                        0.0,
                        f"its {_label(refusing.name)} window is used up and a request now "
                        "would be billed as extra usage (allow_extra_usage is off)",
                        "extra_usage",
                        until,
                    )
                return Verdict(True, 0.0)
            return Verdict(False, 0.0, _refusal_reason(refusing.name, until), "plan_window", until)
        return Verdict(True, headroom)

    def _set(self, account: str, state: PlanState, news: list[str]) -> None:
        self._states[account] = state
        if self._on_change is not None:
            self._on_change(account, state, tuple(news))


def _label(window: str) -> str:
    return WINDOW_LABELS.get(window, window)


def _refusal_reason(window: str, until: float | None) -> str:
    if window == "overage":
        return f"its extra usage is used up or off until {when(until)}"
    return f"its {_label(window)} window is used up until {when(until)}"


def _warns(reading: Reading) -> bool:
    return reading.status == "warning" or any(w.status == "warning" for w in reading.windows)
