"""OpenAI Chat Completions: wire models, request → turn, events → completion or chunks."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ccgate.engine.events import (
    AgentEvent,
    StopReason,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    TurnEnd,
    TurnError,
    Usage,
    calls_of,
    last_usage,
)
from ccgate.engine.models import ModelInfo
from ccgate.engine.turn import (
    Effort,
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
from ccgate.protocol.common import check_system, merge_roles, new_id, url_image
from ccgate.protocol.schemas import ANY_OBJECT, output_schema
from ccgate.protocol.tools import check_choice, check_tool_flow, check_tools, tool_spec

__all__ = [
    "REASONING_EFFORTS",
    "ChatCompletionRequest",
    "ChatStream",
    "completion_from_events",
    "error_body",
    "model_object",
    "to_turn",
]

FINISH_REASONS: dict[StopReason, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: OpenAI's ``reasoning_effort`` as Claude's adaptive thinking at an effort level;
#: ``none`` (or no value) runs the turn without thinking.
REASONING_EFFORTS: dict[str, Effort | None] = {
    "none": None,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
}


class _Loose(BaseModel):
    # Unknown fields are ignored, but known ones keep their JSON type: "stream": 0 or
    # "max_tokens": "5" is a 400, as the OpenAPI schema says, not quietly coerced.
    model_config = ConfigDict(extra="allow", strict=True)


class ImageURL(_Loose):
    url: str
    detail: str | None = None


class ContentPart(_Loose):
    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Loose):
    include_usage: bool = False


class ChatCompletionRequest(_Loose):
    """The body of ``POST /v1/chat/completions``; unknown harmless fields are ignored."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "sonnet",
                    "messages": [
                        {"role": "system", "content": "Answer briefly."},
                        {"role": "user", "content": "What is a gateway?"},
                    ],
                    "max_tokens": 200,
                }
            ]
        }
    )

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    reasoning_effort: str | None = None
    session_id: str | None = None


def _parts(content: str | list[ContentPart] | None, param: str) -> tuple[Part, ...]:
    if content is None:
        return ()
    if isinstance(content, str):
        return (TextPart(content),)
    parts: list[Part] = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        if part.type == "text":
            parts.append(TextPart(part.text or ""))
        elif part.type == "image_url" and part.image_url is not None:
            parts.append(url_image(part.image_url.url, f"{where}.image_url.url"))
        else:
            raise InvalidRequest(
                f"{where}: content parts of type '{part.type}' are not supported; "
                "use 'text' or 'image_url'",
                param=where,
            )
    return tuple(parts)


def _refuse_meaning_changers(req: ChatCompletionRequest) -> None:
    if req.n is not None and req.n > 1:
        raise InvalidRequest("n > 1 is not supported: ask once per choice", param="n")
    if req.functions or req.function_call:
        raise InvalidRequest(
            "'functions' and 'function_call' are deprecated and not supported; "
            "define the same functions in 'tools' (type 'function') and use 'tool_choice'",
            param="functions",
        )
    if req.logprobs:
        raise InvalidRequest("logprobs are not available from Claude Code", param="logprobs")


def _response_format(req: ChatCompletionRequest) -> OutputSchema | None:
    """Return the structured output ``response_format`` asks for (``None``: text)."""
    given = req.response_format
    kind = given.get("type", "text") if given is not None else "text"
    if kind == "text":
        return None
    if kind == "json_object":
        return output_schema(ANY_OBJECT, "response_format")
    spec = given.get("json_schema") if given is not None else None
    if kind == "json_schema" and isinstance(spec, dict):
        name = spec.get("name")
        return output_schema(
            spec.get("schema"),
            "response_format.json_schema.schema",
            name=name if isinstance(name, str) else None,
        )
    raise InvalidRequest(
        "response_format: {'type': 'text'}, {'type': 'json_object'} or {'type': "
        "'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}",
        param="response_format",
    )


def _tools(req: ChatCompletionRequest) -> tuple[ToolSpec, ...]:
    specs: list[ToolSpec] = []
    for i, tool in enumerate(req.tools or []):
        param = f"tools[{i}]"
        if tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise InvalidRequest(
                f"{param}: only tools of type 'function' with a 'function' object are "
                f"supported, got type {tool.get('type')!r}",
                param=param,
            )
        fn = tool["function"]
        schema = fn.get("parameters", {"type": "object", "properties": {}})
        specs.append(tool_spec(fn.get("name"), fn.get("description"), schema, param))
    return check_tools(specs, "tools")


def _choice(req: ChatCompletionRequest, tools: tuple[ToolSpec, ...]) -> ToolChoice:
    parallel = req.parallel_tool_calls is not False
    raw = req.tool_choice
    if raw is None or raw == "auto":
        return ToolChoice("auto", parallel=parallel)
    if raw in ("none", "required"):
        mode: Literal["none", "required"] = "none" if raw == "none" else "required"
        return check_choice(ToolChoice(mode, parallel=parallel), tools, "tool_choice")
    fn = raw.get("function") if isinstance(raw, dict) else None
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(fn, dict):
        name = fn.get("name")
        choice = ToolChoice("tool", name=str(name), parallel=parallel)
        return check_choice(choice, tools, "tool_choice")
    raise InvalidRequest(
        "tool_choice must be 'auto', 'none', 'required' or "
        '{"type": "function", "function": {"name": "..."}}',
        param="tool_choice",
    )


def _calls(msg: ChatMessage, param: str) -> tuple[ToolCallPart, ...]:
    calls: list[ToolCallPart] = []
    for j, call in enumerate(msg.tool_calls or []):
        where = f"{param}.tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        call_id = call.get("id") if isinstance(call, dict) else None
        if not isinstance(call_id, str) or not call_id or not isinstance(fn, dict):
            raise InvalidRequest(
                f"{where}: a tool call needs an 'id' and a 'function' with 'name' and 'arguments'",
                param=where,
            )
        name, raw = fn.get("name"), fn.get("arguments") or "{}"
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            args = None
        if not isinstance(name, str) or not isinstance(args, dict):
            raise InvalidRequest(
                f"{where}.function: 'name' must be a string and 'arguments' a JSON object "
                "(as a string)",
                param=where,
            )
        calls.append(ToolCallPart(call_id, name, args))
    return tuple(calls)


def _result(msg: ChatMessage, param: str, names: dict[str, str]) -> ToolResultPart:
    call_id = msg.tool_call_id
    if not call_id:
        raise InvalidRequest(
            f"{param}: a tool message needs the 'tool_call_id' of the call it answers",
            param=param,
        )
    if msg.name is not None and call_id in names and msg.name != names[call_id]:
        raise InvalidRequest(
            f"{param}: the result names the tool '{msg.name}', but the call '{call_id}' "
            f"was of '{names[call_id]}'",
            param=param,
        )
    parts = _parts(msg.content, f"{param}.content")
    if any(not isinstance(p, TextPart) for p in parts):
        raise InvalidRequest(f"{param}.content: a tool result may only hold text", param=param)
    return ToolResultPart(call_id, tuple(p for p in parts if isinstance(p, TextPart)))


def to_turn(req: ChatCompletionRequest, model: ModelInfo, requested: str) -> TurnRequest:
    """Translate a chat completion request into a turn, or raise InvalidRequest."""
    _refuse_meaning_changers(req)
    tools = _tools(req)
    choice = _choice(req, tools)
    system: list[str] = []
    items: list[tuple[str, Message]] = []
    names: dict[str, str] = {}
    for i, msg in enumerate(req.messages):
        param = f"messages[{i}]"
        if msg.role in ("system", "developer"):
            text = "".join(p.text for p in _parts(msg.content, param) if isinstance(p, TextPart))
            system.append(text)
        elif msg.role == "function":
            raise InvalidRequest(
                f"{param}: role 'function' is deprecated; answer tool calls with role 'tool'",
                param=param,
            )
        elif msg.role == "tool":
            items.append((param, Message("user", (_result(msg, param, names),))))
        elif msg.role == "assistant":
            calls = _calls(msg, param)
            names.update((c.id, c.name) for c in calls)
            items.append((param, Message("assistant", _parts(msg.content, param) + calls)))
        else:
            items.append((param, Message("user", _parts(msg.content, f"{param}.content"))))
    check_tool_flow(items, tools if req.tools is not None else None)
    messages = merge_roles([m for _, m in items])
    if not messages or messages[-1].role != "user":
        raise InvalidRequest(
            "the last message must come from the user (role 'user')", param="messages"
        )
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > 4:
        raise InvalidRequest("stop takes at most 4 sequences", param="stop")
    thinking, effort = _reasoning(req.reasoning_effort)
    return TurnRequest(
        model=model.cli,
        requested_model=requested,
        messages=tuple(messages),
        system=check_system("\n\n".join(s for s in system if s) or None, "messages"),
        max_tokens=_clamp(req.max_completion_tokens or req.max_tokens, model.max_output),
        stop_sequences=tuple(stops),
        thinking=thinking,
        effort=effort,
        tools=tools,
        tool_choice=choice,
        output=_response_format(req),
    )


def _reasoning(value: str | None) -> tuple[Thinking | None, Effort | None]:
    """Return the thinking and effort ``reasoning_effort`` asks for (none without it)."""
    if value is None:
        return None, None
    if value not in REASONING_EFFORTS:
        raise InvalidRequest(
            f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}, got {value!r}",
            param="reasoning_effort",
        )
    effort = REASONING_EFFORTS[value]
    return (None, None) if effort is None else (Thinking(), effort)


def _clamp(value: int | None, limit: int) -> int | None:
    return None if value is None else min(value, limit)


def _usage(usage: Usage | None) -> dict[str, Any]:
    u = usage or Usage()
    prompt = u.input_tokens + u.cache_read_tokens + u.cache_creation_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": u.output_tokens,
        "total_tokens": prompt + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
    }


def _tool_calls(events: list[AgentEvent]) -> list[dict[str, Any]]:
    return [
        {
            "id": call.tool_use_id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in calls_of(events)
    ]


def completion_from_events(events: list[AgentEvent], model: str) -> dict[str, Any]:
    """Build a ``chat.completion`` from a finished turn's (or segment's) events."""
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    usage = last_usage(events)
    end = next((e for e in events if isinstance(e, TurnEnd)), TurnEnd())
    calls = _tool_calls(events)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS[end.stop_reason],
            }
        ],
        "usage": _usage(usage),
    }


def error_body(error: GatewayError) -> dict[str, Any]:
    """Return OpenAI's error shape for ``error``."""
    return {
        "error": {
            "message": error.message,
            "type": error.openai_type,
            "param": error.param,
            "code": error.code,
        }
    }


class ChatStream:
    """Render a turn's events as ``chat.completion.chunk`` SSE lines."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self._id = new_id("chatcmpl-")
        self._created = int(time.time())
        self._model = model
        self._include_usage = include_usage
        self._usage: Usage | None = None
        self._started = False
        #: Tool call id -> (its index in tool_calls, whether arguments were sent).
        self._calls: dict[str, list[Any]] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> str:
        body = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self._include_usage:
            body["usage"] = None
        return _data(body)

    def ping(self) -> str:
        """Return a keep-alive: an SSE comment, which OpenAI's clients skip."""
        return ": ping\n\n"

    def start(self, first: Sequence[AgentEvent] = ()) -> list[str]:
        """Return the opening chunk (the assistant role); ``first`` is not needed here."""
        self._started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def render(self, event: AgentEvent) -> list[str]:
        """Return the SSE lines for one event."""
        if isinstance(event, TextDelta):
            return [self._chunk({"content": event.text})]
        if isinstance(event, ToolCallStart):
            self._calls[event.tool_use_id] = [len(self._calls), False]
            call = {
                "index": self._calls[event.tool_use_id][0],
                "id": event.tool_use_id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if isinstance(event, ToolCallDelta | ToolCallEnd) and event.tool_use_id in self._calls:
            state = self._calls[event.tool_use_id]
            if isinstance(event, ToolCallDelta) and event.partial_json:
                state[1] = True
                piece = event.partial_json
            elif isinstance(event, ToolCallEnd) and not state[1]:
                piece = "{}"  # a call without arguments still carries a JSON object
            else:
                return []
            return [
                self._chunk({"tool_calls": [{"index": state[0], "function": {"arguments": piece}}]})
            ]
        if isinstance(event, Usage):
            self._usage = event
        elif isinstance(event, TurnEnd):
            out = [self._chunk({}, FINISH_REASONS[event.stop_reason])]
            if self._include_usage:
                out.append(
                    _data(
                        {
                            "id": self._id,
                            "object": "chat.completion.chunk",
                            "created": self._created,
                            "model": self._model,
                            "system_fingerprint": None,
                            "choices": [],
                            "usage": _usage(self._usage),
                        }
                    )
                )
            return [*out, "data: [DONE]\n\n"]
        elif isinstance(event, TurnError):
            raise AssertionError("errors are rendered with error()")
        return []

    def error(self, error: GatewayError) -> list[str]:
        """Return the in-band error chunk that ends a started stream."""
        return [_data(error_body(error)), "data: [DONE]\n\n"]


def model_object(model: ModelInfo, listed_id: str | None = None) -> dict[str, Any]:
    """Return a model as OpenAI's ``model`` object (listed under ``listed_id``, an alias)."""
    return {
        "id": listed_id or model.id,
        "object": "model",
        "created": model.created,
        "owned_by": "anthropic",
        "display_name": model.display_name,
        "model": model.id,
        "current": model.current,
        "aliases": list(model.aliases),
        "context_window": model.context_window,
        "max_output_tokens": model.max_output,
    }


def _data(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"
