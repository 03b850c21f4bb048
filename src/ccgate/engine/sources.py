"""Where a request's answer comes from: the response cache, a shared turn, or a turn of its own.

:func:`open_source` picks one for an admitted request (see ``engine.cache``
for what may be cached or shared) and returns a :class:`Source` that yields
the request's segment of events with ``next_event()``. ``Source.end`` records
what the request received (in its session, in the cache, in the ledger)
exactly once, however the request ended.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from fastapi import Request

from ccgate.access.accounting import Ticket
from ccgate.api.state import AppState
from ccgate.engine.cache import Flight, cache_key
from ccgate.engine.events import AgentEvent
from ccgate.engine.live import LiveTurn, ends_segment
from ccgate.engine.turn import TurnRequest

__all__ = ["CACHE_HEADER", "Source", "open_source"]

log = logging.getLogger("ccgate.api")

CACHE_HEADER = "x-ccgate-cache"


@dataclass(eq=False)
class Source:
    """A request's events; ``end`` once when the request is over."""

    state: AppState
    ticket: Ticket
    session_key: str
    live: LiveTurn | None = None
    replay: tuple[AgentEvent, ...] = ()
    flight: Flight | None = None
    leading: bool = False
    cache: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    _read: int = 0
    _ended: bool = False

    async def next_event(self) -> AgentEvent:
        """Return the next event (``StopAsyncIteration`` when there is none)."""
        if self.live is not None:
            event = await self.live.next_event()
            if self.flight is not None:
                self.flight.publish(event)
        elif self.flight is not None:
            await self.flight.wait(self._read)
            if self._read >= len(self.flight.events):
                raise StopAsyncIteration
            event = self.flight.events[self._read]
        elif self._read < len(self.replay):
            event = self.replay[self._read]
        else:
            raise StopAsyncIteration
        self._read += 1
        self.ticket.saw(event)
        return event

    async def end(self, events: list[AgentEvent], *, failure: str | None = None) -> None:
        """Record the request: its session and turn, the cache, the ledger (once)."""
        if self._ended:
            return
        self._ended = True
        try:
            if self.live is not None:
                await self.state.turns.end_segment(self.live, events)
            if self.leading and self.flight is not None:
                if self.cache is not None and events and ends_segment(events[-1]):
                    self.state.cache.put(self.flight.key, events, self.session_key)
                self.state.flights.land(self.flight)
        finally:
            await self.state.accounting.close(self.ticket, events, failure=failure)


def _cache_mode(state: AppState, request: Request, key: str | None) -> str | None:
    if not state.cache.enabled or key is None:
        return None
    control = request.headers.get("cache-control", "").lower()
    return "bypass" if "no-cache" in control or "no-store" in control else "use"


async def open_source(
    state: AppState,
    request: Request,
    turn: TurnRequest,
    ticket: Ticket,
    session: str | None,
) -> Source:
    """Return the source of an admitted request's answer (may raise a GatewayError)."""
    namespace = ticket.caller.namespace
    key = cache_key(namespace, turn) if session is None else None
    mode = _cache_mode(state, request, key)
    if mode == "use" and key is not None:
        hit = state.cache.get(key)
        if hit is not None:
            state.metrics.cache_lookup("hit")
            ticket.cached, ticket.session_key = True, hit.session_key
            source = Source(state, ticket, hit.session_key, replay=hit.events, cache="hit")
            return _with_headers(source)
        flight = state.flights.join(key)
        if flight is not None:
            state.metrics.cache_lookup("shared")
            ticket.cached = True
            await flight.wait(0)  # the shared turn has started (its session is known) or ended
            ticket.session_key = flight.session_key or None
            source = Source(state, ticket, flight.session_key, flight=flight, cache="hit")
            return _with_headers(source)
    if mode is not None:
        state.metrics.cache_lookup("miss" if mode == "use" else "bypass")
    # Lead before anything awaits, so an identical request arriving meanwhile joins.
    flight = None
    if key is not None and mode is not None and state.flights.join(key) is None:
        flight = state.flights.lead(key)
    try:
        live = await state.turns.open(namespace, session, turn)
    except BaseException:
        if flight is not None:
            state.flights.land(flight)  # its sharers get an error saying to retry
        raise
    ticket.session_key = live.session_key
    shown = "miss" if state.cache.enabled else None  # uncacheable requests are misses too
    source = Source(state, ticket, live.session_key, live=live, cache=shown)
    if flight is not None:
        flight.session_key = live.session_key
        source.flight, source.leading = flight, True
    return _with_headers(source)


def _with_headers(source: Source) -> Source:
    if source.session_key:
        source.headers["X-Session-Id"] = source.session_key
    if source.cache is not None:
        source.headers[CACHE_HEADER] = source.cache
    return source
