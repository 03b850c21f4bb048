"""Anthropic Messages: wire models, request → turn, events → message or SSE events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ccgate.engine.events import (
    AgentEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    TurnEnd,
    Usage,
    calls_of,
    last_usage,
)
from ccgate.engine.models import ModelInfo
from ccgate.engine.turn import (
    ImagePart,
    Message,
    OutputSchema,
    Part,
    TextPart,
    Thinking,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    TurnRequest,
)
from ccgate.errors import GatewayError, InvalidRequest
from ccgate.protocol.common import (
    check_image_base64,
    check_system,
    merge_roles,
    new_id,
    url_image,
)
from ccgate.protocol.schemas import output_schema
from ccgate.protocol.tools import check_choice, check_tool_flow, check_tools, tool_spec

__all__ = [
    "SYSTEM_NOTE_CLOSE",
    "SYSTEM_NOTE_OPEN",
    "CountTokensRequest",
    "MessageStream",
    "MessagesRequest",
    "count_tokens",
    "error_body",
    "message_from_events",
    "model_info",
    "model_list",
    "shows_thinking",
    "to_turn",
]


#: How an inline system message reaches the model: as Claude Code words one in a user turn.
SYSTEM_NOTE_OPEN = "<system-reminder>"
SYSTEM_NOTE_CLOSE = "</system-reminder>"


class _Loose(BaseModel):
    # Unknown fields are ignored, but known ones keep their JSON type: "stream": 0 or
    # "max_tokens": "5" is a 400, as the OpenAPI schema says, not quietly coerced.
    model_config = ConfigDict(extra="allow", strict=True)


class ContentBlock(_Loose):
    type: str
    text: str | None = None
    source: dict[str, Any] | None = None
    # tool_use
    id: str | None = None
    name: str | None = None
    input: Any = None
    # tool_result
    tool_use_id: str | None = None
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None


class InputMessage(_Loose):
    # ``system``: an inline system message (Claude Code sends its environment that way).
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class SystemBlock(_Loose):
    type: Literal["text"] = "text"
    text: str


#: Thinking displays that return no thinking text: ``omitted`` (signatures only), and
#: ``updates``, which Claude Code asks for in its place (short progress notes, not the text).
_HIDDEN_THINKING = ("omitted", "updates")


class ThinkingParam(_Loose):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=1024)
    # See ``_HIDDEN_THINKING``; any other display shows the text (summarized).
    display: str | None = None


class OutputConfig(_Loose):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: dict[str, Any] | None = None


class CountTokensRequest(_Loose):
    """The body of ``POST /v1/messages/count_tokens``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model": "sonnet", "messages": [{"role": "user", "content": "Hello"}]}]
        }
    )

    model: str | None = None
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[SystemBlock] | None = None
    tools: list[dict[str, Any]] | None = None


class MessagesRequest(CountTokensRequest):
    """The body of ``POST /v1/messages``; unknown harmless fields are ignored."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "sonnet",
                    "max_tokens": 200,
                    "system": "Answer briefly.",
                    "messages": [{"role": "user", "content": "What is a gateway?"}],
                }
            ]
        }
    )

    max_tokens: int = Field(ge=1)
    stream: bool = False
    stop_sequences: list[str] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: ThinkingParam | None = None
    output_config: OutputConfig | None = None
    #: The beta field ``output_config.format`` replaced (structured outputs).
    output_format: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    session_id: str | None = None


def _image(block: ContentBlock, param: str) -> Part:
    source = block.source or {}
    kind = source.get("type")
    if kind == "base64":
        return check_image_base64(
            str(source.get("media_type")), str(source.get("data", "")), f"{param}.source"
        )
    if kind == "url":
        return url_image(str(source.get("url", "")), f"{param}.source.url")
    raise InvalidRequest(f"{param}.source: type must be 'base64' or 'url'", param=param)


def _parts(content: str | list[ContentBlock], param: str) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (TextPart(content),)
    parts: list[Part] = []
    for i, block in enumerate(content):
        where = f"{param}.{i}"
        if block.type == "text":
            parts.append(TextPart(block.text or ""))
        elif block.type == "image":
            parts.append(_image(block, where))
        elif block.type in ("thinking", "redacted_thinking"):
            continue  # earlier thinking is the model's own; it is not resent
        elif block.type == "tool_use":
            parts.append(_tool_use(block, where))
        elif block.type == "tool_result":
            parts.append(_tool_result(block, where))
        else:
            raise InvalidRequest(
                f"{where}: content blocks of type '{block.type}' are not supported; "
                "use 'text', 'image', 'tool_use' or 'tool_result'",
                param=where,
            )
    return tuple(parts)


def _system_note(content: str | list[ContentBlock], param: str) -> tuple[Part, ...]:
    """Return an inline system message as a ``<system-reminder>`` text of the user's turn.

    That is how Claude Code itself words a system message for an upstream that
    refuses them, and it keeps the note where it was in the conversation while
    the system prompt (which names a conversation and its warm process) stays
    the same from turn to turn.
    """
    if isinstance(content, str):
        texts = [content]
    else:
        texts = []
        for i, block in enumerate(content):
            if block.type != "text":
                where = f"{param}.{i}"
                raise InvalidRequest(
                    f"{where}: a system message may hold only 'text' blocks, not '{block.type}'",
                    param=where,
                )
            texts.append(block.text or "")
    text = "\n\n".join(t for t in texts if t.strip())
    if not text:
        return ()
    return (TextPart(f"{SYSTEM_NOTE_OPEN}\n{text}\n{SYSTEM_NOTE_CLOSE}"),)


def _message(message: InputMessage, param: str) -> Message:
    if message.role == "system":
        return Message("user", _system_note(message.content, param))
    return Message(message.role, _parts(message.content, param))


def _tool_use(block: ContentBlock, where: str) -> ToolCallPart:
    if not block.id or not block.name or not isinstance(block.input, dict):
        raise InvalidRequest(
            f"{where}: a tool_use block needs 'id', 'name' and an 'input' object", param=where
        )
    return ToolCallPart(block.id, block.name, block.input)


def _tool_result(block: ContentBlock, where: str) -> ToolResultPart:
    if not block.tool_use_id:
        raise InvalidRequest(f"{where}: a tool_result block needs 'tool_use_id'", param=where)
    content: list[TextPart | ImagePart] = []
    raw = block.content
    if isinstance(raw, str):
        content.append(TextPart(raw))
    for j, item in enumerate(raw if isinstance(raw, list) else []):
        inner = ContentBlock.model_validate(item) if isinstance(item, dict) else None
        param = f"{where}.content.{j}"
        if inner is not None and inner.type == "text":
            content.append(TextPart(inner.text or ""))
        elif inner is not None and inner.type == "image":
            image = _image(inner, param)
            if not isinstance(image, ImagePart) or image.data is None:
                raise InvalidRequest(
                    f"{param}: images in tool results must be base64 data", param=param
                )
            content.append(image)
        else:
            kind = inner.type if inner is not None else type(item).__name__
            raise InvalidRequest(
                f"{param}: tool results may hold 'text' and 'image' blocks, not '{kind}'",
                param=param,
            )
    return ToolResultPart(block.tool_use_id, tuple(content), bool(block.is_error))


def system_text(system: str | list[SystemBlock] | None) -> str | None:
    """Return the system prompt as one text."""
    if system is None:
        return None
    if isinstance(system, str):
        return system or None
    return "\n\n".join(b.text for b in system if b.text) or None


def _tools(req: MessagesRequest) -> tuple[ToolSpec, ...]:
    # Checked first: a client that searches its tools (Claude Code) reads "defer_loading"
    # in the refusal and sends its tools again without deferring any.
    for i, tool in enumerate(req.tools or []):
        if tool.get("defer_loading"):
            raise InvalidRequest(
                f"tools.{i}: defer_loading (tool search) is not supported; send every tool "
                "without it",
                param=f"tools.{i}",
            )
    specs: list[ToolSpec] = []
    for i, tool in enumerate(req.tools or []):
        param = f"tools.{i}"
        kind = tool.get("type", "custom")
        if kind not in ("custom", None):
            raise InvalidRequest(
                f"{param}: tools of type '{kind}' (server or built-in tools) are not "
                "supported; define custom tools with name, description and input_schema",
                param=param,
            )
        if "input_schema" not in tool:
            raise InvalidRequest(f"{param}: a tool needs an 'input_schema'", param=param)
        specs.append(
            tool_spec(tool.get("name"), tool.get("description"), tool["input_schema"], param)
        )
    return check_tools(specs, "tools")


def _choice(req: MessagesRequest, tools: tuple[ToolSpec, ...]) -> ToolChoice:
    raw = req.tool_choice
    if raw is None:
        return ToolChoice()
    parallel = not raw.get("disable_parallel_tool_use", False)
    kind = raw.get("type")
    if kind == "auto":
        choice = ToolChoice("auto", parallel=parallel)
    elif kind == "none":
        choice = ToolChoice("none", parallel=parallel)
    elif kind == "any":
        choice = ToolChoice("required", parallel=parallel)
    elif kind == "tool" and isinstance(raw.get("name"), str):
        choice = ToolChoice("tool", name=raw["name"], parallel=parallel)
    else:
        raise InvalidRequest(
            "tool_choice.type must be 'auto', 'any', 'none' or 'tool' (with 'name')",
            param="tool_choice",
        )
    return check_choice(choice, tools, "tool_choice")


def to_turn(req: MessagesRequest, model: ModelInfo, requested: str) -> TurnRequest:
    """Translate a Messages request into a turn, or raise InvalidRequest."""
    tools = _tools(req)
    choice = _choice(req, tools)
    spoken: list[tuple[str, Message]] = []
    sent: list[Message] = []
    for i, raw in enumerate(req.messages):
        message = _message(raw, f"messages.{i}.content")
        if raw.role != "system":
            # System notes join the user turn they sit in; they neither make nor answer calls.
            spoken.append((f"messages.{i}", message))
        if message.parts or raw.role != "system":
            sent.append(message)
    check_tool_flow(spoken, tools if req.tools is not None else None)
    messages = merge_roles(sent)
    if not messages:
        raise InvalidRequest("messages: there is no user message", param="messages")
    if messages[-1].role != "user":
        raise InvalidRequest(
            "messages: the last message must have role 'user' (prefilling the assistant's "
            "reply is not possible through Claude Code)",
            param="messages",
        )
    thinking = _thinking(req)
    metadata = {k: str(v) for k, v in (req.metadata or {}).items() if isinstance(v, str)}
    return TurnRequest(
        model=model.cli,
        requested_model=requested,
        messages=tuple(messages),
        system=check_system(system_text(req.system), "system"),
        max_tokens=min(req.max_tokens, model.max_output),
        stop_sequences=tuple(req.stop_sequences or ()),
        thinking=thinking,
        effort=req.output_config.effort if req.output_config else None,
        metadata=metadata,
        tools=tools,
        tool_choice=choice,
        output=_output(req),
    )


def _output(req: MessagesRequest) -> OutputSchema | None:
    """Return the structured output ``output_config.format`` (or ``output_format``) asks for."""
    given = req.output_config.format if req.output_config else None
    param = "output_config.format"
    if req.output_format is not None:
        if given is not None:
            raise InvalidRequest(
                "give output_config.format or output_format (deprecated), not both",
                param="output_format",
            )
        given, param = req.output_format, "output_format"
    if given is None:
        return None
    if given.get("type") != "json_schema":
        raise InvalidRequest(
            f"{param}.type: 'json_schema' (with a 'schema'); got {str(given.get('type'))[:40]!r}",
            param=param,
        )
    return output_schema(given.get("schema"), f"{param}.schema")


def shows_thinking(turn: TurnRequest) -> bool:
    """Tell whether the answer carries the thinking text (not with ``display: omitted``)."""
    return turn.thinking is None or turn.thinking.display != "omitted"


def _thinking(req: MessagesRequest) -> Thinking | None:
    """Return the thinking a request asks for: ``enabled`` (with its budget) or ``adaptive``."""
    if req.thinking is None or req.thinking.type == "disabled":
        return None
    display: Literal["summarized", "omitted"] = (
        "omitted" if req.thinking.display in _HIDDEN_THINKING else "summarized"
    )
    if req.thinking.type == "adaptive":
        return Thinking(display=display)
    budget = req.thinking.budget_tokens or 1024
    if budget >= req.max_tokens:
        raise InvalidRequest(
            "thinking.budget_tokens must be less than max_tokens", param="thinking"
        )
    return Thinking(budget, display)


def count_tokens(req: CountTokensRequest) -> int:
    """Estimate the input tokens of a request (about four characters a token)."""
    chars = len(system_text(req.system) or "")
    for message in req.messages:
        if isinstance(message.content, str):
            chars += len(message.content)
        else:
            for block in message.content:
                chars += len(block.text or "") + (1600 * 4 if block.type == "image" else 0)
                if block.type == "tool_use":
                    chars += len(json.dumps(block.input)) + len(block.name or "")
                elif block.type == "tool_result":
                    chars += len(json.dumps(block.content))
    chars += len(json.dumps(req.tools)) if req.tools else 0
    return max(1, chars // 4)


def _usage(usage: Usage | None) -> dict[str, Any]:
    u = usage or Usage()
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_creation_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
    }


def message_from_events(
    events: list[AgentEvent], model: str, *, thinking_text: bool = True
) -> dict[str, Any]:
    """Build a ``message`` from a finished turn's (or segment's) events.

    ``thinking_text`` False (the client asked for ``display: omitted``) keeps the
    thinking blocks with their signatures and without their text.
    """
    content: list[dict[str, Any]] = []
    calls = {c.tool_use_id: c for c in calls_of(events)}
    for event in events:
        if isinstance(event, ToolCallStart):
            call = calls[event.tool_use_id]
            content.append(
                {
                    "type": "tool_use",
                    "id": call.tool_use_id,
                    "name": call.name,
                    "input": call.input(),
                }
            )
        if isinstance(event, ThinkingDelta):
            if not content or content[-1]["type"] != "thinking":
                content.append({"type": "thinking", "thinking": "", "signature": ""})
            if thinking_text:
                content[-1]["thinking"] += event.text
            if event.signature:
                content[-1]["signature"] = event.signature
        elif isinstance(event, TextDelta):
            if not content or content[-1]["type"] != "text":
                content.append({"type": "text", "text": ""})
            content[-1]["text"] += event.text
    usage = last_usage(events)
    end = next((e for e in events if isinstance(e, TurnEnd)), TurnEnd())
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": end.stop_reason,
        "stop_sequence": end.stop_sequence,
        "usage": _usage(usage),
    }


def model_info(model: ModelInfo, listed_id: str | None = None) -> dict[str, Any]:
    """Return a model as the Anthropic Models API's object."""
    created = datetime.fromtimestamp(model.created, tz=UTC).isoformat().replace("+00:00", "Z")
    return {
        "type": "model",
        "id": listed_id or model.id,
        "display_name": model.display_name,
        "created_at": created,
    }


def model_list(entries: list[tuple[str, ModelInfo]]) -> dict[str, Any]:
    """Return ``GET /v1/models`` in the Anthropic Models API's shape (one page)."""
    data = [model_info(model, listed) for listed, model in entries]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def error_body(error: GatewayError) -> dict[str, Any]:
    """Return Anthropic's error shape for ``error``."""
    return {"type": "error", "error": {"type": error.anthropic_type, "message": error.message}}


class MessageStream:
    """Render a turn's events as the Messages API's SSE event sequence."""

    def __init__(self, model: str, *, thinking_text: bool = True) -> None:
        self._model = model
        self._thinking_text = thinking_text
        self._index = -1
        self._open: str | None = None
        self._usage: Usage | None = None

    def start(self, first: Sequence[AgentEvent] = ()) -> list[str]:
        """Return ``message_start`` and the first ``ping``.

        ``first`` are the events already read; the usage the model reported when
        its message started gives ``message_start`` its real input token counts.
        """
        started = next((e for e in first if isinstance(e, Usage)), None)
        usage = _usage(started) if started is not None else {"input_tokens": 0}
        usage["output_tokens"] = 0
        message: dict[str, Any] = {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return [_event("message_start", {"message": message}), self.ping()]

    def ping(self) -> str:
        """Return a keep-alive ``ping``."""
        return _event("ping", {})

    def _switch(self, kind: str, block: dict[str, Any] | None = None) -> list[str]:
        if self._open == kind and block is None:
            return []
        out = self._close()
        self._index += 1
        self._open = kind
        if block is None:
            block = (
                {"type": "thinking", "thinking": "", "signature": ""}
                if kind == "thinking"
                else {"type": "text", "text": ""}
            )
        out.append(_event("content_block_start", {"index": self._index, "content_block": block}))
        return out

    def _close(self) -> list[str]:
        if self._open is None:
            return []
        self._open = None
        return [_event("content_block_stop", {"index": self._index})]

    def _delta(self, delta: dict[str, Any]) -> str:
        return _event("content_block_delta", {"index": self._index, "delta": delta})

    def render(self, event: AgentEvent) -> list[str]:
        """Return the SSE events for one agent event."""
        if isinstance(event, TextDelta):
            return [*self._switch("text"), self._delta({"type": "text_delta", "text": event.text})]
        if isinstance(event, ThinkingDelta):
            out = self._switch("thinking")
            if event.text and self._thinking_text:
                out.append(self._delta({"type": "thinking_delta", "thinking": event.text}))
            if event.signature:
                out.append(self._delta({"type": "signature_delta", "signature": event.signature}))
            return out
        if isinstance(event, ToolCallStart):
            block = {"type": "tool_use", "id": event.tool_use_id, "name": event.name, "input": {}}
            return self._switch("tool_use", block)
        if isinstance(event, ToolCallDelta) and self._open == "tool_use":
            if not event.partial_json:
                return []
            return [self._delta({"type": "input_json_delta", "partial_json": event.partial_json})]
        if isinstance(event, ToolCallEnd) and self._open == "tool_use":
            return self._close()
        if isinstance(event, Usage):
            self._usage = event
        elif isinstance(event, TurnEnd):
            delta = {"stop_reason": event.stop_reason, "stop_sequence": event.stop_sequence}
            return [
                *self._close(),
                _event("message_delta", {"delta": delta, "usage": _usage(self._usage)}),
                _event("message_stop", {}),
            ]
        return []

    def error(self, error: GatewayError) -> list[str]:
        """Return the in-band ``error`` event that ends a started stream."""
        return [_event("error", error_body(error))]


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data}, separators=(',', ':'))}\n\n"
