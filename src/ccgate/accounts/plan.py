"""What an upstream account's plan looks like: its windows, their status, and when they reset.

A subscription (a Claude login or a ``claude setup-token`` token) is limited by
rolling windows: five hours, seven days, and a seven-day window per model
family (Opus, Sonnet). Each window has a *utilisation* (0 to 1), a *status*
(``allowed``, ``warning`` once a threshold is passed, ``rejected`` when used up)
and a *reset* time. Beyond them the account may draw on *extra usage* (billed
per token) when the operator enabled it. The upstream says all this on every
answer, and Claude Code passes it on as it runs (``claude.plan`` reads it).

A :class:`Reading` is one such report, with where it came from and when. It is
only ever used through :meth:`Reading.current`, which retires what a reset made
untrue: a window whose reset time has passed is empty again, and a refusal whose
window rolled over is gone. A reading never says "rejected" after the reset.

API-key accounts have no plan: they are limited per minute and billed per token,
and the upstream sends them no plan headers, so they have no reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "FAMILY_WINDOWS",
    "WINDOW_LABELS",
    "WINDOW_LENGTHS",
    "Overage",
    "Reading",
    "Status",
    "Window",
    "family_of",
]

Status = Literal["allowed", "warning", "rejected"]

#: Each window's name as the upstream says it, and as people say it.
WINDOW_LABELS: dict[str, str] = {
    "five_hour": "5-hour",
    "seven_day": "7-day",
    "seven_day_opus": "7-day Opus",
    "seven_day_sonnet": "7-day Sonnet",
    "seven_day_overage_included": "7-day with extra usage",
    "overage": "extra usage",
}
#: How long each window is (seconds); extra usage resets monthly, on its own date.
WINDOW_LENGTHS: dict[str, float] = {
    "five_hour": 5 * 3600.0,
    "seven_day": 7 * 86_400.0,
    "seven_day_opus": 7 * 86_400.0,
    "seven_day_sonnet": 7 * 86_400.0,
    "seven_day_overage_included": 7 * 86_400.0,
}
#: How long a refusal that names no reset time holds (seconds).
UNKNOWN_RESET = 300.0
#: The per-model window that also limits each model family.
FAMILY_WINDOWS: dict[str, str] = {"opus": "seven_day_opus", "sonnet": "seven_day_sonnet"}


def family_of(model: str) -> str | None:
    """Return the model family (``opus``, ``sonnet``, ``haiku``) a CLI model name belongs to."""
    name = model.lower()
    for family in ("opus", "sonnet", "haiku"):
        if family in name:
            return family
    return None


@dataclass(frozen=True, slots=True)
class Window:
    """One window of a plan; ``utilization`` is ``None`` when only its status is known."""

    name: str
    utilization: float | None = None
    resets_at: float | None = None
    status: Status = "allowed"
    surpassed_threshold: float | None = None

    def current(self, now: float) -> Window:
        """Return the window as it is at ``now``: empty again once its reset passed."""
        if self.resets_at is None or now < self.resets_at:
            return self
        length = WINDOW_LENGTHS.get(self.name)
        following = self.resets_at + length if length else None
        if following is not None:
            while following <= now:
                following += length or 0
        return Window(
            self.name, 0.0 if self.utilization is not None else None, following, "allowed"
        )

    def as_json(self) -> dict[str, Any]:
        """Return the window as JSON-ready data."""
        return {
            "name": self.name,
            "label": WINDOW_LABELS.get(self.name, self.name),
            "utilization": self.utilization,
            "status": self.status,
            "resets_at": self.resets_at,
            "surpassed_threshold": self.surpassed_threshold,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Window:
        """Return the window ``as_json`` described."""
        return cls(
            str(raw["name"]),
            raw.get("utilization"),
            raw.get("resets_at"),
            raw.get("status") or "allowed",
            raw.get("surpassed_threshold"),
        )


@dataclass(frozen=True, slots=True)
class Overage:
    """The account's extra usage: whether it may be drawn on, and whether it is."""

    #: ``allowed``, ``warning`` or ``rejected`` (``None``: not reported).
    status: str | None = None
    resets_at: float | None = None
    #: Why extra usage is off (``out_of_credits``, ``org_level_disabled``, ...).
    disabled_reason: str | None = None
    #: The answer this reading came with was billed as extra usage.
    in_use: bool = False

    @property
    def available(self) -> bool:
        """Tell whether the upstream would bill extra usage once the plan is used up."""
        return self.status in ("allowed", "warning")

    def as_json(self) -> dict[str, Any]:
        """Return the overage state as JSON-ready data."""
        return {
            "status": self.status,
            "resets_at": self.resets_at,
            "disabled_reason": self.disabled_reason,
            "in_use": self.in_use,
        }


@dataclass(frozen=True, slots=True)
class Reading:
    """One report of an account's plan; read it through :meth:`current`.

    ``status`` and ``binding`` are the account's as a whole: the status of the
    window that binds now (``binding``, the upstream's "representative claim"),
    which resets at ``resets_at``. ``source`` says where the reading came from:
    ``answer`` (reported with a model answer), ``refusal`` (with a refused
    request) or ``probe`` (a request made only to read the plan).
    """

    observed_at: float
    source: str
    status: Status = "allowed"
    binding: str | None = None
    resets_at: float | None = None
    windows: tuple[Window, ...] = ()
    overage: Overage = field(default_factory=Overage)
    #: The upstream's own code for a refusal (``credits_required``, ...).
    error_code: str | None = None

    def window(self, name: str) -> Window | None:
        """Return window ``name`` when the reading has it."""
        return next((w for w in self.windows if w.name == name), None)

    @property
    def billed_as_extra_usage(self) -> bool:
        """Tell whether the answer was paid for by extra usage, not by the plan."""
        return self.overage.in_use or (self.status == "rejected" and self.overage.available)

    def current(self, now: float) -> Reading:
        """Return the reading as it stands at ``now``: what a reset made untrue is retired.

        A refusal that named no reset time is retired ``UNKNOWN_RESET`` seconds after it
        was seen (the next request reads the plan again).
        """
        windows = tuple(w.current(now) for w in self.windows)
        if now - self.observed_at >= UNKNOWN_RESET:
            windows = tuple(
                replace(w, status="allowed")
                if w.status == "rejected" and w.resets_at is None
                else w
                for w in windows
            )
        binding_over = (
            now >= self.resets_at
            if self.resets_at is not None
            else self.status == "rejected" and now - self.observed_at >= UNKNOWN_RESET
        )
        if not binding_over and windows == self.windows:
            return self
        if not binding_over:
            return replace(self, windows=windows)
        status: Status = "allowed"
        # Another window may still be the one that refuses (a 5-hour reset does not
        # end a 7-day refusal).
        still = [w for w in windows if w.status == "rejected"]
        if still:
            first = min(still, key=lambda w: w.resets_at or now)
            return replace(
                self,
                windows=windows,
                status="rejected",
                binding=first.name,
                resets_at=first.resets_at,
            )
        overage = replace(self.overage, in_use=False)
        return replace(
            self,
            windows=windows,
            status=status,
            binding=None,
            resets_at=None,
            overage=overage,
            error_code=None,
        )

    def merged(self, newer: Reading) -> Reading:
        """Return ``newer`` with the windows this reading had that ``newer`` did not report.

        Claude Code reports a change, not the whole plan: a report may carry only the
        window that binds now.
        """
        names = {w.name for w in newer.windows}
        kept = tuple(w for w in self.windows if w.name not in names)
        return replace(newer, windows=(*newer.windows, *kept))

    def utilization(self, family: str | None = None) -> float | None:
        """Return the highest utilisation of the windows that limit ``family`` (or any model)."""
        names = ["five_hour", "seven_day"]
        if family in FAMILY_WINDOWS:
            names.append(FAMILY_WINDOWS[family])
        values = [w.utilization for w in self.windows if w.name in names]
        known = [v for v in values if v is not None]
        return max(known) if known else None

    def refuses(self, family: str | None = None) -> Window | None:
        """Return the window that refuses a request for ``family``, if one does."""
        names = {"five_hour", "seven_day", "seven_day_overage_included"}
        if family in FAMILY_WINDOWS:
            names.add(FAMILY_WINDOWS[family])
        for window in self.windows:
            if window.name in names and window.status == "rejected":
                return window
        if self.status == "rejected":
            binding = self.binding or "five_hour"
            if binding in names or binding == "overage":
                return Window(binding, None, self.resets_at, "rejected")
        return None

    def as_json(self) -> dict[str, Any]:
        """Return the reading as JSON-ready data (what ``/admin/accounts`` shows)."""
        return {
            "observed_at": self.observed_at,
            "source": self.source,
            "status": self.status,
            "binding": self.binding,
            "resets_at": self.resets_at,
            "windows": [w.as_json() for w in self.windows],
            "overage": self.overage.as_json(),
            "error_code": self.error_code,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Reading:
        """Return the reading ``as_json`` described."""
        overage = raw.get("overage") or {}
        return cls(
            observed_at=float(raw["observed_at"]),
            source=str(raw.get("source") or "answer"),
            status=raw.get("status") or "allowed",
            binding=raw.get("binding"),
            resets_at=raw.get("resets_at"),
            windows=tuple(Window.from_json(w) for w in raw.get("windows") or []),
            overage=Overage(
                overage.get("status"),
                overage.get("resets_at"),
                overage.get("disabled_reason"),
                bool(overage.get("in_use")),
            ),
            error_code=raw.get("error_code"),
        )
