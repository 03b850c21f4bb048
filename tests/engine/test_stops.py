"""Stop sequences applied to a turn's text as it streams."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from ccgate.engine.events import AgentEvent, TextDelta, TurnEnd, TurnStarted, Usage
from ccgate.engine.stops import apply_stop_sequences

pytestmark = pytest.mark.unit


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
