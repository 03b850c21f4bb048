"""A response cache, and singleflight: identical requests share one turn.

Both are keyed by :func:`cache_key`: the caller's namespace and everything in
the turn that shapes the answer (model, system prompt, messages, limits, stop
sequences, thinking budget). Only stateless requests qualify: no client
tools, no session key named by the client. Entries hold a turn's neutral
events, so a hit is rendered by either protocol, streamed or not; only turns
that ended normally are kept, for ``ttl`` seconds, at most ``max_entries``
(least recently used out first).

With several replicas a :class:`SharedAnswers` (``cluster.blobs``, in Redis)
extends both across them: an answer kept by one replica is a hit on every
other, and an identical request arriving at another replica while the turn
runs waits for that turn's answer instead of running its own. Its contract:

- ``get``/``put`` read and keep an answer's bytes for ``ttl`` seconds;
- ``lead(key, ttl)`` is True for exactly one caller among all replicas until
  ``land(key)`` (or ``ttl`` passes, should the leader die);
- ``wait(key, timeout)`` returns the answer once the leader kept one, and
  ``None`` when the leader landed without one (the turn failed) or after
  ``timeout``: the request then runs its own turn.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ccgate.engine.events import AgentEvent, TurnEnd, TurnError, dump_events, load_events
from ccgate.engine.sessions import fingerprints
from ccgate.engine.turn import TurnRequest

__all__ = [
    "CachedAnswer",
    "Flight",
    "Flights",
    "ResponseCache",
    "SharedAnswers",
    "cache_key",
]


class SharedAnswers(Protocol):
    """Answers and flights every replica sees; see the module docstring for the contract."""

    async def get(self, key: str) -> bytes | None:
        """Return the answer kept for ``key``."""
        ...

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Keep ``value`` for ``ttl`` seconds."""
        ...

    async def lead(self, key: str, ttl: float) -> bool:
        """Tell whether this caller runs the turn of ``key`` (no other replica does)."""
        ...

    async def land(self, key: str) -> None:
        """End the flight of ``key`` this caller led."""
        ...

    async def wait(self, key: str, timeout: float) -> bytes | None:
        """Return the answer of another replica's flight of ``key`` once kept."""
        ...


log = logging.getLogger("ccgate.engine")


def cache_key(namespace: str, turn: TurnRequest) -> str | None:
    """Return the key of a turn's answer, or ``None`` when it must not be shared."""
    if turn.tools or any(m.tool_calls or m.tool_results for m in turn.messages):
        return None
    shape = {
        "namespace": namespace,
        "model": turn.model,
        "conversation": fingerprints(turn.system, turn.messages)[-1],
        "max_tokens": turn.max_tokens,
        "stop": list(turn.stop_sequences),
        "thinking": None
        if turn.thinking is None
        else [turn.thinking.budget_tokens, turn.thinking.display],
        "effort": turn.effort,
        "output": turn.output.text if turn.output is not None else None,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A finished turn's events and the session it ran in."""

    events: tuple[AgentEvent, ...]
    session_key: str
    stored_at: float


class ResponseCache:
    """Finished answers by key, each for ``ttl`` seconds; the least recently used go first."""

    def __init__(
        self,
        ttl: float,
        max_entries: int = 1000,
        *,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedAnswers | None = None,
    ) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, CachedAnswer] = OrderedDict()
        #: The answers every replica sees (``None``: this process only).
        self.shared = shared if ttl > 0 else None

    @property
    def enabled(self) -> bool:
        """Tell whether answers are kept at all."""
        return self.ttl > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedAnswer | None:
        """Return a fresh answer for ``key``."""
        answer = self._entries.get(key)
        if answer is None:
            return None
        if self._clock() - answer.stored_at > self.ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return answer

    def put(self, key: str, events: list[AgentEvent], session_key: str) -> bool:
        """Keep the answer of a turn that ended normally; tell whether it was kept."""
        end = events[-1] if events else None
        if not self.enabled or not isinstance(end, TurnEnd) or end.waiting_for:
            return False
        self._entries[key] = CachedAnswer(tuple(events), session_key, self._clock())
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return True

    async def lookup(self, key: str) -> CachedAnswer | None:
        """Return a fresh answer for ``key`` from this process, else from the shared cache."""
        answer = self.get(key)
        if answer is not None or self.shared is None:
            return answer
        try:
            blob = await self.shared.get(key)
        except Exception:  # noqa: BLE001 - a cache that cannot be read is a miss
            log.warning("shared_cache_unavailable", exc_info=True)
            return None
        return self.adopt(key, blob)

    def adopt(self, key: str, blob: bytes | None) -> CachedAnswer | None:
        """Keep (and return) an answer another replica made, as :meth:`keep` wrote it."""
        if not blob:
            return None
        session_key, _, dumped = blob.partition(b"\n")
        try:
            events = list(load_events(dumped))
        except (ValueError, TypeError, KeyError):
            return None
        if not self.put(key, events, session_key.decode()):
            return None
        return self._entries[key]

    async def keep(self, key: str, events: list[AgentEvent], session_key: str) -> None:
        """Keep an answer here and, when shared, for every replica."""
        if not self.put(key, events, session_key) or self.shared is None:
            return
        blob = session_key.encode() + b"\n" + dump_events(events)
        try:
            await self.shared.put(key, blob, self.ttl)
        except Exception:  # noqa: BLE001 - the answer is kept here at least
            log.warning("shared_cache_unavailable", exc_info=True)


@dataclass(eq=False)
class Flight:
    """One turn's events as they come, for every request that shares it."""

    key: str
    events: list[AgentEvent] = field(default_factory=list)
    session_key: str = ""
    done: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, event: AgentEvent) -> None:
        """Add an event of the shared turn."""
        self.events.append(event)
        self._wake()

    def finish(self) -> None:
        """Mark the shared turn over; a turn that ended without an end tells its sharers why."""
        if self.done:
            return
        if not self.events or not isinstance(self.events[-1], TurnEnd | TurnError):
            self.events.append(
                TurnError(
                    "unavailable",
                    "the identical request this one shared a turn with was cancelled",
                )
            )
        self.done = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, seen: int) -> None:
        """Wait until there are more than ``seen`` events or the flight is done."""
        while len(self.events) <= seen and not self.done:
            await self._changed.wait()


class Flights:
    """The turns identical requests are sharing right now, by key."""

    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}

    def join(self, key: str) -> Flight | None:
        """Return the running flight of ``key``, if there is one."""
        return self._flights.get(key)

    def lead(self, key: str) -> Flight:
        """Start the flight of ``key``; the caller runs the turn and publishes to it."""
        flight = Flight(key)
        self._flights[key] = flight
        return flight

    def land(self, flight: Flight) -> None:
        """End a flight: later identical requests start their own (or hit the cache)."""
        flight.finish()
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
