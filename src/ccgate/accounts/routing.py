"""Which upstream account takes a request: the one place the choice is made.

- A conversation stays on its account while that account can serve it: the
  upstream's prompt cache and Claude Code's warm process live there, so moving
  costs a whole prompt at full price and a process start.
- A new conversation (or one whose account cannot serve it) goes to the usable
  account with the lowest ``priority`` number, and among equals to the one with
  the most headroom for the request's model family (``order="headroom"``, the
  default), or simply in priority order (``order="priority"``).
- An account that cannot serve (disabled, cooling down, its window used up, or
  only by extra usage when that is not allowed) is skipped; when none is left
  the choice says why, naming each account, and when the first one frees up.
- An account cooling down for a reason its plan did not give (an API key's rate
  limit, refused credentials, a billing failure) is a last resort, not a refusal:
  when no other account can serve, the request goes there and gets the
  upstream's own answer (``Choice.last_resort``), so one account with a bad key
  keeps answering 401, not 429.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ccgate.accounts.meter import PlanMeter, Verdict, when

__all__ = ["SOFT_LIMITS", "Candidate", "Choice", "Order", "choose"]

Order = Literal["headroom", "priority"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """An account the router may choose: its id, name and priority (lower goes first)."""

    id: str
    name: str
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Choice:
    """The account chosen (``None``: none can serve) and, if none, why and until when."""

    account: Candidate | None
    verdict: Verdict | None = None
    #: Why no account can serve (one clause per account), when ``account`` is None.
    reason: str = ""
    #: Which limit refused: ``extra_usage`` when only extra usage was left, else ``plan_window``.
    limit: str = "plan_window"
    #: When the first account frees up (``None``: unknown).
    until: float | None = None
    #: The conversation left the account it was on.
    moved: bool = False
    #: The account cools down for a reason other than its plan, and no other can serve.
    last_resort: bool = False


#: Cooldowns that make an account a last resort rather than unusable.
SOFT_LIMITS = frozenset({"rate_limit", "credentials", "billing"})


def choose(
    candidates: Sequence[Candidate],
    meter: PlanMeter,
    family: str | None,
    *,
    current: str | None = None,
    exclude: Iterable[str] = (),
    order: Order = "headroom",
) -> Choice:
    """Choose the account for a request; ``current`` is the conversation's account, if any."""
    skipped = set(exclude)
    if current is not None and current not in skipped:
        stay = next((c for c in candidates if c.id == current), None)
        if stay is not None:
            verdict = meter.verdict(current, family)
            if verdict.usable:
                return Choice(stay, verdict)
    verdicts = {c.id: meter.verdict(c.id, family) for c in candidates if c.id not in skipped}
    usable = [c for c in candidates if c.id in verdicts and verdicts[c.id].usable]
    if usable:
        if order == "headroom":
            best = min(usable, key=lambda c: (c.priority, -verdicts[c.id].headroom))
        else:
            best = min(usable, key=lambda c: c.priority)
        moved = current is not None and best.id != current
        return Choice(best, verdicts[best.id], moved=moved)
    refused = [(c, verdicts[c.id]) for c in candidates if c.id in verdicts]
    if not refused:
        return Choice(None, reason="no upstream account is enabled", until=None)
    ends = [v.until for _, v in refused if v.until is not None]
    limits = {v.limit for _, v in refused}
    reason = "; ".join(f"account {c.name!r}: {v.reason}" for c, v in refused)
    until = min(ends) if ends else None
    soft = [c for c, v in refused if v.limit in SOFT_LIMITS]
    if soft:
        best = min(soft, key=lambda c: c.priority)
        moved = current is not None and best.id != current
        return Choice(
            best, verdicts[best.id], reason=reason, until=until, moved=moved, last_resort=True
        )
    return Choice(
        None,
        reason=f"{reason} (the first frees up at {when(until)})" if until else reason,
        limit="extra_usage" if limits == {"extra_usage"} else "plan_window",
        until=until,
    )
