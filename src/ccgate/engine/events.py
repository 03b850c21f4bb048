"""The neutral agent events every turn produces, whatever the wire protocol.

A turn's stream is zero or more content events, at most one :class:`Usage`,
and exactly one terminal event: :class:`TurnEnd` or :class:`TurnError`.
Renderers (``protocol/``) turn these into OpenAI chunks, Anthropic events or
loop SSE events; nothing here knows the Agent SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "AgentEvent",
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
    "timeout",
    "cli_crashed",
    "upstream",
    "unavailable",
]


@dataclass(frozen=True, slots=True)
class TurnStarted:
    """A turn began on a CLI process; ``cold_start`` when that process had to start."""

    model: str
    cold_start: bool


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
    """Token counts and cost of the whole turn, as the CLI reported them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """The turn finished normally."""

    stop_reason: StopReason = "end_turn"
    stop_sequence: str | None = None


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
