"""Engine parts without a CLI: stop sequences, the concurrency gate, the model catalogue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from ccgate.engine.events import AgentEvent, TextDelta, TurnEnd, TurnStarted, Usage
from ccgate.engine.gate import Gate
from ccgate.engine.models import Catalogue
from ccgate.engine.stops import apply_stop_sequences
from ccgate.errors import NotFound, QueueFull

# --- stop sequences -----------------------------------------------------------------------


class Source:
    """An event source that records how far it was consumed and whether it was closed."""

    def __init__(self, events: list[AgentEvent]) -> None:
        self.events = events
        self.yielded = 0
        self.closed = False

    async def run(self) -> AsyncGenerator[AgentEvent, None]:
        try:
            for event in self.events:
                self.yielded += 1
                yield event
        finally:
            self.closed = True


async def _apply(source: Source, stops: tuple[str, ...]) -> list[AgentEvent]:
    return [e async for e in apply_stop_sequences(source.run(), stops)]


def _text(events: list[AgentEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def _deltas(*texts: str) -> list[AgentEvent]:
    return [TextDelta(t) for t in texts]


async def test_stop_split_across_deltas() -> None:
    source = Source(
        [
            TurnStarted("sonnet", False),
            *_deltas("Hello wo", "rld E", "N", "D after", " more"),
            Usage(output_tokens=9),
            TurnEnd(),
        ]
    )
    out = await _apply(source, ("END",))
    assert _text(out) == "Hello world "
    assert out[0] == TurnStarted("sonnet", False)
    assert out[-1] == TurnEnd("stop_sequence", stop_sequence="END")
    assert sum(isinstance(e, TurnEnd) for e in out) == 1
    assert "after" not in _text(out)
    assert source.closed
    assert source.yielded < len(source.events)


async def test_stop_at_very_start() -> None:
    out = await _apply(Source([*_deltas("ST", "OP and more"), TurnEnd()]), ("STOP",))
    assert _text(out) == ""
    assert out == [TurnEnd("stop_sequence", stop_sequence="STOP")]


async def test_earliest_of_several_stops_wins() -> None:
    out = await _apply(Source([*_deltas("one two three"), TurnEnd()]), ("three", "two"))
    assert _text(out) == "one "
    assert out[-1] == TurnEnd("stop_sequence", stop_sequence="two")


async def test_held_back_text_flushed_without_stop() -> None:
    source = Source([*_deltas("abc", "dEN"), Usage(output_tokens=2), TurnEnd("max_tokens")])
    out = await _apply(source, ("END",))
    assert _text(out) == "abcdEN"
    assert out[-1] == TurnEnd("max_tokens")
    assert isinstance(out[-2], Usage)
    # Text comes before the usage and the end, never after.
    last_text = max(i for i, e in enumerate(out) if isinstance(e, TextDelta))
    assert last_text < out.index(Usage(output_tokens=2))
    assert source.closed


async def test_held_back_text_flushed_at_turn_end() -> None:
    out = await _apply(Source([*_deltas("xyzE"), TurnEnd()]), ("END",))
    assert _text(out) == "xyzE"
    assert out[-1] == TurnEnd()


async def test_no_stops_passes_through() -> None:
    events = [*_deltas("a", "b"), TurnEnd()]
    assert await _apply(Source(events), ()) == events
    assert _text(await _apply(Source(events), ("",))) == "ab"


async def test_source_closed_when_consumer_stops_early() -> None:
    source = Source([*_deltas("aaaaaa", "bbbbbb", "cccccc"), TurnEnd()])
    gen = apply_stop_sequences(source.run(), ("zz",))
    first = await gen.__anext__()
    assert isinstance(first, TextDelta)
    await gen.aclose()
    assert source.closed


# --- gate ---------------------------------------------------------------------------------


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


# --- catalogue ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("sonnet", "sonnet"),
        ("opus", "opus"),
        ("haiku", "haiku"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("sonnet-4-5", "claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("anthropic/claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("Claude-Sonnet-4-5", "claude-sonnet-4-5"),
        ("ANTHROPIC/CLAUDE-HAIKU-4-5", "claude-haiku-4-5"),
        ("SONNET", "sonnet"),
        ("  sonnet ", "sonnet"),
        ("claude-opus-latest", "opus"),
    ],
)
def test_resolve(catalogue: Catalogue, name: str, model_id: str) -> None:
    assert catalogue.resolve(name).id == model_id


@pytest.mark.parametrize("name", ["gpt-4o", "anthropic/gpt-4o", "", "claude-sonnet-9"])
def test_unknown_model(catalogue: Catalogue, name: str) -> None:
    with pytest.raises(NotFound) as info:
        catalogue.resolve(name)
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"
    assert info.value.status == 404


def test_catalogue_entries_are_sane(catalogue: Catalogue) -> None:
    ids = [m.id for m in catalogue.models]
    assert len(ids) == len(set(ids))
    for model in catalogue.models:
        assert model.cli
        assert model.context_window > 0
        assert model.max_output > 0
        assert model.price.output >= model.price.input > 0
