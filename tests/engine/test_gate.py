"""The concurrency gate: slots, its queue, refusals and cancelled waiters."""

from __future__ import annotations

import asyncio

import pytest

from ccgate.engine.gate import Gate
from ccgate.errors import QueueFull

pytestmark = pytest.mark.unit


async def _hold(gate: Gate, release: asyncio.Event, log: list[str], name: str) -> None:
    async with gate.slot():
        log.append(name)
        await release.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_gate_slots_queue_and_refusal() -> None:
    gate = Gate(2, 2, retry_after=7.0)
    release = asyncio.Event()
    log: list[str] = []
    tasks = [asyncio.create_task(_hold(gate, release, log, str(i))) for i in range(4)]
    await _settle()
    assert gate.active == 2
    assert gate.queued == 2
    assert log == ["0", "1"]
    with pytest.raises(QueueFull) as info:
        async with gate.slot():
            pass  # pragma: no cover
    assert info.value.retry_after == 7.0
    assert info.value.status == 429
    assert info.value.headers()["retry-after"] == "7"
    assert info.value.headers()["x-should-retry"] == "true"
    release.set()
    await asyncio.gather(*tasks)
    assert sorted(log) == ["0", "1", "2", "3"]
    assert gate.active == 0
    assert gate.queued == 0


async def test_gate_queue_is_fifo() -> None:
    gate = Gate(1, 10)
    order: list[int] = []
    blocker = asyncio.Event()
    first = asyncio.create_task(_hold(gate, blocker, [], "first"))
    await _settle()

    async def waiter(i: int) -> None:
        async with gate.slot():
            order.append(i)
            await asyncio.sleep(0)

    waiters = []
    for i in range(5):
        waiters.append(asyncio.create_task(waiter(i)))
        await _settle()
    assert gate.queued == 5
    blocker.set()
    await asyncio.gather(first, *waiters)
    assert order == [0, 1, 2, 3, 4]
    assert gate.active == 0


async def test_gate_zero_queue_refuses_second() -> None:
    gate = Gate(1, 0)
    release = asyncio.Event()
    task = asyncio.create_task(_hold(gate, release, [], "a"))
    await _settle()
    with pytest.raises(QueueFull):
        async with gate.slot():
            pass  # pragma: no cover
    release.set()
    await task


async def test_cancelled_waiter_leaves_queue_without_leaking() -> None:
    gate = Gate(1, 1)
    release = asyncio.Event()
    holder = asyncio.create_task(_hold(gate, release, [], "holder"))
    await _settle()
    waiter = asyncio.create_task(_hold(gate, asyncio.Event(), [], "waiter"))
    await _settle()
    assert gate.queued == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.queued == 0
    # The queue has room again.
    log: list[str] = []
    again = asyncio.create_task(_hold(gate, asyncio.Event(), log, "again"))
    await _settle()
    assert gate.queued == 1
    again.cancel()
    with pytest.raises(asyncio.CancelledError):
        await again
    release.set()
    await holder
    assert gate.active == 0
    assert gate.queued == 0
    async with gate.slot():
        assert gate.active == 1
    assert gate.active == 0


async def test_waiter_cancelled_as_slot_handed_over_passes_it_on() -> None:
    gate = Gate(1, 2)
    holder = gate.slot()
    await holder.__aenter__()
    log: list[str] = []
    doomed = asyncio.create_task(_hold(gate, asyncio.Event(), log, "doomed"))
    await _settle()
    second = asyncio.create_task(_hold(gate, asyncio.Event(), log, "second"))
    await _settle()
    assert gate.queued == 2
    # Hand the slot to `doomed` and cancel it before it can run: the slot must move on.
    await holder.__aexit__(None, None, None)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await _settle()
    assert log == ["second"]
    assert gate.active == 1
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert gate.active == 0
    assert gate.queued == 0


async def test_slot_released_on_exception() -> None:
    gate = Gate(1, 0)
    with pytest.raises(RuntimeError):
        async with gate.slot():
            raise RuntimeError("boom")
    assert gate.active == 0
    async with gate.slot():
        assert gate.active == 1
