"""The Anthropic-compatible routes: ``/v1/messages`` and ``/v1/messages/count_tokens``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ccgate.api.answer import FrontDoor, answer
from ccgate.api.auth import Client
from ccgate.api.openapi import COUNT_TOKENS_200, MESSAGES_200, errors
from ccgate.api.routing import GatewayRoute
from ccgate.api.state import State
from ccgate.engine.events import AgentEvent
from ccgate.engine.turn import TurnRequest
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

    def stream(turn: TurnRequest) -> anthropic.MessageStream:
        return anthropic.MessageStream(requested, thinking_text=anthropic.shows_thinking(turn))

    def whole(turn: TurnRequest, events: list[AgentEvent]) -> dict[str, Any]:
        shown = anthropic.shows_thinking(turn)
        return anthropic.message_from_events(events, requested, thinking_text=shown)

    door = FrontDoor(
        endpoint="/v1/messages",
        requested=requested,
        session_id=body.session_id,
        to_turn=lambda model: anthropic.to_turn(body, model, requested),
        stream=stream if body.stream else None,
        whole=whole,
    )
    return await answer(state, request, client, door)


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
