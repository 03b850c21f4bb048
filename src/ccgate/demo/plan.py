"""Plan state per credential: the scripted model plays several subscription accounts.

Each credential the model is called with (the ``Authorization: Bearer`` token of an OAuth
login, or the ``x-api-key``) has a :class:`Plan`: a 5-hour and a 7-day window, each with a
utilisation (0 to 1) and a reset time, and the overage ("extra usage") state. Every
``/v1/messages`` answer carries the plan as the real API sends it, in the
``anthropic-ratelimit-unified-*`` response headers (Claude Code turns them into its
``rate_limit_event`` for OAuth logins, never for API keys). Each answered request adds
``step`` to both windows' utilisation. When a window reaches 1 the account is ``rejected``:
the answer is a 429 ``rate_limit_error`` with the same headers, unless overage is allowed,
in which case the request is answered and billed as extra usage (status ``rejected``,
``overage-in-use: true``). A window whose reset time has passed starts again at 0 with a
new reset ``length`` seconds later (``rollover`` shortens the 5-hour window for tests).

Tests set plans through ``POST /demo/plans`` (``{"<credential>": {...fields...}}``) and read
them with ``GET /demo/plans``; a credential never set has no plan (no headers at all).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["FIVE_HOURS", "SEVEN_DAYS", "Plan", "Plans", "Window", "credential_of"]

FIVE_HOURS = 5 * 3600
SEVEN_DAYS = 7 * 86_400
#: Utilisation at and above which a window says it passed its warning threshold.
WARN_AT = 0.75
PREFIX = "anthropic-ratelimit-unified-"


def credential_of(headers: dict[str, str]) -> str | None:
    """Return the credential a request was made with (bearer token or API key)."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return headers.get("x-api-key") or None


@dataclass
class Window:
    """One rate-limit window of a plan."""

    utilization: float = 0.0
    length: float = FIVE_HOURS
    reset: float = 0.0

    def roll(self, now: float) -> None:
        """Start again at 0 when the reset time has passed."""
        if not self.reset:
            self.reset = math.ceil(now + self.length)
        if now >= self.reset:
            self.utilization = 0.0
            self.reset = math.ceil(now + self.length)

    @property
    def status(self) -> str:
        """``rejected`` at 1, ``allowed_warning`` past the threshold, else ``allowed``."""
        if self.utilization >= 1.0:
            return "rejected"
        return "allowed_warning" if self.utilization >= WARN_AT else "allowed"


@dataclass
class Plan:
    """One account's plan (see the module docstring)."""

    five_hour: Window = field(default_factory=lambda: Window(length=FIVE_HOURS))
    seven_day: Window = field(default_factory=lambda: Window(length=SEVEN_DAYS))
    #: Utilisation each answered request adds to both windows.
    step: float = 0.0
    #: Whether requests beyond the plan are served as extra usage.
    overage_allowed: bool = False
    overage_disabled_reason: str | None = "org_level_disabled"
    #: A refusal arrives as an ``error`` event inside a 200 stream instead of a 429.
    refuse_in_stream: bool = False
    #: Every request is refused as the upstream refuses third-party apps whose use is
    #: drawn from extra usage only, when there is none: a 429 whose binding limit is
    #: ``overage``, with overage rejected (out of credits).
    extra_usage_only: bool = False

    def binding(self) -> tuple[str, Window]:
        """Return the window that limits now (the fuller one)."""
        if self.seven_day.utilization > self.five_hour.utilization:
            return "seven_day", self.seven_day
        return "five_hour", self.five_hour

    def rejected(self) -> bool:
        """Tell whether a request is refused (a window is full and overage is not allowed)."""
        if self.extra_usage_only:
            return True
        full = self.binding()[1].status == "rejected"
        return full and not self.overage_allowed

    def headers(self) -> dict[str, str]:
        """Return the ``anthropic-ratelimit-unified-*`` headers of this plan now."""
        claim, window = self.binding()
        over = window.status == "rejected"
        headers = {
            "status": "rejected" if over else window.status,
            "reset": str(int(window.reset)),
            "representative-claim": claim,
            "fallback-percentage": "0.5",
            "5h-utilization": f"{self.five_hour.utilization:.2f}",
            "5h-reset": str(int(self.five_hour.reset)),
            "5h-status": self.five_hour.status,
            "7d-utilization": f"{self.seven_day.utilization:.2f}",
            "7d-reset": str(int(self.seven_day.reset)),
            "7d-status": self.seven_day.status,
            "overage-status": "allowed" if self.overage_allowed else "rejected",
            "overage-reset": str(int(self.seven_day.reset)),
        }
        for name, win in (("5h", self.five_hour), ("7d", self.seven_day)):
            if win.utilization >= WARN_AT:
                headers[f"{name}-surpassed-threshold"] = f"{WARN_AT:.2f}"
        if not self.overage_allowed and self.overage_disabled_reason:
            headers["overage-disabled-reason"] = self.overage_disabled_reason
        if over and self.overage_allowed:
            headers["overage-in-use"] = "true"
        if self.extra_usage_only:
            headers.update(
                {
                    "status": "rejected",
                    "representative-claim": "overage",
                    "reset": str(int(self.seven_day.reset)),
                    "overage-status": "rejected",
                    "overage-disabled-reason": "out_of_credits",
                }
            )
        return {PREFIX + name: value for name, value in headers.items()}

    def view(self) -> dict[str, Any]:
        """Return the plan as plain data (for ``GET /demo/plans``)."""
        data = asdict(self)
        data["status"] = self.headers()[PREFIX + "status"]
        return data


class Plans:
    """Every credential's plan, shared by the demo app and the tests (thread-safe)."""

    def __init__(self) -> None:
        self._plans: dict[str, Plan] = {}
        self._lock = threading.Lock()

    def set(self, credential: str, fields: dict[str, Any], *, now: float | None = None) -> Plan:
        """Set (or change) ``credential``'s plan from plain data.

        ``five_hour``/``seven_day`` take ``utilization``, ``reset_in`` (seconds from now)
        and ``length``; ``rollover`` is a short 5-hour window for tests (seconds);
        ``step``, ``overage_allowed``, ``overage_disabled_reason`` and
        ``refuse_in_stream`` as on :class:`Plan`.
        """
        stamp = time.time() if now is None else now
        with self._lock:
            plan = self._plans.setdefault(credential, Plan())
            if "rollover" in fields:
                plan.five_hour.length = float(fields["rollover"])
                plan.five_hour.reset = math.ceil(stamp + plan.five_hour.length)
            for name in ("five_hour", "seven_day"):
                given = fields.get(name)
                if isinstance(given, dict):
                    window: Window = getattr(plan, name)
                    if "length" in given:
                        window.length = float(given["length"])
                    if "utilization" in given:
                        window.utilization = float(given["utilization"])
                    window.reset = math.ceil(stamp + float(given.get("reset_in", window.length)))
            for name in (
                "step",
                "overage_allowed",
                "overage_disabled_reason",
                "refuse_in_stream",
                "extra_usage_only",
            ):
                if name in fields:
                    setattr(plan, name, fields[name])
            for window in (plan.five_hour, plan.seven_day):
                window.roll(stamp)
            return plan

    def get(self, credential: str | None) -> Plan | None:
        """Return ``credential``'s plan, if it has one."""
        with self._lock:
            return self._plans.get(credential or "")

    def views(self) -> dict[str, dict[str, Any]]:
        """Return every plan as plain data."""
        with self._lock:
            plans = dict(self._plans)
        return {credential: plan.view() for credential, plan in plans.items()}

    def answer(self, credential: str | None, *, now: float | None = None) -> Plan | None:
        """Account for one request of ``credential``: roll its windows, and unless it is
        refused, add ``step``. Return its plan (None: no plan, no headers)."""
        stamp = time.time() if now is None else now
        with self._lock:
            plan = self._plans.get(credential or "")
            if plan is None:
                return None
            for window in (plan.five_hour, plan.seven_day):
                window.roll(stamp)
            if not plan.rejected():
                for window in (plan.five_hour, plan.seven_day):
                    window.utilization = min(1.0, round(window.utilization + plan.step, 6))
            return plan

    def clear(self) -> None:
        """Forget every plan."""
        with self._lock:
            self._plans.clear()
