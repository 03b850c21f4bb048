"""The Loop API on the wire: request bodies, loop objects, SSE events, errors (pure, no I/O).

SSE events are written once, in :data:`TABLE`: each row names an event, the
loop event it renders, what it means, and each ``data`` field with its JSON
Schema and where its value comes from. The OpenAPI description, the event
schemas and the rendering all read that table. Errors:
``{"error": {"type", "code", "message"}}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ccgate.engine.events import TextDelta, ThinkingDelta, ToolResult, Usage
from ccgate.errors import GatewayError, InvalidRequest
from ccgate.loops.events import (
    ChoiceRequested,
    ChoiceResolved,
    Done,
    Failed,
    Interrupted,
    LoopEvent,
    Queued,
    Snapshot,
    Started,
    ToolCalled,
)
from ccgate.store.records import LoopRecord

__all__ = [
    "CONTENT_MAX",
    "ChoiceAccepted",
    "CurrentTurn",
    "InterruptAccepted",
    "Loop",
    "LoopList",
    "EVENTS",
    "EVENT_DATA",
    "TABLE",
    "Event",
    "METADATA_MAX",
    "PERMISSION_MODES",
    "ChoiceBody",
    "LoopCreate",
    "LoopMessage",
    "check_metadata",
    "check_permission_mode",
    "error_body",
    "event_schemas",
    "loop_object",
    "named",
    "parse_choice",
    "ping",
    "sse",
]

#: A message's content, at most (bytes of UTF-8).
CONTENT_MAX = 1024 * 1024
#: A loop's metadata, at most (bytes of JSON).
METADATA_MAX = 16 * 1024


#: The permission modes a loop runs (``loops.manager.PERMISSION_MODES``; a test keeps them
#: equal), as the OpenAPI document shows them. Any other is refused with a message.
PERMISSION_MODES = ("default", "acceptEdits", "plan")
_MODES_SCHEMA: dict[str, Any] = {"anyOf": [{"enum": list(PERMISSION_MODES)}, {"type": "null"}]}


class LoopCreate(BaseModel):
    """The body of ``POST /v1/loops``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"title": "Fix the tests", "metadata": {"ticket": 42}, "permission_mode": "plan"}
            ]
        },
    )

    title: str | None = Field(None, max_length=200, description="At most 200 characters.")
    metadata: dict[str, Any] | None = Field(
        None, description="Your own data about the loop: a JSON object of at most 16 KB."
    )
    permission_mode: str | None = Field(
        None,
        description="default (ask before commands and edits), acceptEdits (ask before "
        "commands), plan (read and plan only). Default: default.",
        json_schema_extra=_MODES_SCHEMA,
    )
    model: str | None = Field(None, description="Any accepted model name; default_model else.")


class LoopMessage(BaseModel):
    """The body of ``POST /v1/loops/{id}/messages``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"content": "Say hello."}]},
    )

    content: str = Field(min_length=1, description="The message, at most 1 MB.")
    permission_mode: str | None = Field(
        None,
        description="This message's permission mode; the loop's own else.",
        json_schema_extra=_MODES_SCHEMA,
    )


class ChoiceBody(BaseModel):
    """The body of ``POST /v1/loops/{id}/choices/{choice_id}``.

    A permission is answered with ``allow`` (and a ``message`` the agent reads
    with a denial); a question with ``answers``: question text to the answer.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    allow: bool | None = Field(None, description="A permission: true to let the call run.")
    message: str | None = Field(
        None, max_length=10_000, description="With a denial: the reason the agent reads."
    )
    answers: dict[str, str] | None = Field(
        None, description="A question: each question's text to the chosen answer."
    )

    def as_dict(self) -> dict[str, Any]:
        """Return the fields that were given."""
        return self.model_dump(exclude_unset=True)


class CurrentTurn(BaseModel):
    """The turn a loop is running."""

    turn_id: str
    started_at: int | None
    pending_choice_id: str | None


class Loop(BaseModel):
    """A loop, with its runtime state when it is read one by one."""

    id: str = Field(description="loop_...")
    object: Literal["loop"] = "loop"
    title: str
    metadata: dict[str, Any]
    permission_mode: str
    model: str
    created_at: int
    archived: bool
    archived_at: int | None
    turns: int
    last_turn_at: int | None
    busy: bool | None = Field(None, description="A turn is running (single loop reads only).")
    queue_depth: int | None = Field(None, description="Messages waiting behind it.")
    current_turn: CurrentTurn | None = None


class LoopList(BaseModel):
    """A page of loops, newest first."""

    object: Literal["list"] = "list"
    data: list[Loop]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ChoiceAccepted(BaseModel):
    """A choice was answered."""

    choice_id: str
    status: Literal["resolved"] = "resolved"


class InterruptAccepted(BaseModel):
    """An interrupt was taken; ``interrupted`` says whether a turn was running."""

    loop_id: str
    interrupted: bool


_STRING: dict[str, Any] = {"type": "string"}
_BOOLEAN: dict[str, Any] = {"type": "boolean"}
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
_USAGE: dict[str, Any] = {
    "type": "object",
    "properties": {name: {"type": "integer"} for name in _USAGE_FIELDS},
    "required": list(_USAGE_FIELDS),
}

Getter = Callable[[Any], Any]
DataField = tuple[dict[str, Any], Getter | None]


def _usage(event: Done) -> dict[str, int]:
    usage: Usage = event.usage
    return {name: getattr(usage, name) for name in _USAGE_FIELDS}


def _field(schema: dict[str, Any], get: Getter | None = None) -> DataField:
    """A ``data`` field: its JSON Schema, and how to read it off the loop event (None: the
    attribute of the same name)."""
    return schema, get


@dataclass(frozen=True)
class Event:
    """One row of the SSE vocabulary."""

    name: str
    #: The loop event rendered as this SSE event (None: ``ping``, which the stream writes itself).
    source: type | None
    #: What it means, for the OpenAPI description.
    about: str
    fields: dict[str, DataField] = dataclass_field(default_factory=dict)

    def data(self, event: LoopEvent) -> dict[str, Any]:
        """Return ``event``'s ``data``: every field present."""
        return {
            name: get(event) if get else getattr(event, name)
            for name, (_, get) in self.fields.items()
        }

    @property
    def description(self) -> str:
        """``{field, field: a|b}: what it means``."""
        names = [
            f"{name}: {'|'.join(schema['enum'])}" if "enum" in schema else name
            for name, (schema, _) in self.fields.items()
        ]
        return f"{{{', '.join(names)}}}: {self.about}"


#: Every SSE event of the Loop API, in the order a turn usually sends them.
TABLE: tuple[Event, ...] = (
    Event(
        "queued",
        Queued,
        "the loop was busy; this message waits its turn (position 1: it runs next)",
        {"position": _field({"type": "integer", "minimum": 1}), "turn_id": _field(_STRING)},
    ),
    Event(
        "started",
        Started,
        "the turn began (cold_start: a process had to start)",
        {"turn_id": _field(_STRING), "cold_start": _field(_BOOLEAN)},
    ),
    Event("assistant_delta", TextDelta, "a piece of the agent's answer", {"text": _field(_STRING)}),
    Event(
        "thinking_delta",
        ThinkingDelta,
        "a piece of the agent's thinking",
        {"text": _field(_STRING)},
    ),
    Event(
        "tool_call",
        ToolCalled,
        "the agent called a tool",
        {
            "tool_use_id": _field(_STRING),
            "tool": _field(_STRING),
            "input_summary": _field(_STRING),
        },
    ),
    Event(
        "tool_result",
        ToolResult,
        "the tool's result went back to the agent",
        {"tool_use_id": _field(_STRING), "ok": _field(_BOOLEAN)},
    ),
    Event(
        "requires_choice",
        ChoiceRequested,
        "the turn waits",
        {
            "choice_id": _field(_STRING),
            "kind": _field({"enum": ["permission", "question"]}),
            "payload": _field({"type": "object"}),
        },
    ),
    Event(
        "choice_resolved",
        ChoiceResolved,
        "the choice was answered",
        {
            "choice_id": _field(_STRING),
            "source": _field({"enum": ["api", "timeout", "interrupt"]}),
        },
    ),
    Event(
        "done",
        Done,
        "the turn finished",
        {"turn_id": _field(_STRING), "usage": _field(_USAGE, _usage)},
    ),
    Event("interrupted", Interrupted, "the turn was stopped", {"turn_id": _field(_STRING)}),
    Event(
        "error",
        Failed,
        "the turn (or the watch) failed",
        {"code": _field(_STRING), "message": _field(_STRING)},
    ),
    Event(
        "snapshot",
        Snapshot,
        "first, to a watcher joining a running turn",
        {
            "turn_id": _field(_STRING),
            "assistant_text_so_far": _field(_STRING),
            "pending_choice_id": _field({"type": ["string", "null"]}),
        },
    ),
    Event("ping", None, "every 15 s while nothing else is sent"),
)

_ROWS: dict[type, Event] = {row.source: row for row in TABLE if row.source is not None}
#: Every event with what its ``data`` holds (for the OpenAPI description).
EVENTS: dict[str, str] = {row.name: row.description for row in TABLE}
#: Each event's ``data`` fields and their JSON Schemas.
EVENT_DATA: dict[str, dict[str, Any]] = {
    row.name: {name: schema for name, (schema, _) in row.fields.items()} for row in TABLE
}


def event_schemas() -> dict[str, Any]:
    """Return a JSON Schema of one SSE event: ``event`` names it, ``data`` is its JSON.

    As OpenAPI 3.2 describes ``text/event-stream``: ``data`` is a string whose
    ``contentSchema`` (``contentMediaType: application/json``) is the payload.
    """
    return {
        "type": "object",
        "anyOf": [
            {
                "type": "object",
                "title": name,
                "description": EVENTS[name],
                "properties": {
                    "event": {"const": name},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {
                            "type": "object",
                            "properties": fields,
                            "required": list(fields),
                            "additionalProperties": False,
                        },
                    },
                },
                "required": ["event", "data"],
            }
            for name, fields in EVENT_DATA.items()
        ],
    }


def parse_choice(body: Any) -> dict[str, Any]:
    """Read a choice's answer; anything else is ``invalid_choice_payload``, saying what is wrong."""
    try:
        return ChoiceBody.model_validate(body).as_dict()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidRequest(
            f'{where}: {first["msg"]}; answer a permission with {{"allow": true|false, '
            '"message"?: "..."} and a question with {"answers": {"<question>": "<answer>"}}',
            param=where,
            code="invalid_choice_payload",
        ) from None


def check_permission_mode(mode: str | None, modes: tuple[str, ...]) -> str | None:
    """Refuse a permission mode ccgate does not run, naming the valid ones."""
    if mode is not None and mode not in modes:
        raise InvalidRequest(
            f"permission_mode must be one of {', '.join(modes)}; got {mode[:40]!r} "
            "(bypassPermissions is not offered: every risky call goes through a choice)",
            param="permission_mode",
            code="invalid_permission_mode",
        )
    return mode


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Refuse metadata larger than 16 KB of JSON (compact, UTF-8)."""
    data = metadata or {}
    compact = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if len(compact.encode()) > METADATA_MAX:
        raise InvalidRequest(
            f"metadata must be at most {METADATA_MAX // 1024} KB of JSON",
            param="metadata",
            code="metadata_too_large",
        )
    return data


def loop_object(
    record: LoopRecord,
    *,
    busy: bool | None = None,
    queue_depth: int = 0,
    current: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a loop as the API shows it; with ``busy`` given, its runtime state too."""
    body: dict[str, Any] = {
        "id": record.id,
        "object": "loop",
        "title": record.title,
        "metadata": record.metadata,
        "permission_mode": record.permission_mode,
        "model": record.model,
        "created_at": int(record.created_at),
        "archived": record.archived_at is not None,
        "archived_at": int(record.archived_at) if record.archived_at is not None else None,
        "turns": record.turns,
        "last_turn_at": int(record.last_turn_at) if record.last_turn_at is not None else None,
    }
    if busy is not None:
        body.update({"busy": busy, "queue_depth": queue_depth, "current_turn": current})
    return body


def named(event: LoopEvent) -> tuple[str, dict[str, Any]]:
    """Return ``event``'s SSE name and ``data``."""
    row = _ROWS[type(event)]
    return row.name, row.data(event)


def sse(event: LoopEvent) -> str:
    """Return ``event`` as one SSE event."""
    row = _ROWS[type(event)]
    return f"event: {row.name}\ndata: {json.dumps(row.data(event), separators=(',', ':'))}\n\n"


def ping() -> str:
    """Return a keep-alive ``ping``."""
    return "event: ping\ndata: {}\n\n"


def error_body(error: GatewayError) -> dict[str, Any]:
    """Return the Loop API's error shape for ``error``."""
    return {
        "error": {
            "type": error.loop_type,
            "code": error.code or error.loop_code,
            "message": error.message,
        }
    }
