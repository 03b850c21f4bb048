"""Read the plan state Claude Code reports as it runs.

Claude Code reads the upstream's ``anthropic-ratelimit-unified-*`` response
headers of every answer (and of a refusal) and, for a subscription login or an
OAuth token — never for an API key — emits a ``rate_limit_event`` whenever what
they say changed: the status of the window that binds (``allowed``,
``allowed_warning``, ``rejected``), its reset time, the per-window numbers
(``unifiedWindows``: five_hour, seven_day, seven_day_overage_included) and the
extra-usage state. The Agent SDK keeps the whole frame only in
``RateLimitInfo.raw`` (its typed fields drop the per-window numbers), so this
module reads the raw frame (its keys are camelCase).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ccgate.accounts.plan import Overage, Reading, Status, Window

__all__ = ["reading_of"]


def _status(value: object) -> Status:
    if value == "rejected":
        return "rejected"
    if value == "allowed_warning":
        return "warning"
    return "allowed"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def reading_of(raw: Mapping[str, Any], *, now: float | None = None) -> Reading:
    """Return the reading of one ``rate_limit_event``'s ``rate_limit_info``."""
    stamp = time.time() if now is None else now
    status = _status(raw.get("status"))
    binding = raw.get("rateLimitType") if isinstance(raw.get("rateLimitType"), str) else None
    resets_at = _number(raw.get("resetsAt"))
    windows: dict[str, Window] = {}
    unified = raw.get("unifiedWindows")
    if isinstance(unified, Mapping):
        for name, fields in unified.items():
            if not isinstance(fields, Mapping):
                continue
            windows[str(name)] = Window(
                str(name),
                _number(fields.get("utilization")),
                _number(fields.get("resetsAt")),
                _status(fields.get("status")),
                _number(fields.get("surpassedThreshold")),
            )
    if binding and binding not in windows:
        # The binding window reported without numbers (a per-model 7-day window is
        # reported only this way).
        windows[binding] = Window(
            binding,
            _number(raw.get("utilization")),
            resets_at,
            status,
            _number(raw.get("surpassedThreshold")),
        )
    elif binding and status != "allowed" and windows[binding].status == "allowed":
        windows[binding] = Window(
            binding,
            windows[binding].utilization,
            windows[binding].resets_at or resets_at,
            status,
            windows[binding].surpassed_threshold,
        )
    overage = Overage(
        raw.get("overageStatus") if isinstance(raw.get("overageStatus"), str) else None,
        _number(raw.get("overageResetsAt")),
        raw.get("overageDisabledReason")
        if isinstance(raw.get("overageDisabledReason"), str)
        else None,
        bool(raw.get("isUsingOverage") or raw.get("overageInUse")),
    )
    code = raw.get("errorCode") if isinstance(raw.get("errorCode"), str) else None
    return Reading(
        observed_at=stamp,
        source="refusal" if status == "rejected" and not overage.in_use else "answer",
        status=status,
        binding=binding,
        resets_at=resets_at,
        windows=tuple(windows.values()),
        overage=overage,
        error_code=code,
    )
