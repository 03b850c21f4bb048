"""The demo ASGI app: an Anthropic Messages API answered by a ``ScriptedModel``.

Routes: ``POST /v1/messages`` (streamed and not), ``POST /v1/messages/count_tokens``,
``HEAD|GET /api/hello`` (the CLI's connectivity check), ``GET|POST /demo/plans`` (each
credential's plan, ``demo.plan``) and ``GET /``. Anything else
gets an Anthropic-shaped 404. Every request, on any path, is recorded. A model
id containing ``nonexistent`` is answered as Anthropic answers a model it does
not know (404 ``not_found_error``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ccgate.demo.answer import (
    Answer,
    build_answer,
    error_response,
    estimate_input_tokens,
    message_json,
    stream_events,
)
from ccgate.demo.model import RecordedRequest, ScriptedModel
from ccgate.demo.plan import Plan, credential_of
from ccgate.demo.reply import Reply

__all__ = ["UNKNOWN_MODEL_MARK", "create_demo_app"]

#: A model id containing this is one the scripted model does not know.
UNKNOWN_MODEL_MARK = "nonexistent"

_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_demo_app(model: ScriptedModel) -> Starlette:
    """Build the ASGI app that serves ``model``."""

    async def count_tokens(request: Request) -> Response:
        body = await _record(model, request)
        return JSONResponse({"input_tokens": estimate_input_tokens(body)})

    async def hello(request: Request) -> Response:
        await _record(model, request)
        return JSONResponse({"message": "hello"})

    async def root(request: Request) -> Response:
        await _record(model, request)
        return JSONResponse({"name": "ccgate demo model", "messages": "/v1/messages"})

    async def plans(request: Request) -> Response:
        body = await _record(model, request)
        if request.method == "POST":
            if not isinstance(body, dict) or not all(
                isinstance(k, str) and isinstance(v, dict) for k, v in body.items()
            ):
                payload, _ = error_response(400, 'demo: POST {"<credential>": {...plan...}}')
                return JSONResponse(payload, status_code=400)
            for credential, fields in body.items():
                model.plans.set(credential, fields)
        return JSONResponse(model.plans.views())

    async def fallback(request: Request) -> Response:
        await _record(model, request)
        body, _ = error_response(404, f"demo: no route for {request.method} {request.url.path}")
        return JSONResponse(body, status_code=404)

    return Starlette(
        routes=[
            Route("/v1/messages", _Messages(model), methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
            Route("/api/hello", hello, methods=["GET", "HEAD"]),
            Route("/demo/plans", plans, methods=["GET", "POST"]),
            Route("/", root, methods=["GET", "HEAD"]),
            Route("/{path:path}", fallback, methods=_ALL_METHODS),
        ]
    )


class _Messages:
    """The ``POST /v1/messages`` endpoint, raw ASGI so a stream can be cut mid-body."""

    def __init__(self, model: ScriptedModel) -> None:
        self._model = model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request, giving up quietly when the client goes away."""
        body = await _record(self._model, Request(scope, receive))
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            payload, _ = error_response(400, "demo: body must be a JSON object with messages")
            await JSONResponse(payload, status_code=400)(scope, receive, send)
            return
        model = body.get("model")
        if isinstance(model, str) and UNKNOWN_MODEL_MARK in model:
            # As Anthropic answers a model id it does not know.
            payload, _ = error_response(404, f"model: {model}")
            await JSONResponse(payload, status_code=404)(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in Request(scope).headers.items()}
        plan = self._model.plans.answer(credential_of(headers))
        extra = plan.headers() if plan is not None else {}
        reply = self._model.reply_for(body)
        if plan is not None and plan.rejected():
            reply = _refusal(plan, streamed=body.get("stream") is True)
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
            await self._answer(body, reply, extra, scope, receive, send)
            group.cancel_scope.cancel()

    async def _answer(
        self,
        body: dict[str, Any],
        reply: Reply,
        extra: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Send the error, message or event stream that ``reply`` asks for."""
        request_id = self._model.next_id("req")
        if reply.error_status is not None and not (
            reply.stream_error and body.get("stream") is True
        ):
            if reply.stall:
                await anyio.sleep(reply.stall)
            payload, headers = error_response(reply.error_status, reply.error_message)
            headers["request-id"] = request_id
            response = JSONResponse(
                payload, status_code=reply.error_status, headers={**headers, **extra}
            )
            await response(scope, receive, send)
            return
        answer = build_answer(reply, body, self._model.next_id)
        if body.get("stream") is True:
            await _stream(answer, reply, request_id, send, extra)
            return
        if reply.stall:
            await anyio.sleep(reply.stall)
        if reply.cut_after_chunks is None:
            response = JSONResponse(
                message_json(answer), headers={"request-id": request_id, **extra}
            )
            await response(scope, receive, send)
            return
        data = json.dumps(message_json(answer)).encode()
        # A cut body: promise the full length, send half, and leave (uvicorn closes).
        await _start(send, "application/json", request_id, len(data), extra)
        half = data[: len(data) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})


def _refusal(plan: Plan, *, streamed: bool) -> Reply:
    """Return how a full plan refuses: a 429, or (``refuse_in_stream``, a streamed request)
    an ``error`` event inside a 200 stream; Claude Code then asks again without streaming,
    and gets the 429."""
    claim, window = plan.binding()
    when = time.strftime("%H:%M UTC", time.gmtime(window.reset))
    message = f"demo: the {claim} limit of this account is reached; it resets at {when}"
    if plan.extra_usage_only:
        message = (
            "demo: third-party apps now draw from your extra usage, not your plan limits; "
            "this account has no extra usage left"
        )
    if plan.refuse_in_stream and streamed:
        return Reply(text="", stream_error="rate_limit_error", error_message=message)
    return Reply(error_status=429, error_message=message)


async def _stream(
    answer: Answer, reply: Reply, request_id: str, send: Send, extra: dict[str, str]
) -> None:
    """Send ``answer`` as Anthropic SSE, honouring chunk delays, stalls, cuts and an error
    event right after ``message_start`` (``stream_error``)."""
    await _start(send, "text/event-stream", request_id, None, extra)
    deltas = 0
    for name, data in stream_events(answer):
        if reply.stream_error and name != "message_start":
            error = {
                "type": "error",
                "error": {
                    "type": reply.stream_error,
                    "message": reply.error_message or f"demo: scripted {reply.stream_error}",
                },
            }
            frame = f"event: error\ndata: {json.dumps(error)}\n\n".encode()
            await send({"type": "http.response.body", "body": frame, "more_body": False})
            return
        is_delta = name == "content_block_delta"
        if reply.cut_after_chunks is not None and (
            name == "message_delta" or (is_delta and deltas >= reply.cut_after_chunks)
        ):
            return  # without a final body: the connection is closed mid-stream
        if is_delta:
            if deltas and reply.delay:
                await anyio.sleep(reply.delay)
            deltas += 1
        frame = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        await send({"type": "http.response.body", "body": frame, "more_body": True})
        if name == "ping" and reply.stall:
            await anyio.sleep(reply.stall)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _start(
    send: Send,
    media_type: str,
    request_id: str,
    length: int | None,
    extra: dict[str, str] | None = None,
) -> None:
    """Send the response start line and headers (``extra``: a plan's rate-limit headers)."""
    headers = [
        (b"content-type", media_type.encode()),
        (b"cache-control", b"no-cache"),
        (b"request-id", request_id.encode()),
        *((k.encode(), v.encode()) for k, v in (extra or {}).items()),
    ]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` once the client disconnects."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _record(model: ScriptedModel, request: Request) -> Any:
    """Record ``request`` in ``model`` and return its parsed JSON body (``None`` if not JSON)."""
    raw = await request.body()
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = None
    model.record(
        RecordedRequest(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            query=request.url.query,
        )
    )
    return body
