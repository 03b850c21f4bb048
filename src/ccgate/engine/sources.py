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

from ccgate.engine.cache import CachedAnswer, Flight, Flights, ResponseCache, cache_key
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
    #: This request leads the flight of its key among every replica too.
    leading_shared: bool = False
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
                    await answers.cache.keep(self.flight.key, events, self.session_key)
                answers.flights.land(self.flight)
                if self.leading_shared:
                    await answers.land_shared(self.flight.key)


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
        flight_wait: float = 600.0,
    ) -> None:
        """``flight_wait``: how long a request waits for another replica's identical turn."""
        self.turns = turns
        self.cache = cache
        self.flights = flights
        self._lookup = lookup
        self._flight_wait = flight_wait

    async def land_shared(self, key: str) -> None:
        """End this replica's lead of ``key`` among the replicas."""
        shared = self.cache.shared
        if shared is None:
            return
        try:
            await shared.land(key)
        except Exception:  # noqa: BLE001 - the flight expires by itself
            log.warning("shared_flight_unavailable", exc_info=True)

    async def _follow_shared(self, key: str, flight: Flight) -> CachedAnswer | None:
        """Lead ``key`` among the replicas, or wait for the replica that does.

        Returns the other replica's answer (``None``: this request runs the turn,
        and ``flight`` is marked as leading among the replicas too).
        """
        shared = self.cache.shared
        if shared is None:
            return None
        try:
            if await shared.lead(key, self._flight_wait):
                return None
            answer = self.cache.adopt(key, await shared.wait(key, self._flight_wait))
        except Exception:  # noqa: BLE001 - without the shared cache, run the turn here
            log.warning("shared_flight_unavailable", exc_info=True)
            return None
        return answer

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
            hit = await self.cache.lookup(key)
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
        # Lead before anything awaits, so an identical request arriving meanwhile joins.
        flight = None
        if key is not None and mode is not None and self.flights.join(key) is None:
            flight = self.flights.lead(key)
        leading_shared = False
        if flight is not None and mode == "use" and self.cache.shared is not None:
            assert key is not None
            answer = await self._follow_shared(key, flight)
            if answer is not None:
                # Another replica ran it: those that joined here get its events too.
                for event in answer.events:
                    flight.publish(event)
                flight.session_key = answer.session_key
                self.flights.land(flight)
                self._lookup("shared")
                source = Source(self, answer.session_key, True, replay=answer.events, cache="hit")
                return _with_headers(source)
            leading_shared = True
        if mode is not None:
            self._lookup("miss" if mode == "use" else "bypass")
        try:
            live = await self.turns.open(namespace, session, turn)
        except BaseException:
            if flight is not None:
                self.flights.land(flight)  # its sharers get an error saying to retry
            if leading_shared and key is not None:
                await self.land_shared(key)
            raise
        shown = "miss" if self.cache.enabled else None  # uncacheable requests are misses too
        source = Source(self, live.session_key, live=live, cache=shown)
        if flight is not None:
            flight.session_key = live.session_key
            source.flight, source.leading = flight, True
            source.leading_shared = leading_shared
        return _with_headers(source)


def _with_headers(source: Source) -> Source:
    if source.session_key:
        source.headers["X-Session-Id"] = source.session_key
    if source.cache is not None:
        source.headers[CACHE_HEADER] = source.cache
    return source
