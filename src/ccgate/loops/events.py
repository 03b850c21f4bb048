"""What a loop reports: the neutral events of its turns, for its message streams and watchers.

Agent events (``engine.events``) pass through as they are (text and thinking
deltas, tool results); the loop adds its own: a message waiting its turn, a
turn starting, a tool call with a readable summary of its input, a choice
asked and answered, the turn's end. ``protocol.loops`` renders them as the
Loop API's SSE events. :func:`dump` and :func:`load` give an event the plain
form in which idempotency records keep it across restarts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ccgate.engine.events import TextDelta, ThinkingDelta, ToolResult, Usage

__all__ = [
    "ChoiceRequested",
    "ChoiceResolved",
    "Done",
    "Failed",
    "Interrupted",
    "LoopEvent",
    "Queued",
    "Snapshot",
    "Started",
    "ToolCalled",
    "dump",
    "is_final",
    "load",
]


@dataclass(frozen=True, slots=True)
class Queued:
    """The loop is busy: this message (turn ``turn_id``) waits, at ``position`` in line."""

    position: int
    turn_id: str = ""


@dataclass(frozen=True, slots=True)
class Started:
    """A turn began; ``cold_start`` when a Claude Code process had to start for it."""

    turn_id: str
    cold_start: bool


@dataclass(frozen=True, slots=True)
class ToolCalled:
    """The agent called one of its tools."""

    tool_use_id: str
    tool: str
    input_summary: str


@dataclass(frozen=True, slots=True)
class ChoiceRequested:
    """The turn waits for a person (or program): a permission or a question."""

    choice_id: str
    kind: Literal["permission", "question"]
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChoiceResolved:
    """A choice was answered: ``source`` is ``api``, ``timeout`` or ``interrupt``."""

    choice_id: str
    source: str


@dataclass(frozen=True, slots=True)
class Done:
    """The turn finished; its usage."""

    turn_id: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The turn was stopped on request."""

    turn_id: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The turn (or a watch) failed: ``code`` says how."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Where a running turn is, for a watcher that joins in the middle."""

    turn_id: str
    assistant_text_so_far: str
    pending_choice_id: str | None


LoopEvent = (
    Queued
    | Started
    | TextDelta
    | ThinkingDelta
    | ToolCalled
    | ToolResult
    | ChoiceRequested
    | ChoiceResolved
    | Done
    | Interrupted
    | Failed
    | Snapshot
)

_KINDS: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        Queued,
        Started,
        TextDelta,
        ThinkingDelta,
        ToolCalled,
        ToolResult,
        ChoiceRequested,
        ChoiceResolved,
        Done,
        Interrupted,
        Failed,
        Snapshot,
    )
}


def is_final(event: LoopEvent) -> bool:
    """Tell whether ``event`` ends a turn."""
    return isinstance(event, Done | Interrupted | Failed)


def dump(event: LoopEvent) -> dict[str, Any]:
    """Return ``event`` as plain data."""
    return {"event": type(event).__name__, **dataclasses.asdict(event)}


def load(data: dict[str, Any]) -> LoopEvent:
    """Return the event ``dump`` made ``data`` from."""
    fields = dict(data)
    cls = _KINDS[fields.pop("event")]
    if cls is Done:
        fields["usage"] = Usage(**fields["usage"])
    event: LoopEvent = cls(**fields)
    return event
