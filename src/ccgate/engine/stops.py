"""Enforce ``stop_sequences`` on a turn's text, which the CLI does not pass upstream."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from ccgate.engine.events import AgentEvent, TextDelta, TurnEnd, TurnError, Usage

__all__ = ["apply_stop_sequences"]


async def apply_stop_sequences(
    events: AsyncGenerator[AgentEvent, None], stops: tuple[str, ...]
) -> AsyncGenerator[AgentEvent, None]:
    """Cut the text at the first stop sequence and end the turn with ``stop_sequence``.

    Text that might be the start of a stop sequence is held back until it is
    known not to be one, so a sequence split across deltas is still found.
    Once a sequence is found the upstream turn is closed (its process ends).
    """
    stops = tuple(s for s in stops if s)
    hold = max((len(s) for s in stops), default=1) - 1
    pending = ""
    try:
        async for event in events:
            if not isinstance(event, TextDelta):
                if isinstance(event, TurnEnd | TurnError | Usage) and pending:
                    yield TextDelta(pending)
                    pending = ""
                yield event
                continue
            pending += event.text
            hits = [(pending.find(s), s) for s in stops if s in pending]
            if hits:
                index, stop = min(hits)
                if index:
                    yield TextDelta(pending[:index])
                yield TurnEnd("stop_sequence", stop_sequence=stop)
                return
            if len(pending) > hold:
                cut = len(pending) - hold
                yield TextDelta(pending[:cut])
                pending = pending[cut:]
    finally:
        await events.aclose()
