"""Engine parts without a CLI: stop sequences, the concurrency gate, the model catalogue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from ccgate.claude.models import parse_cli_models
from ccgate.engine.events import AgentEvent, TextDelta, TurnEnd, TurnStarted, Usage
from ccgate.engine.gate import Gate
from ccgate.engine.models import Catalogue, CliModel, Price
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
        ("sonnet", "claude-sonnet-5-5"),
        ("opus", "claude-opus-5-5"),
        ("haiku", "claude-haiku-5-5"),
        ("fable", "claude-fable-5-2"),
        ("default", "claude-opus-5-5"),
        ("claude-opus-5-5", "claude-opus-5-5"),
        ("claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("us.anthropic.claude-opus-5-5", "claude-opus-5-5"),
        ("anthropic.claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("sonnet-4-5", "claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("anthropic/claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("Claude-Sonnet-4-5", "claude-sonnet-4-5"),
        ("ANTHROPIC/CLAUDE-HAIKU-4-5", "claude-haiku-4-5"),
        ("SONNET", "claude-sonnet-5-5"),
        ("  sonnet ", "claude-sonnet-5-5"),
        ("claude-opus-latest", "claude-opus-5-5"),
    ],
)
def test_resolve(catalogue: Catalogue, name: str, model_id: str) -> None:
    model = catalogue.resolve(name)
    assert model.id == model_id
    assert model.known


def test_the_cli_receives_the_resolved_id_or_the_dated_one_asked_for(catalogue: Catalogue) -> None:
    assert catalogue.resolve("sonnet").cli == "claude-sonnet-5-5"
    dated = catalogue.resolve("claude-opus-5-5-20261101")
    assert (dated.id, dated.cli) == ("claude-opus-5-5", "claude-opus-5-5-20261101")


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("claude-sonnet-9", "sonnet"),
        ("claude-opus-6-1-20270101", "opus"),
        ("claude-zeta-1", "zeta"),
    ],
)
def test_an_unknown_claude_id_is_passed_to_the_cli(
    catalogue: Catalogue, name: str, family: str
) -> None:
    model = catalogue.resolve(name)
    assert (model.id, model.cli, model.known, model.family) == (name, name, False, family)
    assert model.price.output > 0  # priced like its family's current model, or the default


@pytest.mark.parametrize(
    "name", ["gpt-4o", "anthropic/gpt-4o", "", "claude sonnet", "claude-\ud800", "x" * 300]
)
def test_unknown_model(catalogue: Catalogue, name: str) -> None:
    with pytest.raises(NotFound) as info:
        catalogue.resolve(name)
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"
    assert info.value.status == 404
    assert len(info.value.message) < 400


def test_the_cli_s_list_wins_and_comes_first() -> None:
    catalogue = Catalogue.load()
    catalogue.adopt(
        [
            CliModel("default", "claude-sonnet-6-0", "Claude Sonnet 6", Price.of(3, 15)),
            CliModel("sonnet", "claude-sonnet-6-0", "Claude Sonnet 6", Price.of(3, 15)),
            CliModel("haiku", "claude-haiku-5-5", "Claude Haiku 5.5", None),
        ],
        seen_at=1_800_000_000,
    )
    sonnet = catalogue.resolve("sonnet")
    assert (sonnet.id, sonnet.current, sonnet.price.input, sonnet.created) == (
        "claude-sonnet-6-0",
        True,
        3,
        1_800_000_000,
    )
    assert catalogue.resolve("default").id == "claude-sonnet-6-0"
    assert catalogue.resolve("haiku").price == Price.of(0.1, 0.5)  # kept: the CLI gave none
    listed = [listed for listed, _ in catalogue.listing()]
    assert listed[:2] == ["claude-haiku-5-5", "claude-sonnet-6-0"] or listed[:2] == [
        "claude-sonnet-6-0",
        "claude-haiku-5-5",
    ]
    assert {"sonnet", "haiku"} <= set(listed[2:4])
    # A model the CLI no longer offers stays reachable by its id, not as current.
    old = catalogue.resolve("claude-sonnet-5-5")
    assert old.known and not old.current
    assert "sonnet" not in old.aliases


def test_the_cli_s_model_list_is_parsed() -> None:
    raw = [
        {
            "value": "opus",
            "resolvedModel": "claude-opus-5-5",
            "displayName": "Opus",
            "description": "Opus 5.5 · Best for everyday, complex tasks · $4/$20 per Mtok",
        },
        {
            "value": "haiku",
            "resolvedModel": "claude-haiku-5-5",
            "description": "Haiku 5.5 · Fastest · $0.10/$0.50 per Mtok ($0.50/$2.50 over 100k)",
        },
        {"value": "broken"},
        "not a model",
    ]
    opus, haiku = parse_cli_models(raw)
    assert (opus.value, opus.resolved, opus.display_name) == (
        "opus",
        "claude-opus-5-5",
        "Claude Opus 5.5",
    )
    assert opus.price == Price.of(4, 20)
    assert haiku.price == Price.of(0.1, 0.5)
    assert parse_cli_models(None) == []


def test_catalogue_entries_are_sane(catalogue: Catalogue) -> None:
    ids = [m.id for m in catalogue.models]
    assert len(ids) == len(set(ids))
    for model in catalogue.models:
        assert model.cli
        assert model.context_window > 0
        assert model.max_output > 0
        assert model.price.output >= model.price.input > 0
