"""What every request costs: admission against its key's quota, then one ledger record.

A request is admitted (:meth:`Accounting.admit`, which may refuse it with a
429, or a 503 when the database stays locked) before anything runs; its
admission record is stored with its quota count (``store.admissions``).
However it ends — answered, failed, refused by a busy gateway, cut off by the
client leaving or by a shutdown — :meth:`Accounting.close` runs once for it:
it settles the admission with a usage record (what the turn spent as far as it
is known; output that was streamed but not yet counted is estimated at four
characters a token) and the charge of its tokens and dollars to the key's
quota, through the journal (``store.journal``): written behind the answer, in
a batch with other requests' (the journal's spool keeps it from a ``kill -9``;
until it is written its charge counts as reserved against the key's limits),
and kept in the journal's file while the database is locked; and it feeds
the metrics and the live feed (``access.feed``), which also sees it start. Cost follows from the
tokens at the model's prices (``models.json``): Claude Code reports only a
session's running total.

If the process dies mid-turn, the admission stays: :meth:`Accounting.checkpoint`
keeps what running requests have spent so far on it, and
:meth:`Accounting.reconcile` (at start and periodically) turns the admissions
of dead processes into ledger rows with status ``interrupted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from ccgate.access.caller import Caller
from ccgate.access.feed import Feed
from ccgate.access.quotas import Admission, Quotas
from ccgate.engine.events import (
    AgentEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    TurnEnd,
    TurnError,
    TurnStarted,
    Usage,
    last_usage,
)
from ccgate.engine.models import ModelInfo
from ccgate.metrics import Metrics
from ccgate.store.admissions import AdmissionStore, Pending, Progress
from ccgate.store.journal import Journal
from ccgate.store.owners import owner_alive
from ccgate.store.usage import UsageRecord

__all__ = ["LEASE", "Accounting", "Ticket", "estimate_cost"]

#: Seconds after which the admissions of a process on another host, not seen since, count
#: as interrupted (a process on this host is checked directly).
LEASE = 60.0

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
    #: What the request has seen so far: its last usage, and the characters of its output.
    usage: Usage | None = None
    output_chars: int = 0
    #: Its id in the live feed.
    feed_id: str | None = None
    #: The upstream account its turn ran on, and those it may run on (``None``: any).
    account: str = ""
    accounts: frozenset[str] | None = None

    def saw(self, event: AgentEvent) -> None:
        """Note the time of the first output, and what the request has spent so far."""
        if isinstance(event, Usage):
            self.usage = event
            return
        if isinstance(event, TurnStarted):
            self.account = event.account or self.account
            return
        if isinstance(event, TextDelta | ThinkingDelta | ToolCallDelta):
            if self.first_output is None:
                self.first_output = time.monotonic()
            text = event.partial_json if isinstance(event, ToolCallDelta) else event.text
            self.output_chars += len(text)

    def spent(self) -> Usage:
        """Return what the request has spent so far (output estimated while partial)."""
        if self.cached:
            return Usage()
        return _estimate(self.usage or Usage(partial=True), self.output_chars)


def _status(events: list[AgentEvent], failure: str | None) -> str:
    end = events[-1] if events else None
    if isinstance(end, TurnError):
        return end.kind
    if isinstance(end, TurnEnd):
        return "tool_use" if end.waiting_for else "ok"
    return failure or "cancelled"


def _estimate(usage: Usage, chars: int) -> Usage:
    """Return ``usage``; a partial one gets its output estimated from ``chars`` of output."""
    if not usage.partial:
        return usage
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=max(usage.output_tokens, (chars + 3) // 4),
        cache_read_tokens=usage.cache_read_tokens,
        cache_creation_tokens=usage.cache_creation_tokens,
        cost_usd=usage.cost_usd,
    )


def _spent(events: list[AgentEvent]) -> Usage:
    """Return what a segment spent; a partial usage gets its output estimated."""
    chars = sum(
        len(e.text) if isinstance(e, TextDelta | ThinkingDelta) else len(e.partial_json)
        for e in events
        if isinstance(e, TextDelta | ThinkingDelta | ToolCallDelta)
    )
    return _estimate(last_usage(events) or Usage(partial=True), chars)


def _cost(model: ModelInfo, usage: Usage) -> float:
    return usage.cost_usd if usage.cost_usd is not None else estimate_cost(model, usage)


class Accounting:
    """Admit requests, and account for each one exactly once when it ends.

    Without a ledger (``ledger=False``, ``usage_ledger`` off) nothing is
    recorded per request; a request with a key still gets an admission record
    until it ends, so that its quota charge survives a crash. ``books`` is the
    admission store for background work (checkpoints, reconciliation), which
    should not wait long for a lock; ``owner`` names this process
    (``store.owners``).
    """

    def __init__(
        self,
        quotas: Quotas,
        metrics: Metrics,
        journal: Journal,
        books: AdmissionStore,
        *,
        owner: str,
        ledger: bool = True,
        feed: Feed | None = None,
    ) -> None:
        self._quotas = quotas
        self._feed = feed
        self._metrics = metrics
        self._journal = journal
        self._books = books
        self._owner = owner
        self._ledger = ledger
        #: Running requests with an admission record, by its id; what each last checkpointed.
        self._open: dict[str, Ticket] = {}
        self._checkpointed: dict[str, Progress] = {}
        #: Admitted requests not closed yet (with an admission record or not).
        self._unclosed = 0
        self._all_closed = asyncio.Event()
        self._all_closed.set()

    async def admit(
        self,
        caller: Caller,
        endpoint: str,
        model: ModelInfo,
        requested: str,
        *,
        session_key: str | None = None,
    ) -> Ticket:
        """Admit a request of ``caller``.

        Raise :class:`ccgate.errors.QuotaExceeded`, or
        :class:`ccgate.errors.DatabaseBusy` when the database stays locked.
        """
        pending = None
        if self._ledger or caller.key is not None:
            pending = Pending(
                id="adm_" + secrets.token_hex(12),
                namespace=caller.namespace,
                endpoint=endpoint,
                model=model.id,
                owner=self._owner,
                admitted_at=time.time(),
                session_key=session_key,
                ledger=self._ledger,
            )
        admission = await self._quotas.admit(caller.key, caller.namespace, pending)
        ticket = Ticket(caller, endpoint, model, requested, admission, session_key=session_key)
        if self._feed is not None:
            ticket.feed_id = self._feed.start(
                namespace=caller.namespace, key_name=caller.name, endpoint=endpoint, model=model.id
            )
        if admission.id is not None:
            self._open[admission.id] = ticket
        self._unclosed += 1
        self._all_closed.clear()
        return ticket

    async def flush(self) -> None:
        """Wait until what closed requests recorded is written (or kept in the journal)."""
        await self._journal.flush()

    async def drain(self, timeout: float) -> int:
        """Wait (at most ``timeout`` seconds) until every admitted request is closed and
        what it recorded is written.

        Return how many are not closed: their admissions are reconciled at the next start.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._all_closed.wait()
                await self._journal.flush()
        return self._unclosed

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
        cost = _cost(ticket.model, usage)
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
            account=ticket.account or None,
        )
        admission = ticket.admission
        settlement = self._quotas.settlement(
            admission,
            tokens=usage.tokens,
            cost_usd=cost,
            record=record if self._ledger else None,
        )
        try:
            if admission.id is not None:
                # Written behind the answer, in a batch with others (safe to repeat: it
                # closes its admission once). Until then, its charge counts as reserved.
                self._quotas.owe(settlement)
                self._journal.defer(
                    "settle",
                    settlement.to_json(),
                    ref=admission.id,
                    done=functools.partial(self._quotas.paid, settlement),
                )
            elif settlement.windows or settlement.record is not None:
                # Applied now, or kept in the journal while the database is locked.
                await self._journal.keep("settle", settlement.to_json(), ref=admission.id)
        finally:
            self._quotas.release(admission)
            if admission.id is not None:
                self._open.pop(admission.id, None)
                self._checkpointed.pop(admission.id, None)
            self._unclosed -= 1
            if self._unclosed == 0:
                self._all_closed.set()
        if self._feed is not None and ticket.feed_id is not None:
            self._feed.end(
                ticket.feed_id,
                status=record.status,
                ttft_ms=record.ttft_ms,
                duration_ms=record.duration_ms,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_tokens=usage.cache_read_tokens + usage.cache_creation_tokens,
                cost_usd=cost,
                cached=ticket.cached,
            )
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

    def _progress(self, ticket: Ticket) -> Progress:
        usage = ticket.spent()
        return Progress(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_creation_tokens=usage.cache_creation_tokens,
            cost_usd=_cost(ticket.model, usage),
            session_key=ticket.session_key,
        )

    async def checkpoint(self) -> None:
        """Mark this process's running requests as seen, and store what they spent so far.

        Best effort: a busy database skips this checkpoint.
        """
        if not self._open:
            return
        progress = {admission_id: self._progress(t) for admission_id, t in self._open.items()}
        changed = {k: v for k, v in progress.items() if self._checkpointed.get(k) != v}
        try:
            await self._books.checkpoint(self._owner, changed, time.time())
        except Exception:  # noqa: BLE001 - the next checkpoint tries again
            log.info("checkpoint_skipped open=%d", len(progress), exc_info=True)
            return
        for admission_id, spent in changed.items():
            if admission_id in self._open:
                self._checkpointed[admission_id] = spent

    async def reconcile(self, *, skip: Collection[str] = ()) -> list[UsageRecord]:
        """Give the admissions of dead processes their ledger row (``interrupted``) and charge.

        ``skip``: admissions whose settlement waits in the journal. A process on
        this host is dead when it no longer runs; one on another host when it
        has not marked its admissions seen for :data:`LEASE` seconds.
        """
        now = time.time()
        done: list[UsageRecord] = []
        for pending in await self._books.pending():
            if pending.id in skip or pending.id in self._open or pending.owner == self._owner:
                continue
            alive = owner_alive(pending.owner)
            if alive or (alive is None and now - pending.seen_at < LEASE):
                continue
            record = await self._books.interrupt(pending)
            if record is not None:
                done.append(record)
                log.warning(
                    "request_interrupted namespace=%s endpoint=%s model=%s admitted_at=%.0f",
                    pending.namespace,
                    pending.endpoint,
                    pending.model,
                    pending.admitted_at,
                )
        return done
