"""Turn a ``Reply`` and a request body into an Anthropic message: JSON, SSE events, errors."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from ccgate.demo.reply import Reply, ToolUse

__all__ = [
    "Answer",
    "build_answer",
    "error_response",
    "estimate_input_tokens",
    "message_json",
    "split_text",
    "stream_events",
]

_JSON_PIECES = 3
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

Event = tuple[str, dict[str, Any]]


@dataclass
class Answer:
    """A fully resolved assistant message, ready to render either way."""

    id: str
    model: str
    thinking: str | None
    text: str | None
    tool_uses: list[ToolUse]
    stop_reason: str
    stop_sequence: str | None
    usage: dict[str, int]
    chunks: int
    #: The request asked for ``thinking.display: omitted``: signatures without the text.
    thinking_omitted: bool = False

    @property
    def shown_thinking(self) -> str:
        """Return the thinking text the response carries (empty when omitted)."""
        return "" if self.thinking_omitted else self.thinking or ""

    @property
    def signature(self) -> str:
        """Return a deterministic signature for the thinking block."""
        digest = hashlib.sha256(f"demo:{self.thinking}".encode()).digest()
        return base64.b64encode(digest).decode()

    @property
    def has_text_block(self) -> bool:
        """Tell whether the message carries a text block."""
        return self.text is not None and bool(self.text or not self.tool_uses)


def build_answer(reply: Reply, body: dict[str, Any], next_id: Callable[[str], str]) -> Answer:
    """Resolve ``reply`` against the request: stop sequences, ``max_tokens``, ids, usage."""
    text, tools = reply.text, list(reply.tool_uses)
    stop_reason, stop_sequence = ("tool_use" if tools else "end_turn"), None
    if text is not None:
        sequences = body.get("stop_sequences")
        hits = [
            (text.find(s), s)
            for s in (sequences if isinstance(sequences, list) else [])
            if isinstance(s, str) and s and s in text
        ]
        if hits:
            cut, stop_sequence = min(hits)
            text, tools, stop_reason = text[:cut], [], "stop_sequence"
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and max_tokens > 0 and len(text) > max_tokens * 4:
            text, tools, stop_reason, stop_sequence = text[: max_tokens * 4], [], "max_tokens", None
    tools = [t if t.id else replace(t, id=next_id("toolu")) for t in tools]
    out_chars = len(reply.thinking or "") + len(text or "")
    out_chars += sum(len(json.dumps(t.input)) + len(t.name) for t in tools)
    usage = {
        "input_tokens": estimate_input_tokens(body),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": max(1, out_chars // 4),
    }
    usage.update(reply.usage or {})
    thinking_param = body.get("thinking")
    omitted = isinstance(thinking_param, dict) and thinking_param.get("display") == "omitted"
    return Answer(
        id=next_id("msg"),
        model=str(body.get("model") or "demo"),
        thinking=reply.thinking,
        text=text,
        tool_uses=tools,
        stop_reason=reply.stop_reason or stop_reason,
        stop_sequence=stop_sequence,
        usage=usage,
        chunks=max(1, reply.chunks),
        thinking_omitted=omitted,
    )


def message_json(answer: Answer) -> dict[str, Any]:
    """Render the non-streamed ``/v1/messages`` response body."""
    content: list[dict[str, Any]] = []
    if answer.thinking is not None:
        content.append(
            {"type": "thinking", "thinking": answer.shown_thinking, "signature": answer.signature}
        )
    if answer.has_text_block:
        content.append({"type": "text", "text": answer.text})
    content.extend(
        {"type": "tool_use", "id": t.id, "name": t.name, "input": t.input} for t in answer.tool_uses
    )
    return {**_envelope(answer, content), "usage": answer.usage}


def stream_events(answer: Answer) -> Iterator[Event]:
    """Yield the SSE ``(event, data)`` pairs of a streamed response, in wire order."""
    start_usage = {**answer.usage, "output_tokens": 1}
    yield (
        "message_start",
        {
            "type": "message_start",
            "message": {
                **_envelope(answer, []),
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
    )
    yield "ping", {"type": "ping"}
    index = 0
    if answer.thinking is not None:
        yield _start(index, {"type": "thinking", "thinking": "", "signature": ""})
        for piece in split_text(answer.shown_thinking, answer.chunks):
            yield _delta(index, {"type": "thinking_delta", "thinking": piece})
        yield _delta(index, {"type": "signature_delta", "signature": answer.signature})
        yield _stop(index)
        index += 1
    if answer.has_text_block:
        yield _start(index, {"type": "text", "text": ""})
        for piece in split_text(answer.text or "", answer.chunks):
            yield _delta(index, {"type": "text_delta", "text": piece})
        yield _stop(index)
        index += 1
    for tool in answer.tool_uses:
        yield _start(index, {"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}})
        for piece in split_text(json.dumps(tool.input), _JSON_PIECES):
            yield _delta(index, {"type": "input_json_delta", "partial_json": piece})
        yield _stop(index)
        index += 1
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence},
            "usage": {"output_tokens": answer.usage["output_tokens"]},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def error_response(status: int, message: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Return the Anthropic error body and extra headers for an HTTP status."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {
        "type": "error",
        "error": {"type": kind, "message": message or f"demo: scripted {status} {kind}"},
    }
    headers = {"retry-after": "1"} if status == 429 else {}
    return body, headers


def estimate_input_tokens(body: Any) -> int:
    """Estimate input tokens as the characters of system and messages over four."""
    if not isinstance(body, dict):
        return 1
    return max(1, (_chars(body.get("system")) + _chars(body.get("messages"))) // 4)


def split_text(text: str, parts: int) -> list[str]:
    """Split ``text`` into at most ``parts`` nearly equal, non-empty pieces."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    pieces, pos = [], 0
    for i in range(parts):
        end = pos + size + (1 if i < extra else 0)
        pieces.append(text[pos:end])
        pos = end
    return pieces


def _chars(node: Any) -> int:
    """Count the characters of the text carried by a system or messages value."""
    if isinstance(node, str):
        return len(node)
    if isinstance(node, list):
        return sum(_chars(item) for item in node)
    if not isinstance(node, dict):
        return 0
    total = sum(_chars(node.get(key)) for key in ("text", "thinking", "content"))
    if node.get("type") == "tool_use":
        total += len(json.dumps(node.get("input"))) + len(str(node.get("name", "")))
    return total


def _envelope(answer: Answer, content: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the message fields shared by both renderings."""
    return {
        "id": answer.id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": answer.stop_reason,
        "stop_sequence": answer.stop_sequence,
    }


def _start(index: int, block: dict[str, Any]) -> Event:
    """Build a ``content_block_start`` event."""
    return "content_block_start", {
        "type": "content_block_start",
        "index": index,
        "content_block": block,
    }


def _delta(index: int, delta: dict[str, Any]) -> Event:
    """Build a ``content_block_delta`` event."""
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def _stop(index: int) -> Event:
    """Build a ``content_block_stop`` event."""
    return "content_block_stop", {"type": "content_block_stop", "index": index}
