"""The scripted model's state: recorded requests, queued replies and default answers.

Conversation requests (the turns of a session) take the next scripted reply,
or else a default answer read from the last user message:

1. tool results there are reported back (``Tool results: <id>=<text>; ...``,
   ``(error)`` after failed ones), so a tool call is never repeated forever;
2. otherwise ``[[demo: ...]]`` directives in the text shape the answer (see
   ``ccgate.demo``), and the text is echoed: ``You said: <text>``, with
   ``[image: <media type>]`` for each image block.

Side requests the CLI makes on its own (see ``is_side_request``) never consume
scripted replies; they get ``side_text(body)``.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from ccgate.demo.directives import parse_directives
from ccgate.demo.plan import Plans
from ccgate.demo.reply import Reply, reply_from_directives

__all__ = [
    "SIDE_TEXT",
    "RecordedRequest",
    "ScriptedModel",
    "is_side_request",
    "last_user_text",
    "side_text",
]

SIDE_TEXT = "OK"

_REMINDER = re.compile(r"<system-reminder>.*?(</system-reminder>|\Z)", re.S)


@dataclass
class RecordedRequest:
    """One HTTP request as received: lowercased headers, parsed JSON body (or ``None``)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float = field(default_factory=time.time)
    query: str = ""

    @property
    def is_model_request(self) -> bool:
        """Tell whether this is a ``POST /v1/messages`` call."""
        return self.method == "POST" and self.path == "/v1/messages"


class ScriptedModel:
    """Deterministic model state shared by the demo app and the tests that drive it."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._script: deque[Reply] = deque()
        self._fault_counts: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        #: Each credential's plan (5-hour and 7-day windows, overage): see ``demo.plan``.
        self.plans = Plans()

    def script(self, *replies: Reply) -> None:
        """Queue replies for the upcoming conversation requests, in order."""
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        """Forget recorded requests, queued replies, directive fault counts and plans."""
        with self._lock:
            self.requests.clear()
            self._script.clear()
            self._fault_counts.clear()
        self.plans.clear()

    @property
    def pending(self) -> int:
        """Return how many scripted replies are still queued."""
        return len(self._script)

    def record(self, request: RecordedRequest) -> None:
        """Remember one received request."""
        with self._lock:
            self.requests.append(request)

    def model_requests(self) -> list[RecordedRequest]:
        """Return the recorded ``POST /v1/messages`` requests, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.is_model_request]

    def conversation_requests(self) -> list[RecordedRequest]:
        """Return the recorded model requests that were conversation turns."""
        return [r for r in self.model_requests() if not is_side_request(r.body)]

    def next_id(self, prefix: str) -> str:
        """Return a fresh deterministic id such as ``msg_demo_000001``."""
        return f"{prefix}_demo_{next(self._ids):06d}"

    @staticmethod
    def last_user_text(body: Any) -> str:
        """Return the text of the last user message, without system reminders."""
        return last_user_text(body)

    def reply_for(self, body: Any) -> Reply:
        """Choose the reply to one ``/v1/messages`` body; ``text`` is always resolved."""
        if is_side_request(body):
            return Reply(text=side_text(body))
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            if scripted.text is None and not scripted.tool_uses:
                return replace(scripted, text=self._default(body)[0].text)
            return scripted
        reply, key = self._default(body)
        return reply if key is None else self._limit_faults(reply, key)

    def _default(self, body: Any) -> tuple[Reply, str | None]:
        """Build the unscripted answer; return it with its fault-count key, if any."""
        blocks = _blocks(_last_user_message(body))
        results = [b for b in blocks if b.get("type") == "tool_result"]
        if results:
            return Reply(text="Tool results: " + "; ".join(map(_describe_result, results))), None
        raw = last_user_text(body)
        text, pairs = parse_directives(raw)
        reply, times = reply_from_directives(pairs)
        if reply.text is None and not reply.tool_uses:
            attachments = [_describe_attachment(b) for b in blocks]
            reply.text = " ".join(["You said:", text, *filter(None, attachments)]).rstrip()
        return reply, (None if times is None else f"{times}\x00{raw}")

    def _limit_faults(self, reply: Reply, key: str) -> Reply:
        """Drop a directive's fault after it has fired ``times`` times."""
        if not reply.is_fault:
            return reply
        times = int(key.split("\x00", 1)[0])
        with self._lock:
            seen = self._fault_counts.get(key, 0)
            self._fault_counts[key] = seen + 1
        if seen < times:
            return reply
        return replace(reply, error_status=None, cut_after_chunks=None, stall=None)


def is_side_request(body: Any) -> bool:
    """Tell whether a ``/v1/messages`` body is a CLI side call rather than a turn.

    Claude Code 2.1.330 makes one kind unless nonessential traffic is disabled:
    a session-title prompt carrying ``output_config.format`` (a turn's structured
    output goes through the ``StructuredOutput`` tool instead). Quota probes
    (``max_tokens`` 1), made by other versions, count as side calls too.
    """
    if not isinstance(body, dict):
        return True
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens <= 1:
        return True
    config = body.get("output_config")
    return isinstance(config, dict) and config.get("format") is not None


def side_text(body: Any) -> str:
    """Return the fixed answer to a side call: JSON fitting its schema, else ``SIDE_TEXT``."""
    config = body.get("output_config") if isinstance(body, dict) else None
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and isinstance(fmt.get("schema"), dict):
        return json.dumps(_example(fmt["schema"]))
    return SIDE_TEXT


def last_user_text(body: Any) -> str:
    """Return the text of the last user message in a body, without system reminders."""
    parts: list[str] = []
    for block in _blocks(_last_user_message(body)):
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            text = _REMINDER.sub("", block["text"]).strip()
            if text:
                parts.append(text)
    return "\n".join(parts)


def _example(schema: dict[str, Any]) -> Any:
    """Return a small value that satisfies a simple JSON schema."""
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        return {k: _example(v if isinstance(v, dict) else {}) for k, v in props.items()}
    examples: dict[Any, Any] = {"string": "Demo", "integer": 0, "number": 0, "boolean": False}
    return [] if kind == "array" else examples.get(kind)


def _last_user_message(body: Any) -> dict[str, Any]:
    """Return the last message with role ``user`` (empty when there is none)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return message
    return {}


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Return a message's content as a list of blocks."""
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _describe_result(block: dict[str, Any]) -> str:
    """Render one tool_result block as ``<id>=<text>``, marking errors."""
    content = block.get("content")
    if isinstance(content, list):
        text = " ".join(
            str(b.get("text", "")) if b.get("type") == "text" else _describe_attachment(b)
            for b in content
            if isinstance(b, dict)
        )
    else:
        text = "" if content is None else str(content)
    error = " (error)" if block.get("is_error") else ""
    return f"{block.get('tool_use_id', '?')}={text.strip()}{error}"


def _describe_attachment(block: dict[str, Any]) -> str:
    """Render an image or document block as ``[image: image/png]``; other blocks as ``""``."""
    kind = block.get("type")
    if kind not in ("image", "document"):
        return ""
    source = block.get("source")
    source = source if isinstance(source, dict) else {}
    return f"[{kind}: {source.get('media_type') or source.get('type') or 'unknown'}]"
