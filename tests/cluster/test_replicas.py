"""The replicas' registry, placements and loop leases, the bus and the shared answers,
each against a real Redis, with several clients standing for several replicas."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ccgate.cluster.blobs import SharedBlobs
from ccgate.cluster.bus import Bus
from ccgate.cluster.redis import Shared
from ccgate.cluster.replicas import Peer, Replicas
from ccgate.errors import SharedStateUnavailable
from tests.cluster.conftest import Replica

pytestmark = pytest.mark.server


async def _replica(shared: Shared, name: str, ttl: float = 10.0) -> Replicas:
    replicas = Replicas(shared, id=name, url=f"http://{name}:8787", ttl=ttl)
    await replicas.start()
    return replicas


async def test_replicas_see_each_other_and_leave(redis: Shared, replica: Replica) -> None:
    a = await _replica(redis, "a")
    b = await _replica(replica(), "b")
    try:
        assert [p.id for p in await a.alive()] == ["a", "b"]
        assert (await b.alive())[0] == Peer("a", "http://a:8787")
    finally:
        await b.aclose()
    assert [p.id for p in await a.alive()] == ["a"]
    await a.aclose()


async def test_a_placement_is_found_by_the_others_only(redis: Shared, replica: Replica) -> None:
    a = await _replica(redis, "a")
    b = await _replica(replica(), "b")
    try:
        await a.place("call", "ns:toolu_1", 5)
        assert await b.find("call", "ns:toolu_1") == Peer("a", "http://a:8787")
        assert await a.find("call", "ns:toolu_1") is None  # here: nothing to forward
        assert await b.find("call", "ns:toolu_2") is None
        await b.unplace("call", "ns:toolu_1")  # not b's: stays
        assert await b.find("call", "ns:toolu_1") is not None
        await a.unplace("call", "ns:toolu_1")
        assert await b.find("call", "ns:toolu_1") is None
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_placement_of_a_dead_replica_is_nowhere(redis: Shared, replica: Replica) -> None:
    a = await _replica(redis, "a")
    b = await _replica(replica(), "b")
    try:
        await a.place("session", "ns:conv", 60)
        # a dies without a word: its entry expires (here: deleted, as the ttl would).
        await redis.client.delete(redis.key("replica", "a"))
        assert await b.find("session", "ns:conv") is None
    finally:
        await a.aclose()
        await b.aclose()


async def test_one_replica_holds_a_loop_until_it_dies(redis: Shared, replica: Replica) -> None:
    a = await _replica(redis, "a", ttl=0.9)
    b = await _replica(replica(), "b", ttl=0.9)
    try:
        assert await a.claim("loop", "loop_1") is None
        assert a.holds("loop", "loop_1")
        assert await b.claim("loop", "loop_1") == Peer("a", "http://a:8787")
        await asyncio.sleep(1.5)  # longer than the ttl: the heartbeat renewed the lease
        assert await b.claim("loop", "loop_1") == Peer("a", "http://a:8787")
        assert await a.claim("loop", "loop_1") is None  # ours already
        # a stops beating (killed): its entry and its lease expire; b takes the loop.
        assert a._task is not None
        a._task.cancel()
        await asyncio.sleep(1.2)
        assert await b.claim("loop", "loop_1") is None
        assert b.holds("loop", "loop_1")
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_lease_is_stolen_from_a_replica_out_of_reach(
    redis: Shared, replica: Replica
) -> None:
    a = await _replica(redis, "a")
    b = await _replica(replica(), "b")
    try:
        await a.claim("loop", "loop_2")
        await b.steal("loop", "loop_2")
        assert await a.claim("loop", "loop_2") == Peer("b", "http://b:8787")
        await b.release("loop", "loop_2")
        assert await a.claim("loop", "loop_2") is None
    finally:
        await a.aclose()
        await b.aclose()


async def test_every_replica_hears_the_bus(redis: Shared, replica: Replica) -> None:
    heard: dict[str, list[Any]] = {"a": [], "b": []}
    buses = []
    for name, shared in (("a", redis), ("b", replica())):
        bus = Bus(shared)
        bus.subscribe("keys", heard[name].append)
        await bus.start()
        buses.append(bus)
    try:
        await buses[0].publish("keys", {"id": "key_1"})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(heard.values()):
            await asyncio.sleep(0.02)
        assert heard == {"a": [{"id": "key_1"}], "b": [{"id": "key_1"}]}
    finally:
        for bus in buses:
            await bus.aclose()


async def test_an_answer_and_a_flight_are_shared(redis: Shared, replica: Replica) -> None:
    a = SharedBlobs(redis, "a")
    b = SharedBlobs(replica(), "b")
    assert await a.lead("k", 30)
    assert not await b.lead("k", 30)  # a runs it

    async def land_later() -> None:
        await asyncio.sleep(0.2)
        await a.put("k", b"answer", 30)
        await a.land("k")

    task = asyncio.create_task(land_later())
    assert await b.wait("k", 5) == b"answer"
    await task
    assert await b.get("k") == b"answer"
    # A leader that lands without an answer (its turn failed) releases its followers.
    assert await a.lead("k2", 30)
    asyncio.get_running_loop().call_later(0.1, lambda: asyncio.ensure_future(a.land("k2")))
    started = time.monotonic()
    assert await b.wait("k2", 5) is None
    assert time.monotonic() - started < 2
    await b.land("k2")  # not b's flight: nothing happens


async def test_an_unreachable_redis_fails_fast() -> None:
    shared = Shared("redis://127.0.0.1:1/0", prefix="x:")
    replicas = Replicas(shared, id="a", url="http://a:1")
    started = time.monotonic()
    with pytest.raises(SharedStateUnavailable):
        await replicas.find("call", "ns:x")
    await replicas.start()  # logged, not raised: the heartbeat retries
    await replicas.aclose()
    await shared.aclose()
    assert time.monotonic() - started < 5
