"""Live turns: a turn that waits for the client's tool results outlives its request.

A request starts a turn (:meth:`TurnManager.open`): its session is bound, a
concurrency slot taken and the runner started. The request's answer is one
*segment* of the turn's events. When the segment ends with the model calling
client tools (``TurnEnd("tool_use", waiting_for=ids)``), the turn is *parked*:
its CLI process, slot and session stay, and the conversation so far is
recorded in the session. The client's next request carrying the results of
exactly those calls, in the same conversation and namespace, *claims* the
parked turn: the results go to the waiting tool handlers and that request's
answer is the next segment of the same turn.

A parked turn ends (its process stops, its slot is freed) when

- no result comes within ``tool_timeout`` seconds,
- a request of its session arrives that is not its continuation (the client
  edited the conversation or gave up on the calls),
- a request has to queue for a slot: the oldest parked turn yields its slot,
- ccgate shuts down.

Results that arrive after that still reach the model: the request then goes
through its session, which rebuilds the turn from the client's history
(``engine.sessions``). Nothing here knows a wire protocol.

With several replicas, a :class:`Placement` tells the others where a parked
turn waits (``call`` ``<namespace>:<call id>``, for as long as it may wait)
and where a conversation's process stays warm (``session``
``<namespace>:<session key>``, for ``keepalive`` seconds), so a request that
arrives elsewhere is forwarded here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ccgate.engine.events import (
    AgentEvent,
    TextDelta,
    TurnEnd,
    TurnError,
    Usage,
    calls_of,
    last_usage,
)
from ccgate.engine.gate import Gate
from ccgate.engine.runner import Runner
from ccgate.engine.sessions import ConversationSessions, SessionTurn, fingerprints
from ccgate.engine.toolbox import ToolResultBox
from ccgate.engine.turn import Message, Part, TextPart, ToolCallPart, TurnRequest

__all__ = ["LiveTurn", "Placement", "TurnManager", "ends_segment", "reply_message"]

log = logging.getLogger("ccgate.engine")


class Placement(Protocol):
    """Where live work runs, for the other replicas (``cluster.replicas.Replicas``)."""

    async def place(self, kind: str, name: str, ttl: float) -> None:
        """Note that ``kind``/``name`` runs here for the next ``ttl`` seconds."""
        ...

    async def unplace(self, kind: str, name: str) -> None:
        """Forget that ``kind``/``name`` runs here."""
        ...


def ends_segment(event: AgentEvent) -> bool:
    """Tell whether ``event`` ends the segment a request answers."""
    return isinstance(event, TurnEnd | TurnError)


def reply_message(events: list[AgentEvent]) -> Message:
    """Return the assistant message a segment's events make: its text, then its tool calls."""
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = [ToolCallPart(c.tool_use_id, c.name, c.input()) for c in calls_of(events)]
    parts: list[Part] = [TextPart(text)] if text or not calls else []
    return Message("assistant", (*parts, *calls))


@dataclass(eq=False)
class LiveTurn:
    """One turn in progress, possibly spanning several requests (one per round of tools)."""

    namespace: str
    bound: SessionTurn
    stack: AsyncExitStack
    box: ToolResultBox | None
    events: AsyncGenerator[AgentEvent, None] | None = None
    #: The calls the parked turn waits for, and the fingerprint of the conversation
    #: the model answered with them (a continuation must carry the same).
    waiting_for: tuple[str, ...] = ()
    prior: str | None = None
    parked_at: float = 0.0
    timer: asyncio.TimerHandle | None = None
    closed: bool = field(default=False)

    @property
    def session_key(self) -> str:
        """Return the key of the session the turn runs in."""
        return self.bound.record.key

    async def next_event(self) -> AgentEvent:
        """Return the turn's next event (``StopAsyncIteration`` when it has no more)."""
        assert self.events is not None
        return await self.events.__anext__()

    async def close(self) -> None:
        """End the turn: stop its process, free its slot, release its session."""
        if self.closed:
            return
        self.closed = True
        try:
            await self.stack.aclose()
        finally:
            # Only now: a call answered earlier would let the CLI go on with the model.
            if self.box is not None:
                self.box.close("the turn ended")


class ParkedTurns:
    """Turns that wait for the client's tool results, found by call id and by session.

    A parked turn is dropped (ended in the background) when no result comes
    within ``tool_timeout`` seconds, when its calls are answered in another
    conversation, when its session gets a request that is not its
    continuation (:meth:`supersede`), and when a request needs its slot
    (:meth:`make_room`, which the gate calls).
    """

    def __init__(self, *, tool_timeout: float, placement: Placement | None = None) -> None:
        self._tool_timeout = tool_timeout
        self._placement = placement
        #: Parked turns, oldest first; and the same by (namespace, call id) and session id.
        self._parked: dict[LiveTurn, None] = {}
        self._by_call: dict[tuple[str, str], LiveTurn] = {}
        self._by_session: dict[str, LiveTurn] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, live: LiveTurn, calls: tuple[str, ...]) -> None:
        """Keep ``live`` until the results of ``calls`` arrive (or it is dropped)."""
        turn = live.bound.turn
        live.waiting_for = calls
        live.prior = fingerprints(turn.system, turn.messages)[-1]
        live.parked_at = time.monotonic()
        self._parked[live] = None
        for call in calls:
            self._by_call[(live.namespace, call)] = live
        self._by_session[live.bound.record.id] = live
        live.timer = asyncio.get_running_loop().call_later(
            self._tool_timeout, self._drop, live, "tool_wait_expired"
        )
        placement = self._placement
        if placement is not None:
            names = [f"{live.namespace}:{call}" for call in calls]
            self._background(_each(placement.place, names, self._tool_timeout))
        log.info("turn_parked session=%s calls=%d", live.session_key, len(calls))

    def _unpark(self, live: LiveTurn) -> None:
        self._parked.pop(live, None)
        for call in live.waiting_for:
            if self._by_call.get((live.namespace, call)) is live:
                del self._by_call[(live.namespace, call)]
        if self._by_session.get(live.bound.record.id) is live:
            del self._by_session[live.bound.record.id]
        if live.timer is not None:
            live.timer.cancel()
            live.timer = None
        placement = self._placement
        if placement is not None and live.waiting_for:
            names = [f"{live.namespace}:{call}" for call in live.waiting_for]
            self._background(_each(lambda kind, name, _: placement.unplace(kind, name), names, 0))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work, name="ccgate-placement")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def claim(self, namespace: str, key: str | None, turn: TurnRequest) -> LiveTurn | None:
        """Return the parked turn whose calls ``turn`` answers in the same conversation."""
        results = turn.last.tool_results
        # Anything besides results (text, images) cannot join a running turn: such a
        # request rebuilds the turn from its history instead.
        if not results or len(results) != len(turn.last.parts) or len(turn.messages) < 3:
            return None
        live = self._by_call.get((namespace, results[0].tool_use_id))
        if live is None or live.closed or key not in (None, live.session_key):
            return None
        same = {r.tool_use_id for r in results} == set(live.waiting_for)
        if not same or fingerprints(turn.system, turn.messages[:-2])[-1] != live.prior:
            # Its calls were answered in another conversation: nothing will continue it.
            self._drop(live, "diverged")
            return None
        self._unpark(live)
        live.bound.turn = replace(live.bound.turn, messages=turn.messages)
        assert live.box is not None
        live.box.deliver(results)
        log.info(
            "turn_continued session=%s waited_ms=%.0f",
            live.session_key,
            (time.monotonic() - live.parked_at) * 1000,
        )
        return live

    def _drop(self, live: LiveTurn, why: str) -> None:
        """End a parked turn in the background."""
        self._unpark(live)
        log.info("turn_dropped session=%s reason=%s", live.session_key, why)
        task = asyncio.get_running_loop().create_task(live.close(), name="ccgate-drop-turn")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def supersede(self, session_id: str) -> None:
        """End the session's parked turn: a request arrived that does not continue it."""
        live = self._by_session.get(session_id)
        if live is not None:
            self._unpark(live)
            log.info("turn_dropped session=%s reason=superseded", live.session_key)
            await live.close()

    def make_room(self) -> bool:
        """A request must wait for a slot: the oldest parked turn gives up its own."""
        oldest = next(iter(self._parked), None)
        if oldest is not None:
            self._drop(oldest, "slot_needed")
        return oldest is not None

    async def aclose(self) -> None:
        """End every parked turn (and wait for those being dropped)."""
        for live in list(self._parked):
            self._unpark(live)
            with contextlib.suppress(Exception):
                await live.close()
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=15)


async def _each(
    call: Callable[[str, str, float], Awaitable[None]], names: list[str], ttl: float
) -> None:
    """Place (or unplace) each parked call; a Redis out of reach only costs the forwarding."""
    try:
        for name in names:
            await call("call", name, ttl)
    except Exception:  # noqa: BLE001 - the request is then served where it lands
        log.warning("placement_failed", exc_info=True)


class TurnManager:
    """Start turns, park those that wait for tool results, and continue them."""

    def __init__(
        self,
        runner: Runner,
        gate: Gate,
        sessions: ConversationSessions,
        parked: ParkedTurns,
        *,
        placement: Placement | None = None,
        keepalive: float = 0.0,
    ) -> None:
        """With a ``placement``, a finished turn's conversation is placed here for
        ``keepalive`` seconds (while its process stays warm)."""
        self._runner = runner
        self._gate = gate
        self._sessions = sessions
        self._parked = parked
        self._placement = placement if keepalive > 0 else None
        self._keepalive = keepalive

    @property
    def parked(self) -> int:
        """Return how many turns wait for tool results."""
        return len(self._parked)

    async def open(self, namespace: str, key: str | None, turn: TurnRequest) -> LiveTurn:
        """Return the parked turn that ``turn`` continues (results delivered), or a new turn.

        May raise a :class:`ccgate.errors.GatewayError` (busy, bad session key).
        """
        live = self._parked.claim(namespace, key, turn)
        if live is not None:
            return live
        box = ToolResultBox() if turn.tools or turn.last.tool_results else None
        if box is not None:
            box.deliver(turn.last.tool_results)  # a rebuilt turn re-runs its last call
        stack = AsyncExitStack()
        try:
            bound = await stack.enter_async_context(self._sessions.turn(namespace, key, turn))
            live = LiveTurn(namespace, bound, stack, box)
            await stack.enter_async_context(self._gate.slot())
            events = self._runner.run(bound.turn, box)
            stack.push_async_callback(events.aclose)
            live.events = events
        except BaseException:
            await stack.aclose()
            plan = live.bound.turn.session if live is not None else None
            if live is not None and plan is not None and not live.bound.continued:
                # A new conversation whose turn never ran (no slot): a process taken for
                # it serves nobody else.
                self._runner.release(plan.cli_session_id)
            raise
        return live

    async def end_segment(self, live: LiveTurn, events: list[AgentEvent]) -> None:
        """Record a segment the client received; park the turn if it waits, else end it."""
        end = events[-1] if events and ends_segment(events[-1]) else None
        try:
            if isinstance(end, TurnEnd) and end.waiting_for and not live.closed:
                await self._record(live, events)
                self._parked.park(live, end.waiting_for)
                return
            if isinstance(end, TurnEnd) and end.stop_reason in ("end_turn", "tool_use"):
                await self._record(live, events)
                await self._place(live)
            else:
                # Failed, cut off, or stopped early by ccgate: the CLI's transcript and the
                # client's view may differ, so the next request rebuilds from the client's.
                self._sessions.abandon(live.bound)
        except BaseException:
            await live.close()
            raise
        await live.close()

    async def _place(self, live: LiveTurn) -> None:
        placement = self._placement
        if placement is None:
            return
        try:
            await placement.place(
                "session", f"{live.namespace}:{live.session_key}", self._keepalive
            )
        except Exception:  # noqa: BLE001 - the next request resumes where it lands
            log.warning("placement_failed", exc_info=True)

    async def _record(self, live: LiveTurn, events: list[AgentEvent]) -> None:
        usage = last_usage(events) or Usage()
        await self._sessions.finished(
            live.bound, reply_message(events), usage.input_tokens, usage.output_tokens
        )
