"""Translate the SDK's messages of a turn into neutral agent events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jsonschema
from claude_agent_sdk import (
    AssistantMessage,
    RateLimitEvent,
    ResultMessage,
    ToolResultBlock,
    UserMessage,
)
from claude_agent_sdk.types import StreamEvent

from ccgate.engine.events import (
    AgentEvent,
    ErrorKind,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolResult,
    TurnEnd,
    TurnError,
    Usage,
)
from ccgate.engine.turn import OutputSchema

__all__ = ["Translator", "moves_on"]


def moves_on(message: object) -> bool:
    """Tell whether a message shows the turn working again after waiting for tool results.

    While it waits, the CLI still sends the rest of the calling message
    (``message_stop``, the assembled ``AssistantMessage``); it moves on with the
    tools' results, a new model call, or the end of the turn.
    """
    if isinstance(message, StreamEvent):
        return message.event.get("type") == "message_start"
    return isinstance(message, UserMessage | ResultMessage)


_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "refusal": "refusal",
    "pause_turn": "end_turn",
}

_ASSISTANT_ERRORS: dict[str, ErrorKind] = {
    "authentication_failed": "authentication",
    "billing_error": "billing",
    "rate_limit": "rate_limit",
    "invalid_request": "invalid_request",
    "server_error": "upstream",
    "unknown": "upstream",
}


#: How the CLI words an upstream's refusal of the model id it was given.
_UNKNOWN_MODEL = "issue with the selected model"


def _kind_for_status(status: int | None) -> ErrorKind | None:
    if status is None:
        return None
    if status == 404:
        return "model_not_found"
    if status == 401:
        return "authentication"
    if status in (402, 403):
        return "billing"
    if status == 429:
        return "rate_limit"
    if status == 529:
        return "overloaded"
    if status in (400, 413, 422):
        return "invalid_request"
    return "upstream"


class Translator:
    """Turn the SDK's messages of one turn into neutral agent events.

    ``client_tools`` names the client's tools: a message that calls any of them
    ends a segment with ``TurnEnd("tool_use", waiting_for=ids)`` and that
    segment's ``Usage``; the CLI then waits in the tool handlers. With
    ``all_tools`` every tool call is reported (an agent's built-in tools); only
    client tools end a segment.
    """

    def __init__(
        self,
        client_tools: frozenset[str] = frozenset(),
        *,
        all_tools: bool = False,
        on_plan: Callable[[dict[str, Any]], None] | None = None,
        output: OutputSchema | None = None,
    ) -> None:
        self._client_tools = client_tools
        #: Structured output: the answer is the JSON Claude Code's ``StructuredOutput``
        #: tool took, not the text around it (held back, in case it is the JSON itself).
        self._output = output
        self._held: list[str] = []
        #: Told the raw ``rate_limit_info`` of every plan report (``claude.plan`` reads it).
        self._on_plan = on_plan
        #: When the window that refused this turn resets (a plan report said so).
        self._refused_until: float | None = None
        #: Report every tool call (an agent's own tools, which the CLI runs itself).
        self._all_tools = all_tools
        self._blocks: dict[int, tuple[str, str]] = {}
        self._calls: list[str] = []
        self._streamed_text = False
        self._stop_reason: str | None = None
        self._error_kind: ErrorKind | None = None
        self._error_text = ""
        self._result: ResultMessage | None = None
        self._message_open = False
        self._message_usage = Usage()
        self._segment = Usage()
        self._reported = Usage()
        #: Set when the turn ended on the stream itself and the CLI must be stopped:
        #: after max_tokens or a refusal it would quietly ask the model to go on.
        self.ended_early = False

    def feed(self, message: object) -> list[AgentEvent]:
        """Translate one SDK message."""
        if isinstance(message, StreamEvent):
            if message.parent_tool_use_id is None:
                return self._stream_event(message.event)
        elif isinstance(message, AssistantMessage):
            if message.error is not None and message.parent_tool_use_id is None:
                self._error_kind = _ASSISTANT_ERRORS.get(message.error, "upstream")
                self._error_text = " ".join(
                    getattr(block, "text", "") for block in message.content
                ).strip()
        elif isinstance(message, UserMessage) and isinstance(message.content, list):
            return [
                ToolResult(block.tool_use_id, ok=not block.is_error)
                for block in message.content
                if isinstance(block, ToolResultBlock)
            ]
        elif isinstance(message, ResultMessage):
            self._result = message
        elif isinstance(message, RateLimitEvent):
            raw = dict(message.rate_limit_info.raw or {})
            if raw.get("status") == "rejected" and isinstance(raw.get("resetsAt"), int | float):
                self._refused_until = float(raw["resetsAt"])
            if self._on_plan is not None:
                self._on_plan(raw)
        return []

    def _stream_event(self, event: dict[str, Any]) -> list[AgentEvent]:
        kind = event.get("type")
        index = int(event.get("index", 0))
        if kind == "message_start":
            retried = self._message_open
            self._message_open = True
            usage = (event.get("message") or {}).get("usage") or {}
            self._message_usage = _usage_of(usage, output=False)
            # Known from now on, even if the turn is cut before the model finishes.
            so_far = _add(self._segment, self._message_usage)
            if retried and self._streamed_text:
                # The CLI retried an answer that broke off mid-way; its text would repeat.
                self.ended_early = True
                return [
                    TurnError(
                        "upstream",
                        "the upstream connection broke in the middle of the answer; "
                        "retry the request",
                    )
                ]
            self._blocks.clear()
            self._calls.clear()
            self._held.clear()  # only the last answer's text may be the JSON itself
            return [replace(so_far, partial=True)]
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            btype = str(block.get("type"))
            name = str(block.get("name"))
            if btype == "tool_use" and name not in self._client_tools and not self._all_tools:
                btype = "other_tool_use"  # the CLI answers it itself (unknown tool)
            self._blocks[index] = (btype, str(block.get("id") or ""))
            if btype == "tool_use":
                if name in self._client_tools:
                    self._calls.append(str(block.get("id")))
                return [ToolCallStart(str(block.get("id")), name)]
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta" and delta.get("text"):
                if self._output is not None:
                    self._held.append(str(delta["text"]))
                    return []
                self._streamed_text = True
                return [TextDelta(str(delta["text"]))]
            if dtype == "thinking_delta":
                return [ThinkingDelta(str(delta.get("thinking", "")))]
            if dtype == "signature_delta":
                return [ThinkingDelta("", signature=str(delta.get("signature", "")))]
            btype, tool_id = self._blocks.get(index, ("", ""))
            if dtype == "input_json_delta" and btype == "tool_use":
                return [ToolCallDelta(tool_id, str(delta.get("partial_json", "")))]
        elif kind == "content_block_stop":
            btype, tool_id = self._blocks.pop(index, ("", ""))
            if btype == "tool_use" and tool_id:
                return [ToolCallEnd(tool_id)]
        elif kind == "message_delta":
            return self._message_delta(event)
        return []

    def _message_delta(self, event: dict[str, Any]) -> list[AgentEvent]:
        self._message_open = False
        reason = (event.get("delta") or {}).get("stop_reason")
        if reason:
            self._stop_reason = str(reason)
        output = int(((event.get("usage") or {}).get("output_tokens")) or 0)
        self._segment = _add(self._segment, replace(self._message_usage, output_tokens=output))
        if reason in ("max_tokens", "refusal"):
            self.ended_early = True
            return [self._take_segment(), TurnEnd(_STOP_REASONS[str(reason)])]
        if reason == "tool_use" and self._calls:
            waiting = tuple(self._calls)
            self._calls.clear()
            self._streamed_text = False
            return [self._take_segment(), TurnEnd("tool_use", waiting_for=waiting)]
        return []

    def _take_segment(self) -> Usage:
        """Return the usage since the last segment ended, and count it as reported."""
        segment, self._segment = self._segment, Usage()
        self._reported = _add(self._reported, segment)
        return segment

    def finish(self, stderr_tail: list[str]) -> list[AgentEvent]:
        """Return the closing events once the result (or the end of output) arrived."""
        result = self._result
        events: list[AgentEvent] = []
        if result is not None and result.usage:
            total = _usage_of(result.usage, output=True)
            r = self._reported
            events.append(
                Usage(
                    input_tokens=max(0, total.input_tokens - r.input_tokens),
                    output_tokens=max(0, total.output_tokens - r.output_tokens),
                    cache_read_tokens=max(0, total.cache_read_tokens - r.cache_read_tokens),
                    cache_creation_tokens=max(
                        0, total.cache_creation_tokens - r.cache_creation_tokens
                    ),
                    # Not ``result.total_cost_usd``: that is the session's cost so far, which
                    # a resumed session carries over; the turn's cost follows from its tokens.
                )
            )
        if self._output is not None and result is not None and self._error_kind is None:
            return [*events, *self._structured(result)]
        status = getattr(result, "api_error_status", None) if result else None
        kind = self._error_kind
        if kind in (None, "upstream"):
            kind = _kind_for_status(status) or kind
        if kind is None and result is not None and result.is_error:
            kind = "upstream"
        if result is None and kind is None:
            detail = f": {stderr_tail[-1][:300]}" if stderr_tail else ""
            return [
                *events,
                TurnError("cli_crashed", f"Claude Code ended without a result{detail}"),
            ]
        if kind is not None:
            text = self._error_text or "; ".join((result.errors or []) if result else [])
            text = text or (result.result if result and result.result else "") or "no details"
            if _UNKNOWN_MODEL in text:
                kind = "model_not_found"
            retry_after = None
            if kind == "rate_limit" and self._refused_until is not None:
                retry_after = max(1.0, self._refused_until - time.time())
            return [*events, TurnError(kind, text[:1000], retry_after=retry_after)]
        if self._message_open and self._streamed_text:
            # The streamed answer broke off and the CLI got the rest another way (its
            # non-streaming fallback): what was streamed is incomplete.
            message = "the upstream connection broke in the middle of the answer; retry the request"
            return [*events, TurnError("upstream", message)]
        if not self._streamed_text and result is not None and result.result:
            events.insert(0, TextDelta(result.result))
        reason = self._stop_reason or (result.stop_reason if result else None) or "end_turn"
        stop = _STOP_REASONS.get(reason, "end_turn")
        # A tool_use stop here means the model called a tool the CLI answered itself.
        return [*events, TurnEnd("end_turn" if stop == "tool_use" else stop)]

    def _structured(self, result: ResultMessage) -> list[AgentEvent]:
        """Return the structured answer of a turn, or its failure (never JSON that fails)."""
        output = self._output
        assert output is not None
        if result.subtype == "error_max_structured_output_retries" or (
            result.is_error and getattr(result, "structured_output", None) is None
        ):
            detail = "; ".join(result.errors or []) or str(result.result or result.subtype)
            return [TurnError("structured_output", detail[:1000])]
        value = getattr(result, "structured_output", None)
        if value is None:
            value = _json_answer("".join(self._held) or result.result or "", output)
        if value is None:
            return [
                TurnError(
                    "structured_output",
                    "the model answered in text, not with JSON that matches the schema",
                )
            ]
        if output.wrapped and isinstance(value, dict):
            value = value.get("value")
        return [TextDelta(json.dumps(value, ensure_ascii=False)), TurnEnd("end_turn")]


def _json_answer(text: str, output: OutputSchema) -> Any:
    """Return the answer if ``text`` is JSON valid against the schema (else ``None``)."""
    try:
        value = json.loads(text.strip())
    except ValueError:
        return None
    candidate = {"value": value} if output.wrapped else value
    try:
        jsonschema.validate(candidate, output.schema)
    except jsonschema.ValidationError:
        return None
    return candidate


def _usage_of(usage: dict[str, Any], *, output: bool) -> Usage:
    return Usage(
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0) if output else 0,
        cache_read_tokens=int(usage.get("cache_read_input_tokens") or 0),
        cache_creation_tokens=int(usage.get("cache_creation_input_tokens") or 0),
    )


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cache_read_tokens=a.cache_read_tokens + b.cache_read_tokens,
        cache_creation_tokens=a.cache_creation_tokens + b.cache_creation_tokens,
    )
