"""The Anthropic-compatible routes: ``/v1/messages`` and ``/v1/messages/count_tokens``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from ccgate.api.auth import require_client
from ccgate.api.state import State
from ccgate.api.turns import SESSION_HEADER, collect_turn, session_key, stream_turn
from ccgate.protocol import anthropic

__all__ = ["router"]

router = APIRouter(tags=["Anthropic-compatible"])

Client = Annotated[str, Depends(require_client)]


@router.post("/v1/messages", response_model=None)
async def messages(
    body: anthropic.MessagesRequest, request: Request, state: State, client: Client
) -> Response:
    """Answer a Messages request, streamed (SSE events) or as one JSON message."""
    requested = body.model or state.settings.default_model
    model = state.catalogue.resolve(requested)
    turn = anthropic.to_turn(body, model, requested)
    key = session_key(request, body.session_id)
    state.counters.requests += 1
    if body.stream:
        renderer = anthropic.MessageStream(requested)
        return await stream_turn(state, request, turn, renderer, client, key, ping=renderer.ping)
    events, session = await collect_turn(state, request, turn, client, key)
    return JSONResponse(
        anthropic.message_from_events(events, requested), headers={SESSION_HEADER: session}
    )


@router.post("/v1/messages/count_tokens")
async def count_tokens(
    body: anthropic.CountTokensRequest, state: State, client: Client
) -> dict[str, int]:
    """Estimate a request's input tokens without running a turn."""
    if body.model:
        state.catalogue.resolve(body.model)
    return {"input_tokens": anthropic.count_tokens(body)}
