"""OpenAI Responses: wire models, input items → turn, events → response object or SSE events.

A response's *conversation* is a list of items in the Responses API's own shape:
the input items the client sent (messages, ``function_call``,
``function_call_output``) and the output items ccgate answered with (``message``,
``function_call``, ``reasoning``). A request with ``previous_response_id`` continues
the conversation of that stored response: its items come first, then the new
input. Everything here is pure: the route (``api.routes.responses``) loads and
stores responses.

Output item ids are derived from the response id and the item's position
(``msg_<id>_0``, ``fc_<id>_1``, ...), so the streamed events and the stored
response name the same items.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    TurnError,
    Usage,
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
from ccgate.protocol.common import check_system, data_url_image, merge_roles, url_image
from ccgate.protocol.openai import REASONING_EFFORTS
from ccgate.protocol.schemas import ANY_OBJECT, output_schema
from ccgate.protocol.tools import check_choice, check_tool_flow, check_tools, tool_spec

__all__ = [
    "BUILT_IN_TOOLS",
    "EVENTS",
    "ResponseStream",
    "ResponsesRequest",
    "conversation_items",
    "conversation_of",
    "count_input_tokens",
    "error_event_body",
    "output_items",
    "response_object",
    "response_of_item",
    "stored_input",
    "to_turn",
]

#: Every event a streamed response may carry, in the order they may come.
EVENTS = (
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.reasoning_summary_part.added",
    "response.reasoning_summary_text.delta",
    "response.reasoning_summary_text.done",
    "response.reasoning_summary_part.done",
    "response.output_item.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
)

#: OpenAI's hosted tools: ccgate has none of them (the client's functions are its tools).
BUILT_IN_TOOLS = {
    "web_search": "web search",
    "web_search_preview": "web search",
    "web_search_2025_08_26": "web search",
    "web_search_preview_2025_03_11": "web search",
    "file_search": "file search",
    "computer_use_preview": "computer use",
    "computer": "computer use",
    "code_interpreter": "the code interpreter",
    "image_generation": "image generation",
    "mcp": "remote MCP servers",
    "local_shell": "the local shell tool",
    "shell": "the shell tool",
    "apply_patch": "the apply_patch tool",
}


class _Loose(BaseModel):
    # Unknown fields are ignored; known ones keep their JSON type.
    model_config = ConfigDict(extra="allow", strict=True)


class Reasoning(_Loose):
    effort: str | None = None
    summary: str | None = None


class TextConfig(_Loose):
    format: dict[str, Any] | None = None
    verbosity: str | None = None


class ResponsesRequest(_Loose):
    """The body of ``POST /v1/responses``; unknown harmless fields are ignored."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "sonnet",
                    "instructions": "Answer briefly.",
                    "input": "What is a gateway?",
                }
            ]
        }
    )

    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    metadata: dict[str, str] | None = None
    temperature: float | int | None = Field(None, ge=0, le=2)
    top_p: float | int | None = Field(None, ge=0, le=1)
    reasoning: Reasoning | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = Field(None, max_length=200)
    background: bool = False
    text: TextConfig | None = None
    include: list[str] | None = None
    truncation: str | None = None
    user: str | None = None
    conversation: str | dict[str, Any] | None = None
    session_id: str | None = None


# -- request → turn -------------------------------------------------------------------


def _text_of(content: Any, param: str, *, images: bool) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (TextPart(content),)
    if not isinstance(content, list):
        raise InvalidRequest(f"{param}: content is a string or a list of parts", param=param)
    parts: list[Part] = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"{where}.text: a string", param=where)
            parts.append(TextPart(text))
        elif kind == "refusal":
            parts.append(TextPart(str(part.get("refusal") or "")))
        elif kind == "input_image" and images:
            url = part.get("image_url")
            if not isinstance(url, str):
                raise InvalidRequest(
                    f"{where}: an input_image needs an 'image_url' (a data: URL or an "
                    "http(s) URL); file_id is not available through ccgate",
                    param=where,
                )
            image = (
                data_url_image(url, f"{where}.image_url")
                if url.startswith("data:")
                else url_image(url, f"{where}.image_url")
            )
            parts.append(image)
        else:
            allowed = "input_text or input_image" if images else "output_text or refusal"
            raise InvalidRequest(
                f"{where}: content parts of type {kind!r} are not supported here; use {allowed}",
                param=where,
            )
    return tuple(parts)


def _arguments(raw: Any, where: str) -> dict[str, Any]:
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        args = None
    if not isinstance(args, dict):
        raise InvalidRequest(
            f"{where}.arguments: a JSON object (as a string) of the call's arguments", param=where
        )
    return args


def _output_text(output: Any, where: str) -> tuple[TextPart, ...]:
    if isinstance(output, str):
        return (TextPart(output),)
    if isinstance(output, list):
        texts = []
        for i, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
                raise InvalidRequest(
                    f"{where}.output[{i}]: a function's output may only hold text", param=where
                )
            texts.append(TextPart(str(part.get("text") or "")))
        return tuple(texts)
    raise InvalidRequest(f"{where}.output: the function's output as a string", param=where)


def conversation_items(
    items: Sequence[dict[str, Any]], param: str = "input"
) -> tuple[list[str], list[tuple[str, Message]]]:
    """Return the system texts and the messages of a conversation's items (or raise 400)."""
    system: list[str] = []
    out: list[tuple[str, Message]] = []
    for i, item in enumerate(items):
        where = f"{param}[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where}: an input item is an object", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            content = item.get("content")
            if role in ("system", "developer"):
                text = "".join(
                    p.text
                    for p in _text_of(content, where, images=False)
                    if isinstance(p, TextPart)
                )
                system.append(text)
            elif role == "user":
                out.append(
                    (where, Message("user", _text_of(content, f"{where}.content", images=True)))
                )
            elif role == "assistant":
                parts = _text_of(content, f"{where}.content", images=False)
                out.append((where, Message("assistant", parts)))
            else:
                raise InvalidRequest(
                    f"{where}.role: 'user', 'assistant', 'system' or 'developer'", param=where
                )
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not call_id or not isinstance(name, str):
                raise InvalidRequest(
                    f"{where}: a function_call needs 'call_id', 'name' and 'arguments'",
                    param=where,
                )
            call = ToolCallPart(call_id, name, _arguments(item.get("arguments") or "{}", where))
            out.append((where, Message("assistant", (call,))))
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequest(
                    f"{where}: a function_call_output needs the 'call_id' of its call", param=where
                )
            result = ToolResultPart(call_id, _output_text(item.get("output"), where))
            out.append((where, Message("user", (result,))))
        elif kind == "reasoning":
            continue  # Claude's thinking is not handed back as text
        elif kind == "item_reference":
            raise InvalidRequest(
                f"{where}: item_reference is not supported; continue with "
                "previous_response_id, or send the items themselves",
                param=where,
            )
        else:
            raise InvalidRequest(
                f"{where}: input items of type {kind!r} are not supported; use messages, "
                "function_call and function_call_output",
                param=where,
            )
    return system, out


def _tools(req: ResponsesRequest) -> tuple[ToolSpec, ...]:
    specs: list[ToolSpec] = []
    for i, tool in enumerate(req.tools or []):
        param = f"tools[{i}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind in BUILT_IN_TOOLS:
            raise InvalidRequest(
                f"{param}: the built-in OpenAI tool {kind!r} ({BUILT_IN_TOOLS[kind]}) is not "
                "available through ccgate; define your own function tool instead",
                param=param,
                code="unsupported_tool",
            )
        if kind != "function":
            raise InvalidRequest(
                f"{param}: tools of type {kind!r} are not supported; use type 'function'",
                param=param,
                code="unsupported_tool",
            )
        schema = tool.get("parameters") or {"type": "object", "properties": {}}
        specs.append(tool_spec(tool.get("name"), tool.get("description"), schema, param))
    return check_tools(specs, "tools")


def _choice(req: ResponsesRequest, tools: tuple[ToolSpec, ...]) -> ToolChoice:
    parallel = req.parallel_tool_calls is not False
    raw = req.tool_choice
    if raw is None or raw == "auto":
        return ToolChoice("auto", parallel=parallel)
    if raw in ("none", "required"):
        mode: Literal["none", "required"] = "none" if raw == "none" else "required"
        return check_choice(ToolChoice(mode, parallel=parallel), tools, "tool_choice")
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str):
        choice = ToolChoice("tool", name=raw["name"], parallel=parallel)
        return check_choice(choice, tools, "tool_choice")
    if isinstance(raw, dict) and raw.get("type") in BUILT_IN_TOOLS:
        raise InvalidRequest(
            f"tool_choice: the built-in OpenAI tool {raw['type']!r} is not available through "
            "ccgate",
            param="tool_choice",
        )
    raise InvalidRequest(
        "tool_choice must be 'auto', 'none', 'required' or "
        '{"type": "function", "name": "..."}',
        param="tool_choice",
    )


def _reasoning(req: ResponsesRequest) -> tuple[Thinking | None, Effort | None]:
    effort = req.reasoning.effort if req.reasoning else None
    if effort is None:
        return None, None
    if effort not in REASONING_EFFORTS:
        raise InvalidRequest(
            f"reasoning.effort: one of {', '.join(REASONING_EFFORTS)}; got {effort[:40]!r}",
            param="reasoning.effort",
        )
    level = REASONING_EFFORTS[effort]
    if level is None:
        return None, None
    # The thinking's text comes back (as a reasoning summary) only when asked for.
    summary = req.reasoning.summary if req.reasoning else None
    return Thinking(display="summarized" if summary else "omitted"), level


def input_items(req: ResponsesRequest) -> list[dict[str, Any]]:
    """Return the request's input as items (a string is one user message)."""
    if isinstance(req.input, str):
        return [{"type": "message", "role": "user", "content": req.input}]
    return [dict(item) for item in req.input]


def to_turn(
    req: ResponsesRequest,
    model: ModelInfo,
    requested: str,
    history: Sequence[dict[str, Any]] = (),
    new_items: Sequence[dict[str, Any]] | None = None,
) -> TurnRequest:
    """Translate a request (after the stored ``history`` it continues) into a turn;
    ``new_items`` are its input items with references resolved (default: as sent)."""
    if req.conversation is not None:
        raise InvalidRequest(
            "conversation objects are not supported; continue with previous_response_id",
            param="conversation",
        )
    tools = _tools(req)
    choice = _choice(req, tools)
    new = list(new_items) if new_items is not None else input_items(req)
    if not new:
        raise InvalidRequest("input: the new message (a string or a list of items)", param="input")
    old_system, old = conversation_items(history, "previous_response_id")
    system, items = conversation_items(new)
    flow = _merged([*old, *items])
    check_tool_flow(flow, tools if req.tools is not None else None)
    messages = [m for _, m in flow]
    if not messages or messages[-1].role != "user":
        raise InvalidRequest(
            "input: the last item must be a user message or a function_call_output",
            param="input",
        )
    instructions = [req.instructions] if req.instructions else []
    thinking, effort = _reasoning(req)
    max_tokens = req.max_output_tokens
    if max_tokens is not None:
        max_tokens = min(max_tokens, model.max_output)
    return TurnRequest(
        model=model.cli,
        requested_model=requested,
        messages=tuple(messages),
        system=check_system("\n\n".join([*instructions, *old_system, *system]) or None, "input"),
        max_tokens=max_tokens,
        thinking=thinking,
        effort=effort,
        tools=tools,
        tool_choice=choice,
        metadata=dict(req.metadata or {}),
        output=_text_format(req),
    )


def _text_format(req: ResponsesRequest) -> OutputSchema | None:
    """Return the structured output ``text.format`` asks for (``None``: text)."""
    given = req.text.format if req.text else None
    kind = given.get("type", "text") if given is not None else "text"
    if kind == "text":
        return None
    if kind == "json_object":
        return output_schema(ANY_OBJECT, "text.format")
    if kind == "json_schema" and given is not None:
        name = given.get("name")
        return output_schema(
            given.get("schema"), "text.format.schema", name=name if isinstance(name, str) else None
        )
    raise InvalidRequest(
        "text.format: {'type': 'text'}, {'type': 'json_object'} or {'type': 'json_schema', "
        "'name': ..., 'schema': {...}}",
        param="text.format",
    )


def _merged(items: list[tuple[str, Message]]) -> list[tuple[str, Message]]:
    """Merge consecutive items of one role (a message and the calls after it are one
    assistant message), each keeping the place of its first item."""
    out: list[tuple[str, Message]] = []
    for where, message in items:
        if out and out[-1][1].role == message.role:
            first, previous = out[-1]
            out[-1] = (first, merge_roles([previous, message])[0])
        else:
            out.append((where, message))
    return out


def count_input_tokens(turn: TurnRequest) -> int:
    """Estimate a turn's input tokens (about four characters a token, 1,600 an image)."""
    chars = len(turn.system or "")
    for message in turn.messages:
        for part in message.parts:
            if isinstance(part, TextPart):
                chars += len(part.text)
            elif isinstance(part, ToolCallPart):
                chars += len(part.name) + len(json.dumps(part.input))
            elif isinstance(part, ToolResultPart):
                chars += sum(len(p.text) for p in part.content if isinstance(p, TextPart))
            else:
                chars += 1600 * 4
    for tool in turn.tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(tool.input_schema))
    return max(1, chars // 4)


#: An item id ccgate made: ``<kind>_[in_]<response hex>_<n>`` (see ``_item_id``).
_ITEM_ID = re.compile(r"[a-z]+_(?:in_)?([0-9a-f]{32})_[0-9]+")
#: Output item types that are part of the conversation a later response continues.
_KEPT = frozenset({"message", "function_call", "reasoning"})


def stored_input(response_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the input items as stored: each with an id (the API lists input items by
    id) and its content as parts."""
    hexpart = response_id.removeprefix("resp_")
    out = []
    for n, item in enumerate(items):
        kept = dict(item)
        kept.setdefault("type", "message")
        if "id" not in kept:
            prefix = {"message": "msg", "function_call": "fc"}.get(kept["type"], "item")
            kept["id"] = f"{prefix}_in_{hexpart}_{n}"
        if kept["type"] == "message":
            kept.setdefault("status", "completed")
            if isinstance(kept.get("content"), str):
                kind = "output_text" if kept.get("role") == "assistant" else "input_text"
                kept["content"] = [{"type": kind, "text": kept["content"]}]
        out.append(kept)
    return out


def response_of_item(item_id: str) -> str | None:
    """Return the id of the response an item id ccgate made belongs to."""
    match = _ITEM_ID.fullmatch(item_id)
    return "resp_" + match.group(1) if match is not None else None


def conversation_of(
    stored_input: list[dict[str, Any]], body: dict[str, Any]
) -> list[dict[str, Any]]:
    """Return a stored response's part of a conversation: its input, then its output."""
    return [*stored_input, *(i for i in body.get("output", []) if i.get("type") in _KEPT)]


# -- events → output items ------------------------------------------------------------


def _item_id(response_id: str, kind: str, index: int) -> str:
    return f"{kind}_{response_id.removeprefix('resp_')}_{index}"


@dataclass
class _Item:
    kind: Literal["message", "function_call", "reasoning"]
    id: str
    text: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""

    def as_json(self, status: str = "completed") -> dict[str, Any]:
        joined = "".join(self.text)
        if self.kind == "message":
            content = [{"type": "output_text", "text": joined, "annotations": [], "logprobs": []}]
            return {
                "id": self.id,
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": content,
            }
        if self.kind == "function_call":
            return {
                "id": self.id,
                "type": "function_call",
                "status": status,
                "call_id": self.call_id,
                "name": self.name,
                "arguments": joined or "{}",
            }
        return {
            "id": self.id,
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": joined}] if joined else [],
        }


class _Items:
    """Output items built from events in order (the stream and the stored response alike)."""

    def __init__(self, response_id: str, *, summaries: bool = True) -> None:
        self._response_id = response_id
        #: Whether the model's thinking becomes reasoning items (``reasoning.summary``).
        self._summaries = summaries
        self.items: list[_Item] = []
        self._calls: dict[str, _Item] = {}

    def _open(self, kind: Literal["message", "function_call", "reasoning"]) -> _Item:
        prefix = {"message": "msg", "function_call": "fc", "reasoning": "rs"}[kind]
        item = _Item(kind, _item_id(self._response_id, prefix, len(self.items)))
        self.items.append(item)
        return item

    @property
    def current(self) -> _Item | None:
        return self.items[-1] if self.items else None

    def feed(self, event: AgentEvent) -> tuple[_Item | None, _Item | None, str]:
        """Apply one event; return (the item it closed, the item it opened, its text)."""
        current = self.current
        if isinstance(event, ThinkingDelta) and not self._summaries:
            return None, None, ""
        if isinstance(event, TextDelta | ThinkingDelta):
            kind: Literal["message", "reasoning"] = (
                "message" if isinstance(event, TextDelta) else "reasoning"
            )
            if not event.text:
                return None, None, ""
            if current is not None and current.kind == kind:
                current.text.append(event.text)
                return None, None, event.text
            opened = self._open(kind)
            opened.text.append(event.text)
            return current, opened, event.text
        if isinstance(event, ToolCallStart):
            opened = self._open("function_call")
            opened.call_id, opened.name = event.tool_use_id, event.name
            self._calls[event.tool_use_id] = opened
            return current, opened, ""
        if isinstance(event, ToolCallDelta) and event.tool_use_id in self._calls:
            self._calls[event.tool_use_id].text.append(event.partial_json)
            return None, None, event.partial_json
        return None, None, ""


def output_items(
    response_id: str, events: Sequence[AgentEvent], *, summaries: bool = True
) -> list[dict[str, Any]]:
    """Return the output items of a finished response's events (the thinking as reasoning
    items only with ``summaries``)."""
    items = _Items(response_id, summaries=summaries)
    for event in events:
        items.feed(event)
    return [item.as_json() for item in items.items]


def _usage(usage: Usage | None) -> dict[str, Any]:
    u = usage or Usage()
    prompt = u.input_tokens + u.cache_read_tokens + u.cache_creation_tokens
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_creation_tokens,
        },
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + u.output_tokens,
    }


@dataclass(frozen=True)
class Echo:
    """What a response repeats of its request."""

    model: str
    instructions: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    store: bool = True
    background: bool = False
    user: str | None = None

    @property
    def summaries(self) -> bool:
        """Tell whether the client asked for reasoning summaries (``reasoning.summary``)."""
        return bool(self.reasoning and self.reasoning.get("summary"))

    @classmethod
    def of(cls, req: ResponsesRequest, model: str) -> Echo:
        """Return what ``req`` asks a response to repeat."""
        return cls(
            model=model,
            instructions=req.instructions,
            metadata=dict(req.metadata or {}),
            tools=list(req.tools or []),
            tool_choice=req.tool_choice if req.tool_choice is not None else "auto",
            parallel_tool_calls=req.parallel_tool_calls is not False,
            max_output_tokens=req.max_output_tokens,
            previous_response_id=req.previous_response_id,
            temperature=float(req.temperature) if req.temperature is not None else None,
            top_p=float(req.top_p) if req.top_p is not None else None,
            reasoning=req.reasoning.model_dump(exclude_none=True) if req.reasoning else None,
            text=req.text.model_dump(exclude_none=True) if req.text else None,
            store=req.store,
            background=req.background,
            user=req.user,
        )


def response_object(
    response_id: str,
    echo: Echo,
    *,
    created_at: float,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None = None,
    error: dict[str, Any] | None = None,
    incomplete: str | None = None,
    completed_at: float | None = None,
) -> dict[str, Any]:
    """Return a ``response`` object."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at),
        "status": status,
        "background": echo.background,
        "completed_at": int(completed_at) if completed_at is not None else None,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": echo.instructions,
        "max_output_tokens": echo.max_output_tokens,
        "metadata": echo.metadata,
        "model": echo.model,
        "output": output,
        "parallel_tool_calls": echo.parallel_tool_calls,
        "previous_response_id": echo.previous_response_id,
        "reasoning": echo.reasoning or {"effort": None, "summary": None},
        "store": echo.store,
        "temperature": echo.temperature,
        "text": echo.text or {"format": {"type": "text"}},
        "tool_choice": echo.tool_choice,
        "tools": echo.tools,
        "top_p": echo.top_p,
        "truncation": "disabled",
        "usage": _usage(usage) if status != "in_progress" and status != "queued" else None,
        "user": echo.user,
    }


def finished(
    response_id: str, echo: Echo, events: Sequence[AgentEvent], created_at: float
) -> dict[str, Any]:
    """Return the response object of a finished segment (completed, incomplete or failed)."""
    end = events[-1] if events else None
    status, incomplete, error = "completed", None, None
    if isinstance(end, TurnEnd) and end.stop_reason == "max_tokens":
        status, incomplete = "incomplete", "max_output_tokens"
    elif isinstance(end, TurnError) or end is None:
        status = "failed"
        error = {
            "code": "server_error",
            "type": "server_error",
            "message": end.message if isinstance(end, TurnError) else "the turn ended early",
        }
    return response_object(
        response_id,
        echo,
        created_at=created_at,
        status=status,
        output=output_items(response_id, events, summaries=echo.summaries),
        usage=last_usage(list(events)),
        error=error,
        incomplete=incomplete,
        completed_at=time.time(),
    )


def error_event_body(error: GatewayError) -> dict[str, Any]:
    """Return the ``error`` object of a failed response."""
    # The Responses API's error codes are a fixed list: a limit is rate_limit_exceeded,
    # anything else server_error (ccgate's own code is in the ``error`` event before it).
    code = "rate_limit_exceeded" if error.status == 429 else "server_error"
    return {"code": code, "type": error.openai_type, "message": error.message}


# -- streaming --------------------------------------------------------------------------


class ResponseStream:
    """Render a segment's events as the Responses API's SSE events, numbered in order."""

    def __init__(self, response_id: str, echo: Echo, created_at: float) -> None:
        self._id = response_id
        self._echo = echo
        self._created_at = created_at
        self._sequence = 0
        self._items = _Items(response_id, summaries=echo.summaries)
        self._usage: Usage | None = None
        self._events: list[AgentEvent] = []
        self._closed: set[str] = set()

    def _event(self, kind: str, body: dict[str, Any]) -> str:
        data = {"type": kind, "sequence_number": self._sequence, **body}
        self._sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"

    def _snapshot(self, status: str) -> dict[str, Any]:
        return response_object(
            self._id, self._echo, created_at=self._created_at, status=status, output=[]
        )

    def ping(self) -> str:
        """Return a keep-alive: an SSE comment, which OpenAI's clients skip."""
        return ": ping\n\n"

    def start(self, first: Sequence[AgentEvent] = ()) -> list[str]:
        """Return ``response.created`` and ``response.in_progress``."""
        return [
            self._event("response.created", {"response": self._snapshot("in_progress")}),
            self._event("response.in_progress", {"response": self._snapshot("in_progress")}),
        ]

    def _close(self, item: _Item) -> list[str]:
        if item.id in self._closed:
            return []
        self._closed.add(item.id)
        index = self._items.items.index(item)
        out: list[str] = []
        whole = item.as_json()
        if item.kind == "message":
            part = whole["content"][0]
            text = part["text"]
            out.append(
                self._event(
                    "response.output_text.done",
                    {
                        "item_id": item.id,
                        "output_index": index,
                        "content_index": 0,
                        "text": text,
                        "logprobs": [],
                    },
                )
            )
            out.append(
                self._event(
                    "response.content_part.done",
                    {"item_id": item.id, "output_index": index, "content_index": 0, "part": part},
                )
            )
        elif item.kind == "function_call":
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    {"item_id": item.id, "output_index": index, "arguments": whole["arguments"]},
                )
            )
        else:
            summary = {"type": "summary_text", "text": "".join(item.text)}
            out.append(
                self._event(
                    "response.reasoning_summary_text.done",
                    {
                        "item_id": item.id,
                        "output_index": index,
                        "summary_index": 0,
                        "text": summary["text"],
                    },
                )
            )
            out.append(
                self._event(
                    "response.reasoning_summary_part.done",
                    {
                        "item_id": item.id,
                        "output_index": index,
                        "summary_index": 0,
                        "part": summary,
                    },
                )
            )
        out.append(self._event("response.output_item.done", {"output_index": index, "item": whole}))
        return out

    def _open(self, item: _Item) -> list[str]:
        index = len(self._items.items) - 1
        started = item.as_json("in_progress")
        out: list[str] = []
        if item.kind == "message":
            started["content"] = []
            out.append(
                self._event("response.output_item.added", {"output_index": index, "item": started})
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(
                self._event(
                    "response.content_part.added",
                    {"item_id": item.id, "output_index": index, "content_index": 0, "part": part},
                )
            )
        elif item.kind == "function_call":
            started["arguments"] = ""
            out.append(
                self._event("response.output_item.added", {"output_index": index, "item": started})
            )
        else:
            started["summary"] = []
            out.append(
                self._event("response.output_item.added", {"output_index": index, "item": started})
            )
            out.append(
                self._event(
                    "response.reasoning_summary_part.added",
                    {
                        "item_id": item.id,
                        "output_index": index,
                        "summary_index": 0,
                        "part": {"type": "summary_text", "text": ""},
                    },
                )
            )
        return out

    def _delta(self, item: _Item, text: str) -> list[str]:
        index = self._items.items.index(item)
        if item.kind == "message":
            body = {
                "item_id": item.id,
                "output_index": index,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            }
            return [self._event("response.output_text.delta", body)]
        if item.kind == "function_call":
            body = {"item_id": item.id, "output_index": index, "delta": text}
            return [self._event("response.function_call_arguments.delta", body)]
        body = {"item_id": item.id, "output_index": index, "summary_index": 0, "delta": text}
        return [self._event("response.reasoning_summary_text.delta", body)]

    def render(self, event: AgentEvent) -> list[str]:
        """Return the SSE events for one agent event."""
        self._events.append(event)
        if isinstance(event, Usage):
            self._usage = event
            return []
        if isinstance(event, TurnEnd):
            out = self._close_current()
            final = finished(self._id, self._echo, self._events, self._created_at)
            kind = (
                "response.incomplete" if final["status"] == "incomplete" else "response.completed"
            )
            out.append(self._event(kind, {"response": final}))
            return out
        if isinstance(event, TurnError):
            raise AssertionError("errors are rendered with error()")
        if isinstance(event, ToolCallEnd):
            return []
        closed, opened, text = self._items.feed(event)
        out = []
        if closed is not None:
            out += self._close(closed)
        if opened is not None:
            out += self._open(opened)
            if text:
                out += self._delta(opened, text)
            return out
        if text:
            target = self._target(event)
            if target is not None:
                out += self._delta(target, text)
        return out

    def _target(self, event: AgentEvent) -> _Item | None:
        if isinstance(event, ToolCallDelta):
            return next((i for i in self._items.items if i.call_id == event.tool_use_id), None)
        return self._items.current

    def _close_current(self) -> list[str]:
        current = self._items.current
        return self._close(current) if current is not None else []

    def error(self, error: GatewayError) -> list[str]:
        """Return the events that end a started stream with a failure: ``error`` (the
        protocol's error), then ``response.failed`` (the response as far as it got)."""
        out = self._close_current()
        out.append(
            self._event(
                "error",
                {
                    "code": error.code or error.openai_type,
                    "message": error.message,
                    "param": error.param,
                },
            )
        )
        failed = response_object(
            self._id,
            self._echo,
            created_at=self._created_at,
            status="failed",
            output=[item.as_json() for item in self._items.items],
            usage=self._usage,
            error=error_event_body(error),
            completed_at=time.time(),
        )
        out.append(self._event("response.failed", {"response": failed}))
        return out
