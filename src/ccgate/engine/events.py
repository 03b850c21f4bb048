"""The neutral agent events every turn produces, whatever the wire protocol.

A turn's stream is one or more *segments*. A segment is zero or more content
events, at most one :class:`Usage`, and a :class:`TurnEnd` or :class:`TurnError`.
Every segment but the last ends with ``TurnEnd("tool_use", waiting_for=ids)``:
the model called the client's tools and the turn waits, alive, for their
results; the next segment follows once they are delivered. The last segment's
end (a ``TurnEnd`` with nothing to wait for, or a ``TurnError``) ends the turn.
Renderers (``protocol/``) turn these into OpenAI chunks, Anthropic events or
loop SSE events; nothing here knows the Agent SDK.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "AgentEvent",
    "CallSummary",
    "calls_of",
    "dump_events",
    "last_usage",
    "load_events",
    "ErrorKind",
    "StopReason",
    "TextDelta",
    "ThinkingDelta",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "ToolResult",
    "TurnEnd",
    "TurnError",
    "TurnStarted",
    "Usage",
]

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]

ErrorKind = Literal[
    "authentication",
    "billing",
    "rate_limit",
    "overloaded",
    "invalid_request",
    "model_not_found",
    "timeout",
    "cli_crashed",
    "upstream",
    "unavailable",
    "plan_limit",
    "structured_output",
]


@dataclass(frozen=True, slots=True)
class TurnStarted:
    """A turn began on a CLI process; ``cold_start`` when that process had to start."""

    model: str
    cold_start: bool
    #: The upstream account the turn runs on ("": not known to the runner).
    account: str = ""


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the assistant's visible text."""

    text: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    """A piece of the assistant's thinking; ``signature`` arrives with the block's last piece."""

    text: str
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """The model began a call of tool ``name``."""

    tool_use_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call's JSON arguments."""

    tool_use_id: str
    partial_json: str


@dataclass(frozen=True, slots=True)
class ToolCallEnd:
    """A tool call's arguments are complete."""

    tool_use_id: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool's result came back to the model."""

    tool_use_id: str
    ok: bool


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts and cost of a segment (the turn's share since the last segment).

    A segment may carry several: ``partial`` ones while it runs (what is known
    so far, e.g. the input of a model call that is still answering) and a
    complete one at its end. The last one counts.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float | None = None
    partial: bool = False

    @property
    def tokens(self) -> int:
        """Return every token counted."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_creation_tokens
        )


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """The turn (or, with ``waiting_for``, a segment of it) finished normally.

    ``waiting_for`` holds the ids of the client tool calls the turn now waits
    for; it is empty when the turn is over.
    """

    stop_reason: StopReason = "end_turn"
    stop_sequence: str | None = None
    waiting_for: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TurnError:
    """The turn failed; ``kind`` classifies it for the error renderers."""

    kind: ErrorKind
    message: str
    retry_after: float | None = None
    exit_code: int | None = None


AgentEvent = (
    TurnStarted
    | TextDelta
    | ThinkingDelta
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | ToolResult
    | Usage
    | TurnEnd
    | TurnError
)


@dataclass(frozen=True, slots=True)
class CallSummary:
    """A tool call put together from its events: ``arguments`` is its JSON text."""

    tool_use_id: str
    name: str
    arguments: str

    def input(self) -> dict[str, Any]:
        """Return the arguments as an object (``{}`` when they are not one)."""
        try:
            value = json.loads(self.arguments)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


def calls_of(events: Iterable[AgentEvent]) -> list[CallSummary]:
    """Return the tool calls the events make, in order; a call without arguments gets ``{}``."""
    names: dict[str, str] = {}
    pieces: dict[str, list[str]] = {}
    for event in events:
        if isinstance(event, ToolCallStart):
            names[event.tool_use_id] = event.name
            pieces[event.tool_use_id] = []
        elif isinstance(event, ToolCallDelta) and event.tool_use_id in pieces:
            pieces[event.tool_use_id].append(event.partial_json)
    return [
        CallSummary(call_id, name, "".join(pieces[call_id]) or "{}")
        for call_id, name in names.items()
    ]


def last_usage(events: Iterable[AgentEvent]) -> Usage | None:
    """Return the usage that counts for a segment: its last ``Usage``."""
    found: Usage | None = None
    for event in events:
        if isinstance(event, Usage):
            found = event
    return found


_EVENT_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        TurnStarted,
        TextDelta,
        ThinkingDelta,
        ToolCallStart,
        ToolCallDelta,
        ToolCallEnd,
        ToolResult,
        Usage,
        TurnEnd,
        TurnError,
    )
}


def dump_events(events: Iterable[AgentEvent]) -> bytes:
    """Return ``events`` as JSON (a cache other replicas read); :func:`load_events` undoes it."""
    rows = []
    for event in events:
        row: dict[str, Any] = {"type": type(event).__name__}
        for name in event.__slots__:
            value = getattr(event, name)
            row[name] = list(value) if isinstance(value, tuple) else value
        rows.append(row)
    return json.dumps(rows, separators=(",", ":")).encode()


def load_events(data: bytes) -> tuple[AgentEvent, ...]:
    """Return the events :func:`dump_events` wrote (ValueError when ``data`` is not that)."""
    events: list[AgentEvent] = []
    for row in json.loads(data):
        fields = dict(row)
        cls = _EVENT_TYPES.get(str(fields.pop("type", "")))
        if cls is None:
            raise ValueError("not a dump of agent events")
        if "waiting_for" in fields:
            fields["waiting_for"] = tuple(fields["waiting_for"])
        events.append(cls(**fields))
    return tuple(events)
