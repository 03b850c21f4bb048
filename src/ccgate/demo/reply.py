"""What the scripted model answers: ``Reply`` and ``ToolUse``, and replies built from directives."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STOP_REASONS", "STREAM_ERRORS", "Reply", "ToolUse", "reply_from_directives"]

#: The error types an ``error`` event inside a stream may carry.
STREAM_ERRORS = frozenset({"rate_limit_error", "overloaded_error", "api_error"})

STOP_REASONS = frozenset(
    {"end_turn", "tool_use", "max_tokens", "stop_sequence", "pause_turn", "refusal"}
)


@dataclass
class ToolUse:
    """One ``tool_use`` block; ``id`` is assigned (``toolu_demo_...``) when left out."""

    name: str
    input: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass
class Reply:
    """One scripted answer to one conversation request.

    ``text=None`` with no ``tool_uses`` means "the default answer" (echo or
    tool-result report), shaped by the other fields. ``cut_after_chunks`` counts
    ``content_block_delta`` events of every kind. ``stall`` sleeps before a
    non-streamed answer, or after ``message_start`` and ``ping`` in a stream.
    """

    text: str | None = None
    chunks: int = 1
    delay: float = 0.0
    thinking: str | None = None
    tool_uses: list[ToolUse] = field(default_factory=list)
    error_status: int | None = None
    error_message: str | None = None
    cut_after_chunks: int | None = None
    stall: float | None = None
    stop_reason: str | None = None
    usage: dict[str, int] | None = None
    #: An ``error`` event of this type right after ``message_start`` in a 200 stream.
    stream_error: str | None = None

    @property
    def is_fault(self) -> bool:
        """Tell whether this reply injects an error, a cut or a stall."""
        return (
            self.error_status is not None
            or self.cut_after_chunks is not None
            or self.stall is not None
            or self.stream_error is not None
        )


def reply_from_directives(pairs: list[tuple[str, Any]]) -> tuple[Reply, int | None]:
    """Build a reply from directive pairs; return it and the ``times`` limit, if any.

    Pairs with an unknown key or an unusable value are ignored.
    """
    reply = Reply()
    times: int | None = None
    for key, value in pairs:
        if key == "say" and isinstance(value, str | int | float):
            reply.text = str(value)
        elif key == "thinking" and isinstance(value, str | int | float):
            reply.thinking = str(value)
        elif key == "tool" and isinstance(value, str) and value:
            reply.tool_uses.append(ToolUse(name=value))
        elif key == "input" and isinstance(value, dict) and reply.tool_uses:
            reply.tool_uses[-1].input = value
        elif key == "id" and isinstance(value, str) and reply.tool_uses:
            reply.tool_uses[-1].id = value
        elif key == "chunks" and _count(value):
            reply.chunks = value
        elif key == "delay" and _seconds(value):
            reply.delay = float(value)
        elif key == "error" and isinstance(value, int) and 400 <= value <= 599:
            reply.error_status = value
        elif key == "message" and isinstance(value, str):
            reply.error_message = value
        elif key == "cut" and isinstance(value, int) and value >= 0:
            reply.cut_after_chunks = value
        elif key == "stall" and _seconds(value):
            reply.stall = float(value)
        elif key == "stop" and value in STOP_REASONS:
            reply.stop_reason = str(value)
        elif key == "stream_error" and value in STREAM_ERRORS:
            reply.stream_error = str(value)
        elif key == "times" and _count(value):
            times = value
    return reply, times


def _count(value: Any) -> bool:
    """Tell whether ``value`` is a positive int (bools excluded)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 10_000


def _seconds(value: Any) -> bool:
    """Tell whether ``value`` is a usable, finite number of seconds."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= 3600
    )
