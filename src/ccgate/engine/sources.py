"""Where a request's answer comes from: the response cache, a shared turn, or a turn of its own.

:meth:`Answers.open` picks one for a request (see ``engine.cache`` for what may
be cached or shared) and returns a :class:`Source` that yields the request's
segment of events with ``next_event()``. ``Source.end`` records what the
request received, in its session and in the cache, exactly once however the
request ended. What the request costs is not this module's business: the
caller accounts for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ccgate.engine.cache import Flight, Flights, ResponseCache, cache_key
from ccgate.engine.events import AgentEvent
from ccgate.engine.live import LiveTurn, TurnManager, ends_segment
from ccgate.engine.turn import TurnRequest

__all__ = ["CACHE_HEADER", "Answers", "Source"]

log = logging.getLogger("ccgate.engine")

CACHE_HEADER = "x-ccgate-cache"


@dataclass(eq=False)
class Source:
    """A request's events; ``end`` once when the request is over.

    ``cached`` tells that the answer costs no turn (a cache hit or a shared
    turn); ``session_key`` names the session it ran in (``""`` when none).
    """

    answers: Answers
    session_key: str
    cached: bool = False
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
        return event

    async def end(self, events: list[AgentEvent]) -> None:
        """Record what the request received: its session and turn, the cache (once)."""
        if self._ended:
            return
        self._ended = True
        answers = self.answers
        try:
            if self.live is not None:
                await answers.turns.end_segment(self.live, events)
        finally:
            if self.leading and self.flight is not None:
                if self.cache is not None and events and ends_segment(events[-1]):
                    answers.cache.put(self.flight.key, events, self.session_key)
                answers.flights.land(self.flight)


class Answers:
    """Open the source of each request's answer.

    ``lookup(outcome)`` hears every cache lookup (``hit``, ``shared``, ``miss``,
    ``bypass``), for the metrics.
    """

    def __init__(
        self,
        turns: TurnManager,
        cache: ResponseCache,
        flights: Flights,
        *,
        lookup: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.turns = turns
        self.cache = cache
        self.flights = flights
        self._lookup = lookup

    def _cache_mode(self, key: str | None, cache_control: str) -> str | None:
        if not self.cache.enabled or key is None:
            return None
        control = cache_control.lower()
        return "bypass" if "no-cache" in control or "no-store" in control else "use"

    async def open(
        self, namespace: str, turn: TurnRequest, session: str | None, *, cache_control: str = ""
    ) -> Source:
        """Return the source of a request's answer (may raise a GatewayError).

        ``cache_control`` is the request's ``Cache-Control`` header: ``no-cache``
        or ``no-store`` bypass the response cache.
        """
        key = cache_key(namespace, turn) if session is None else None
        mode = self._cache_mode(key, cache_control)
        if mode == "use" and key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self._lookup("hit")
                source = Source(self, hit.session_key, True, replay=hit.events, cache="hit")
                return _with_headers(source)
            flight = self.flights.join(key)
            if flight is not None:
                self._lookup("shared")
                await flight.wait(0)  # the shared turn has started (its session is known) or ended
                source = Source(self, flight.session_key, True, flight=flight, cache="hit")
                return _with_headers(source)
        if mode is not None:
            self._lookup("miss" if mode == "use" else "bypass")
        # Lead before anything awaits, so an identical request arriving meanwhile joins.
        flight = None
        if key is not None and mode is not None and self.flights.join(key) is None:
            flight = self.flights.lead(key)
        try:
            live = await self.turns.open(namespace, session, turn)
        except BaseException:
            if flight is not None:
                self.flights.land(flight)  # its sharers get an error saying to retry
            raise
        shown = "miss" if self.cache.enabled else None  # uncacheable requests are misses too
        source = Source(self, live.session_key, live=live, cache=shown)
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
