"""What every request costs: admission against its key's quota, then one ledger record.

A request is admitted (:meth:`Accounting.admit`, which may refuse it with a
429) before anything runs. However it ends — answered, failed, refused by a
busy gateway, cut off by the client leaving or by a shutdown —
:meth:`Accounting.close` runs once for it: it appends a usage record (what the
turn spent as far as it is known; output that was streamed but not yet counted
is estimated at four characters a token), charges the tokens and dollars to the
key's quota, and feeds the metrics. Cost follows from the tokens at the model's
prices (``models.json``): Claude Code reports only a session's running total.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from ccgate.api.auth import Caller
from ccgate.api.metrics import Metrics
from ccgate.engine.events import (
    AgentEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    TurnEnd,
    TurnError,
    Usage,
    last_usage,
)
from ccgate.engine.models import ModelInfo
from ccgate.engine.quotas import Admission, Quotas
from ccgate.store.usage import UsageRecord, UsageStore

__all__ = ["Accounting", "Ticket", "estimate_cost"]

log = logging.getLogger("ccgate.api")


def estimate_cost(model: ModelInfo, usage: Usage) -> float:
    """Return the cost of ``usage`` at ``model``'s list prices (USD)."""
    p = model.price
    return (
        usage.input_tokens * p.input
        + usage.output_tokens * p.output
        + usage.cache_read_tokens * p.cache_read
        + usage.cache_creation_tokens * p.cache_write
    ) / 1_000_000


@dataclass
class Ticket:
    """One admitted request, until its record is written."""

    caller: Caller
    endpoint: str
    model: ModelInfo
    requested: str
    admission: Admission
    started: float = field(default_factory=time.monotonic)
    first_output: float | None = None
    session_key: str | None = None
    cached: bool = False
    closed: bool = False

    def saw(self, event: AgentEvent) -> None:
        """Note the time of the first output."""
        if self.first_output is None and isinstance(
            event, TextDelta | ThinkingDelta | ToolCallDelta
        ):
            self.first_output = time.monotonic()


def _status(events: list[AgentEvent], failure: str | None) -> str:
    end = events[-1] if events else None
    if isinstance(end, TurnError):
        return end.kind
    if isinstance(end, TurnEnd):
        return "tool_use" if end.waiting_for else "ok"
    return failure or "cancelled"


def _spent(events: list[AgentEvent]) -> Usage:
    """Return what a segment spent; a partial usage gets its output estimated."""
    usage = last_usage(events) or Usage(partial=True)
    if not usage.partial:
        return usage
    chars = sum(
        len(e.text) if isinstance(e, TextDelta | ThinkingDelta) else len(e.partial_json)
        for e in events
        if isinstance(e, TextDelta | ThinkingDelta | ToolCallDelta)
    )
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=max(usage.output_tokens, (chars + 3) // 4),
        cache_read_tokens=usage.cache_read_tokens,
        cache_creation_tokens=usage.cache_creation_tokens,
        cost_usd=usage.cost_usd,
    )


class Accounting:
    """Admit requests, and account for each one exactly once when it ends.

    Without a ledger (``usage_ledger`` off) nothing is recorded per request.
    """

    def __init__(self, quotas: Quotas, ledger: UsageStore | None, metrics: Metrics) -> None:
        self._quotas = quotas
        self._ledger = ledger
        self._metrics = metrics

    async def admit(
        self, caller: Caller, endpoint: str, model: ModelInfo, requested: str
    ) -> Ticket:
        """Admit a request of ``caller`` or raise :class:`ccgate.errors.QuotaExceeded`."""
        admission = await self._quotas.admit(caller.key, caller.namespace)
        return Ticket(caller, endpoint, model, requested, admission)

    async def close(
        self,
        ticket: Ticket,
        events: list[AgentEvent],
        *,
        failure: str | None = None,
        status: str | None = None,
    ) -> None:
        """Record what the request spent (once).

        ``failure`` names why it ended without a turn; ``status`` overrides the
        status the events would give (a loop's interrupted turn, say).
        """
        if ticket.closed:
            return
        ticket.closed = True
        usage = Usage() if ticket.cached else _spent(events)
        cost = usage.cost_usd if usage.cost_usd is not None else estimate_cost(ticket.model, usage)
        now = time.monotonic()
        ttft = (ticket.first_output - ticket.started) if ticket.first_output else None
        record = UsageRecord(
            namespace=ticket.caller.namespace,
            endpoint=ticket.endpoint,
            model=ticket.model.id,
            status=status or _status(events, failure),
            duration_ms=(now - ticket.started) * 1000,
            session_key=ticket.session_key,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_creation_tokens=usage.cache_creation_tokens,
            cost_usd=cost,
            ttft_ms=ttft * 1000 if ttft is not None else None,
            cached=ticket.cached,
            created_at=time.time(),
        )
        try:
            await self._quotas.settle(ticket.admission, tokens=usage.tokens, cost_usd=cost)
            if self._ledger is not None:
                await self._ledger.record(record)
        except Exception:  # noqa: BLE001 - a lost record is logged, the answer still stands
            log.error("usage_record_failed namespace=%s", record.namespace, exc_info=True)
        self._metrics.observe(
            endpoint=record.endpoint,
            model=record.model,
            status=record.status,
            cached=record.cached,
            key_name=ticket.caller.name,
            tokens={
                "input": usage.input_tokens,
                "output": usage.output_tokens,
                "cache_read": usage.cache_read_tokens,
                "cache_creation": usage.cache_creation_tokens,
            },
            cost_usd=cost,
            ttft_s=ttft,
            duration_s=now - ticket.started,
        )
