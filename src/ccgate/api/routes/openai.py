"""The OpenAI-compatible routes: ``/v1/chat/completions`` and ``/v1/models``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ccgate.api.answer import FrontDoor, answer
from ccgate.api.auth import Client
from ccgate.api.openapi import CHAT_200, MODEL_200, MODELS_200, errors
from ccgate.api.routing import GatewayRoute
from ccgate.api.state import State
from ccgate.protocol import anthropic, openai

__all__ = ["router"]

router = APIRouter(tags=["OpenAI-compatible"], route_class=GatewayRoute)


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={**CHAT_200, **errors("openai", 402, 403, 404, 429, 502, 503, 504)},
)
async def chat_completions(
    body: openai.ChatCompletionRequest, request: Request, state: State, client: Client
) -> Response:
    """Answer a chat completion, streamed (SSE chunks) or as one JSON object."""
    requested = body.model or state.settings.default_model
    usage = bool(body.stream_options and body.stream_options.include_usage)
    door = FrontDoor(
        endpoint="/v1/chat/completions",
        requested=requested,
        session_id=body.session_id,
        to_turn=lambda model: openai.to_turn(body, model, requested),
        stream=(lambda turn: openai.ChatStream(requested, usage)) if body.stream else None,
        whole=lambda turn, events: openai.completion_from_events(events, requested),
    )
    return await answer(state, request, client, door)


def _speaks_anthropic(request: Request) -> bool:
    """Tell whether the caller is an Anthropic client (its SDKs send ``anthropic-version``)."""
    return "anthropic-version" in request.headers


@router.get("/v1/models", responses=MODELS_200)
async def list_models(request: Request, state: State, client: Client) -> dict[str, Any]:
    """List the models this gateway offers, Claude Code's current ones first.

    Anthropic clients (``anthropic-version`` header) get the Anthropic Models
    API's shape, others OpenAI's.
    """
    entries = state.catalogue.listing()
    if _speaks_anthropic(request):
        return anthropic.model_list(entries)
    return {"object": "list", "data": [openai.model_object(m, i) for i, m in entries]}


@router.get("/v1/models/{model_id:path}", responses={**MODEL_200, **errors("openai", 404)})
async def get_model(
    model_id: str, request: Request, state: State, client: Client
) -> dict[str, Any]:
    """Describe one model (any accepted name or alias)."""
    model = state.catalogue.resolve(model_id)
    if _speaks_anthropic(request):
        return anthropic.model_info(model)
    return openai.model_object(model)
