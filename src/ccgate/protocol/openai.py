"""OpenAI Chat Completions: wire models, request → turn, events → completion or chunks."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ccgate.engine.events import (
    AgentEvent,
    StopReason,
    TextDelta,
    TurnEnd,
    TurnError,
    Usage,
)
from ccgate.engine.models import ModelInfo
from ccgate.engine.turn import Message, Part, TextPart, TurnRequest
from ccgate.errors import GatewayError, InvalidRequest
from ccgate.protocol.common import check_system, merge_roles, new_id, url_image

__all__ = [
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

_THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


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
    functions: list[dict[str, Any]] | None = None
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
    if req.tools or req.functions:
        raise InvalidRequest(
            "client-defined tools are not supported by this ccgate version yet; "
            "send the request without 'tools'",
            param="tools",
        )
    if req.logprobs:
        raise InvalidRequest("logprobs are not available from Claude Code", param="logprobs")
    kind = (req.response_format or {}).get("type", "text")
    if kind != "text":
        raise InvalidRequest(
            f"response_format type '{kind}' cannot be enforced through Claude Code; "
            "ask for JSON in the prompt instead",
            param="response_format",
        )


def to_turn(req: ChatCompletionRequest, model: ModelInfo, requested: str) -> TurnRequest:
    """Translate a chat completion request into a turn, or raise InvalidRequest."""
    _refuse_meaning_changers(req)
    system: list[str] = []
    messages: list[Message] = []
    for i, msg in enumerate(req.messages):
        param = f"messages[{i}]"
        if msg.role in ("system", "developer"):
            text = "".join(p.text for p in _parts(msg.content, param) if isinstance(p, TextPart))
            system.append(text)
        elif msg.role in ("tool", "function") or msg.tool_calls:
            raise InvalidRequest(
                f"{param}: tool calls and tool results need client-tool support, which this "
                "ccgate version does not have yet",
                param=param,
            )
        else:
            role: Literal["user", "assistant"] = "user" if msg.role == "user" else "assistant"
            messages.append(Message(role, _parts(msg.content, f"{param}.content")))
    messages = merge_roles(messages)
    if not messages or messages[-1].role != "user":
        raise InvalidRequest(
            "the last message must come from the user (role 'user')", param="messages"
        )
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > 4:
        raise InvalidRequest("stop takes at most 4 sequences", param="stop")
    budget = _THINKING_BUDGETS.get(req.reasoning_effort or "")
    return TurnRequest(
        model=model.cli,
        requested_model=requested,
        messages=tuple(messages),
        system=check_system("\n\n".join(s for s in system if s) or None, "messages"),
        max_tokens=_clamp(req.max_completion_tokens or req.max_tokens, model.max_output),
        stop_sequences=tuple(stops),
        thinking_budget=budget,
    )


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


def completion_from_events(events: list[AgentEvent], model: str) -> dict[str, Any]:
    """Build a ``chat.completion`` from a finished turn's events."""
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    usage = next((e for e in events if isinstance(e, Usage)), None)
    end = next((e for e in events if isinstance(e, TurnEnd)), TurnEnd())
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
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

    def start(self) -> list[str]:
        """Return the opening chunk (the assistant role)."""
        self._started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def render(self, event: AgentEvent) -> list[str]:
        """Return the SSE lines for one event."""
        if isinstance(event, TextDelta):
            return [self._chunk({"content": event.text})]
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


def model_object(model: ModelInfo) -> dict[str, Any]:
    """Return a model as OpenAI's ``model`` object."""
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": "anthropic",
        "display_name": model.display_name,
        "aliases": list(model.aliases),
        "context_window": model.context_window,
        "max_output_tokens": model.max_output,
    }


def _data(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"
