"""What the OpenAPI document says each route answers: every status, content type and shape.

Routes declare the statuses of their own (``responses=``); :func:`complete`
then gives every operation the ones any route can answer -- 400 (malformed),
401 (no or a wrong key), 413 (body over ``max_body_bytes``), 500 (a bug) --
and an error schema in the protocol its path speaks. Streams are described as
OpenAPI 3.2 does for ``text/event-stream``: each event an object with
``event`` and ``data``, whose JSON is given by ``contentSchema``.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from ccgate.api.errors import is_anthropic_path
from ccgate.protocol.responses import EVENTS as RESPONSE_EVENTS

__all__ = [
    "ANTHROPIC_ERROR",
    "CHAT_200",
    "COUNT_TOKENS_200",
    "LOOP_ERROR",
    "MESSAGES_200",
    "METRICS_200",
    "MODELS_200",
    "MODEL_200",
    "OPENAI_ERROR",
    "RESPONSES_200",
    "complete",
    "errors",
    "sse_event",
]

Shape = Literal["openai", "anthropic", "loops"]

_STATUS: dict[int, str] = {
    400: "The request is malformed or meaningless; the message names the field "
    "(invalid_request_error; invalid_session_key, expiry_in_past, ...).",
    401: "No key, or a wrong one (authentication_error: invalid_api_key); or Claude Code's own "
    "credentials were refused upstream (upstream_authentication_failed).",
    402: "The upstream account cannot pay for the request (upstream_billing).",
    403: "This key may not use the model (permission_error: model_not_allowed).",
    404: "An unknown model (model_not_found) or object; a path no route has is route_not_found.",
    409: "The request conflicts with an earlier one.",
    413: "The body is larger than max_body_bytes (request_too_large).",
    429: "Every turn slot is busy and the queue full (gateway_busy), the key's quota is used "
    "(quota_exceeded), or the upstream asked to slow down (upstream_rate_limited). "
    "Retry-After and x-should-retry say whether and when to retry.",
    500: "ccgate hit an internal error (server_error); the details are in its log.",
    502: "The model side failed: the upstream (upstream_error) or the Claude Code process "
    "(cli_crashed).",
    503: "ccgate is shutting down (shutting_down); on the OpenAI-compatible API also an "
    "overloaded upstream (upstream_overloaded).",
    504: "The turn outlived request_timeout (turn_timeout).",
    529: "The upstream is overloaded (overloaded_error).",
}

_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}


def _object(properties: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """Return an object schema whose properties are all required, but ``optional``."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }


OPENAI_ERROR = _object(
    {
        "error": _object(
            {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": _NULLABLE_STRING,
                "code": _NULLABLE_STRING,
            }
        )
    }
)
ANTHROPIC_ERROR = _object(
    {
        "type": {"const": "error"},
        "error": _object({"type": {"type": "string"}, "message": {"type": "string"}}),
    }
)
LOOP_ERROR = _object(
    {
        "error": _object(
            {"type": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"}}
        )
    }
)
_ERROR_SCHEMAS: dict[Shape, dict[str, Any]] = {
    "openai": OPENAI_ERROR,
    "anthropic": ANTHROPIC_ERROR,
    "loops": LOOP_ERROR,
}


def shape_of(path: str) -> Shape:
    """Return the protocol whose error shape ``path`` answers in."""
    if is_anthropic_path(path):
        return "anthropic"
    return "loops" if path.startswith("/v1/loops") else "openai"


def errors(shape: Shape, *statuses: int) -> dict[int | str, dict[str, Any]]:
    """Describe the errors a route answers with, in the shape of its protocol."""
    return {
        status: {
            "description": _STATUS[status],
            "content": {"application/json": {"schema": _ERROR_SCHEMAS[shape]}},
        }
        for status in statuses
    }


def sse_event(name: str | None, data: dict[str, Any]) -> dict[str, Any]:
    """Return one SSE event's schema: its ``event`` name and its ``data``, JSON of ``data``.

    ``name`` None is an event without an ``event:`` line (a ``message``).
    """
    payload = {"type": "string", "contentMediaType": "application/json", "contentSchema": data}
    return {
        "type": "object",
        "properties": {"event": {"const": name or "message"}, "data": payload},
        "required": ["event", "data"],
    }


def _stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Return a ``text/event-stream`` media type whose events are each one of ``events``."""
    return {"schema": {"type": "object", "anyOf": events}}


# --- OpenAI ----------------------------------------------------------------------------------

_USAGE_OPENAI = _object(
    {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "prompt_tokens_details": _object({"cached_tokens": {"type": "integer"}}),
    }
)
_FINISH = {"enum": ["stop", "length", "tool_calls", "content_filter"]}
_TOOL_CALL = _object(
    {
        "id": {"type": "string"},
        "type": {"const": "function"},
        "function": _object({"name": {"type": "string"}, "arguments": {"type": "string"}}),
    }
)
_COMPLETION = _object(
    {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "system_fingerprint": {"type": "null"},
        "choices": {
            "type": "array",
            "items": _object(
                {
                    "index": {"type": "integer"},
                    "message": _object(
                        {
                            "role": {"const": "assistant"},
                            "content": _NULLABLE_STRING,
                            "refusal": {"type": "null"},
                            "tool_calls": {"type": "array", "items": _TOOL_CALL},
                        },
                        optional=("tool_calls",),
                    ),
                    "logprobs": {"type": "null"},
                    "finish_reason": _FINISH,
                }
            ),
        },
        "usage": _USAGE_OPENAI,
    }
)
_CHUNK = _object(
    {
        "id": {"type": "string"},
        "object": {"const": "chat.completion.chunk"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "system_fingerprint": {"type": "null"},
        "choices": {
            "type": "array",
            "items": _object(
                {
                    "index": {"type": "integer"},
                    "delta": {"type": "object"},
                    "logprobs": {"type": "null"},
                    "finish_reason": {"anyOf": [_FINISH, {"type": "null"}]},
                }
            ),
        },
        "usage": {"anyOf": [_USAGE_OPENAI, {"type": "null"}]},
    },
    optional=("usage",),
)
_DONE = {
    "type": "object",
    "properties": {"event": {"const": "message"}, "data": {"const": "[DONE]"}},
    "required": ["event", "data"],
}

CHAT_200: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The completion: one chat.completion object, or with stream=true "
        "chat.completion.chunk events ending with data: [DONE] (an error after the stream "
        "started arrives as a data: {error} event before [DONE]).",
        "content": {
            "application/json": {"schema": _COMPLETION},
            "text/event-stream": _stream(
                [sse_event(None, _CHUNK), sse_event(None, OPENAI_ERROR), _DONE]
            ),
        },
    }
}

_RESPONSE = _object(
    {
        "id": {"type": "string"},
        "object": {"const": "response"},
        "created_at": {"type": "integer"},
        "status": {
            "enum": ["completed", "incomplete", "failed", "in_progress", "queued", "cancelled"]
        },
        "model": {"type": "string"},
        "output": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": ["object", "null"]},
        "error": {"type": ["object", "null"]},
        "previous_response_id": {"type": ["string", "null"]},
    }
)
_RESPONSE_EVENT = _object(
    {"type": {"type": "string"}, "sequence_number": {"type": "integer"}},
)

RESPONSES_200: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The response object (queued, with background=true), or with "
        "stream=true the Responses API's events, numbered by sequence_number, ending with "
        "response.completed, response.incomplete or response.failed.",
        "content": {
            "application/json": {"schema": _RESPONSE},
            "text/event-stream": _stream(
                [
                    sse_event(
                        name,
                        {
                            **_RESPONSE_EVENT,
                            "properties": {
                                "type": {"const": name},
                                "sequence_number": {"type": "integer"},
                            },
                        },
                    )
                    for name in RESPONSE_EVENTS
                ]
            ),
        },
    }
}

_MODEL = _object(
    {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
        "display_name": {"type": "string"},
        "aliases": {"type": "array", "items": {"type": "string"}},
        "context_window": {"type": "integer"},
        "max_output_tokens": {"type": "integer"},
    }
)
MODEL_200: dict[int | str, dict[str, Any]] = {
    200: {"description": "The model.", "content": {"application/json": {"schema": _MODEL}}}
}
MODELS_200: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Every model this gateway offers.",
        "content": {
            "application/json": {
                "schema": _object(
                    {"object": {"const": "list"}, "data": {"type": "array", "items": _MODEL}}
                )
            }
        },
    }
}

# --- Anthropic -------------------------------------------------------------------------------

_TEXT = _object({"type": {"const": "text"}, "text": {"type": "string"}})
_THINKING = _object(
    {"type": {"const": "thinking"}, "thinking": {"type": "string"}, "signature": {"type": "string"}}
)
_TOOL_USE = _object(
    {
        "type": {"const": "tool_use"},
        "id": {"type": "string"},
        "name": {"type": "string"},
        "input": {"type": "object"},
    }
)
_STOP = {"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]}
_USAGE_ANTHROPIC = _object(
    {
        "input_tokens": {"type": "integer"},
        "output_tokens": {"type": "integer"},
        "cache_creation_input_tokens": {"type": "integer"},
        "cache_read_input_tokens": {"type": "integer"},
    }
)
_MESSAGE = _object(
    {
        "id": {"type": "string"},
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "model": {"type": "string"},
        "content": {"type": "array", "items": {"anyOf": [_TEXT, _THINKING, _TOOL_USE]}},
        "stop_reason": _STOP,
        "stop_sequence": _NULLABLE_STRING,
        "usage": _USAGE_ANTHROPIC,
    }
)


def _event(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    return sse_event(name, _object({"type": {"const": name}, **fields}))


_DELTAS = [
    _object({"type": {"const": "text_delta"}, "text": {"type": "string"}}),
    _object({"type": {"const": "thinking_delta"}, "thinking": {"type": "string"}}),
    _object({"type": {"const": "signature_delta"}, "signature": {"type": "string"}}),
    _object({"type": {"const": "input_json_delta"}, "partial_json": {"type": "string"}}),
]
_STARTED = {
    **_MESSAGE,
    "properties": {
        **_MESSAGE["properties"],
        "content": {"type": "array", "maxItems": 0},
        "stop_reason": {"type": "null"},
        "usage": _object(
            {"input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}}
        ),  # noqa: E501
    },
}
_MESSAGE_EVENTS = [
    _event("message_start", {"message": _STARTED}),
    _event(
        "content_block_start",
        {"index": {"type": "integer"}, "content_block": {"anyOf": [_TEXT, _THINKING, _TOOL_USE]}},
    ),
    _event("content_block_delta", {"index": {"type": "integer"}, "delta": {"anyOf": _DELTAS}}),
    _event("content_block_stop", {"index": {"type": "integer"}}),
    _event(
        "message_delta",
        {
            "delta": _object({"stop_reason": _STOP, "stop_sequence": _NULLABLE_STRING}),
            "usage": _USAGE_ANTHROPIC,
        },
    ),
    _event("message_stop", {}),
    _event("ping", {}),
    sse_event("error", ANTHROPIC_ERROR),
]
MESSAGES_200: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The message: one message object, or with stream=true the Messages "
        "API's events (message_start ... message_stop, with ping; an error after the stream "
        "started arrives as an error event and the stream ends without message_stop).",
        "content": {
            "application/json": {"schema": _MESSAGE},
            "text/event-stream": _stream(_MESSAGE_EVENTS),
        },
    }
}
COUNT_TOKENS_200: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The estimated input tokens.",
        "content": {"application/json": {"schema": _object({"input_tokens": {"type": "integer"}})}},
    }
}

# --- operations ------------------------------------------------------------------------------

METRICS_200: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Counters, histograms and gauges in Prometheus' text format.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}

#: The statuses every operation may answer (401 only where a key is checked).
_EVERYWHERE = (400, 413, 500)
_OPEN = {("get", "/health")}


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """Return ``schema`` as ccgate answers: every status any route answers, in its shape.

    FastAPI's 422 becomes the 400 ccgate answers with, validation error schemas go,
    and each error response gets the error schema of its path's protocol.
    """
    schema = copy.deepcopy(schema)
    for path, item in schema.get("paths", {}).items():
        shape = shape_of(path)
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.pop("422", None)
            wanted = _EVERYWHERE if (method, path) in _OPEN else (*_EVERYWHERE, 401)
            for status, response in errors(shape, *wanted).items():
                responses.setdefault(str(status), response)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema
