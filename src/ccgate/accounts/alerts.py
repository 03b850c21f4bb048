"""Plan warnings at the operator's thresholds: told once per window period, not on every answer.

``plan_warnings`` (default 0.75 and 0.9) are utilisations of an account's
windows. When a reading shows a window at or past one of them for the first
time in that window's period (until it resets), :meth:`PlanAlerts.crossed`
names it once; the gateway logs it and tells the console and the webhooks
(``plan.warning``).
"""

from __future__ import annotations

from collections.abc import Iterable

from ccgate.accounts.meter import PlanState
from ccgate.accounts.plan import WINDOW_LABELS

__all__ = ["PlanAlerts"]


class PlanAlerts:
    """Which thresholds each account's windows crossed in their current period."""

    def __init__(self, thresholds: Iterable[float]) -> None:
        self._thresholds = sorted(thresholds)
        self._told: set[tuple[str, str, float, float | None]] = set()

    def crossed(
        self, account: str, state: PlanState
    ) -> list[tuple[str, float, float, float | None]]:
        """Return ``(window label, threshold, utilisation, reset)`` for each new crossing."""
        reading = state.reading
        if reading is None:
            return []
        out = []
        for window in reading.windows:
            used = window.utilization
            if used is None:
                continue
            passed = [t for t in self._thresholds if used >= t]
            if not passed:
                continue
            top = passed[-1]
            mark = (account, window.name, top, window.resets_at)
            if mark in self._told:
                continue
            self._told.add(mark)
            label = WINDOW_LABELS.get(window.name, window.name)
            out.append((label, top, used, window.resets_at))
        return out
