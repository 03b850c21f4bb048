"""The Anthropic-compatible routes: ``/v1/messages`` and ``/v1/messages/count_tokens``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ccgate.api.answer import admit, collect_turn, session_key, stream_turn
from ccgate.api.auth import Client
from ccgate.api.openapi import COUNT_TOKENS_200, MESSAGES_200, errors
from ccgate.api.routing import GatewayRoute
from ccgate.api.state import State
from ccgate.protocol import anthropic

__all__ = ["router"]

router = APIRouter(tags=["Anthropic-compatible"], route_class=GatewayRoute)


@router.post(
    "/v1/messages",
    response_model=None,
    responses={**MESSAGES_200, **errors("anthropic", 402, 403, 404, 429, 502, 503, 504, 529)},
)
async def messages(
    body: anthropic.MessagesRequest, request: Request, state: State, client: Client
) -> Response:
    """Answer a Messages request, streamed (SSE events) or as one JSON message."""
    requested = body.model or state.settings.default_model
    model = state.catalogue.resolve(requested)
    client.check_model(model)
    turn = anthropic.to_turn(body, model, requested)
    session = session_key(request, body.session_id)
    ticket = await admit(state, client, "/v1/messages", model, requested)
    thinking_text = anthropic.shows_thinking(turn)
    if body.stream:
        renderer = anthropic.MessageStream(requested, thinking_text=thinking_text)
        return await stream_turn(
            state, request, turn, ticket, session, renderer, ping=renderer.ping
        )
    events, headers = await collect_turn(state, request, turn, ticket, session)
    message = anthropic.message_from_events(events, requested, thinking_text=thinking_text)
    return JSONResponse(message, headers=headers)


@router.post(
    "/v1/messages/count_tokens", responses={**COUNT_TOKENS_200, **errors("anthropic", 403, 404)}
)
async def count_tokens(
    body: anthropic.CountTokensRequest, state: State, client: Client
) -> dict[str, int]:
    """Estimate a request's input tokens without running a turn."""
    if body.model:
        client.check_model(state.catalogue.resolve(body.model))
    return {"input_tokens": anthropic.count_tokens(body)}
