"""The response cache and singleflight."""

from __future__ import annotations

import asyncio

import pytest

from ccgate.engine.cache import Flights, ResponseCache, cache_key
from ccgate.engine.events import AgentEvent, TextDelta, TurnEnd, TurnError
from ccgate.engine.turn import (
    Message,
    TextPart,
    ToolSpec,
    TurnRequest,
)

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _turn(text: str, **extra: object) -> TurnRequest:
    return TurnRequest("sonnet", "sonnet", (Message("user", (TextPart(text),)),), **extra)  # type: ignore[arg-type]


def test_cache_key_covers_the_answer_and_the_caller() -> None:
    base = cache_key("a", _turn("hi"))
    assert base is not None and base == cache_key("a", _turn("hi"))
    assert base != cache_key("b", _turn("hi"))
    assert base != cache_key("a", _turn("hi!"))
    assert base != cache_key("a", _turn("hi", max_tokens=5))
    assert base != cache_key("a", _turn("hi", system="be brief"))
    assert cache_key("a", _turn("hi", tools=(ToolSpec("f", "", {"type": "object"}),))) is None


def test_cache_keeps_finished_answers_for_their_ttl() -> None:
    clock = Clock(0.0)
    cache = ResponseCache(10, max_entries=2, clock=clock)
    cache.put("k", [TextDelta("a"), TurnEnd()], "s1")
    cache.put("failed", [TextDelta("a"), TurnError("upstream", "x")], "s2")
    cache.put("waiting", [TurnEnd("tool_use", waiting_for=("t",))], "s3")
    assert cache.get("failed") is None and cache.get("waiting") is None
    hit = cache.get("k")
    assert hit is not None and hit.events[0] == TextDelta("a") and hit.session_key == "s1"
    clock.now = 11.0
    assert cache.get("k") is None
    for name in ("x", "y", "z"):
        cache.put(name, [TurnEnd()], name)
    assert len(cache) == 2 and cache.get("x") is None  # least recently used out first
    assert not ResponseCache(0).enabled


async def test_a_flight_shares_events_with_late_joiners() -> None:
    flights = Flights()
    flight = flights.lead("k")
    assert flights.join("k") is flight
    flight.publish(TextDelta("a"))
    waiter = asyncio.ensure_future(flight.wait(1))
    await asyncio.sleep(0)
    assert not waiter.done()
    flight.publish(TurnEnd())
    await waiter
    flights.land(flight)
    assert flights.join("k") is None and flight.done
    cut = flights.lead("c")
    cut.publish(TextDelta("par"))
    flights.land(cut)
    end = cut.events[-1]
    assert isinstance(end, TurnError) and "was cancelled" in end.message


class MemoryAnswers:
    """A SharedAnswers in memory: what two replicas' caches would share through Redis."""

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}
        self.flights: set[str] = set()

    async def get(self, key: str) -> bytes | None:
        return self.answers.get(key)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self.answers[key] = value

    async def lead(self, key: str, ttl: float) -> bool:
        if key in self.flights:
            return False
        self.flights.add(key)
        return True

    async def land(self, key: str) -> None:
        self.flights.discard(key)

    async def wait(self, key: str, timeout: float) -> bytes | None:
        while key in self.flights and key not in self.answers:
            await asyncio.sleep(0.01)
        return self.answers.get(key)


async def test_an_answer_kept_by_one_replica_is_a_hit_on_another() -> None:
    shared = MemoryAnswers()
    one, other = ResponseCache(10, shared=shared), ResponseCache(10, shared=shared)
    events: list[AgentEvent] = [TextDelta("é\n\u2028 ok"), TurnEnd("end_turn")]
    await one.keep("k", events, "ccs_1")
    hit = await other.lookup("k")
    assert hit is not None and list(hit.events) == events and hit.session_key == "ccs_1"
    assert other.get("k") is not None  # kept here too from now on
    assert await other.lookup("missing") is None
    # What is not a finished answer is never shared; garbage in the shared cache is a miss.
    await one.keep("w", [TurnEnd("tool_use", waiting_for=("t",))], "s")
    assert "w" not in shared.answers
    shared.answers["bad"] = b"s\nnot json"
    assert await other.lookup("bad") is None
    assert ResponseCache(0, shared=shared).shared is None  # no cache, nothing shared
