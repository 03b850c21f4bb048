"""The OpenAI Responses API: ``/v1/responses`` and the stored responses.

A response is answered like a chat completion (the same turns, sessions, client
tools that suspend the live turn, quotas, ledger and cache); what is its own is
the shape (``protocol.responses``) and that responses are stored (``store``,
default true) so a later request continues one with ``previous_response_id``,
across restarts, within the caller's namespace.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from starlette.convertors import Convertor, register_url_convertor

from ccgate.access.caller import Caller
from ccgate.api.answer import FrontDoor, answer, run_segment, session_key
from ccgate.api.auth import Client
from ccgate.api.openapi import RESPONSES_200, errors
from ccgate.api.routing import GatewayRoute
from ccgate.api.state import State
from ccgate.engine.events import AgentEvent
from ccgate.errors import GatewayError, InvalidRequest, NotFound
from ccgate.gateway import Gateway
from ccgate.protocol import responses as wire
from ccgate.store.responses import ResponseRecord

__all__ = ["router"]

router = APIRouter(tags=["OpenAI-compatible"], route_class=GatewayRoute)
log = logging.getLogger("ccgate.api")

#: How many stored responses one conversation may chain through ``previous_response_id``.
CHAIN_MAX = 2000


class _ResponseIdConvertor(Convertor[str]):
    """A response id in a path: ``resp_`` and up to 64 letters, digits, ``_`` or ``-``.

    Only such paths reach the stored-response routes, so ``/v1/responses/input_tokens``
    is that route alone (and its ``Allow`` says so).
    """

    regex = "resp_[A-Za-z0-9_-]{1,64}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("response_id", _ResponseIdConvertor())

ResponseId = Annotated[str, Path(pattern=r"^resp_[A-Za-z0-9_-]{1,64}$")]


async def _resolve(state: Any, namespace: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace each ``item_reference`` with the stored item it names (an input or output
    item of one of the caller's stored responses)."""
    out = []
    for i, item in enumerate(items):
        if not (isinstance(item, dict) and item.get("type") == "item_reference"):
            out.append(item)
            continue
        ref = item.get("id")
        found = None
        owner = wire.response_of_item(ref) if isinstance(ref, str) else None
        if owner is not None:
            record = await state.responses.get(namespace, owner)
            if record is not None:
                stored = [*record.input, *record.body.get("output", [])]
                found = next((s for s in stored if s.get("id") == ref), None)
        if found is None:
            raise InvalidRequest(
                f"input[{i}]: item_reference {str(ref)[:80]!r} names no stored item of this "
                "key (only items of stored responses can be referenced)",
                param=f"input[{i}]",
            )
        out.append(found)
    return out


async def _history(state: Any, namespace: str, previous: str) -> list[dict[str, Any]]:
    chain = await state.responses.chain(namespace, previous, CHAIN_MAX)
    if not chain or chain[-1].id != previous:
        raise NotFound(
            f"previous_response_id: no stored response {previous!r} (it was not stored, "
            "was deleted, or belongs to another key)",
            code="previous_response_not_found",
        )
    items: list[dict[str, Any]] = []
    for record in chain:
        items += wire.conversation_of(record.input, record.body)
    return items


@router.post(
    "/v1/responses",
    response_model=None,
    responses={**RESPONSES_200, **errors("openai", 402, 403, 404, 429, 502, 503, 504)},
)
async def create_response(
    body: wire.ResponsesRequest, request: Request, state: State, client: Client
) -> Response:
    """Answer a response, streamed (the Responses API's SSE events) or as one object."""
    if body.background and body.stream:
        raise InvalidRequest(
            "background responses are polled (GET /v1/responses/{id}), not streamed: leave "
            "stream out, or background",
            param="stream",
        )
    if body.background and not body.store:
        raise InvalidRequest(
            "a background response must be stored (store: true): it is fetched later",
            param="store",
        )
    requested = body.model or state.settings.default_model
    namespace = client.namespace
    history = (
        await _history(state, namespace, body.previous_response_id)
        if body.previous_response_id
        else []
    )
    response_id = "resp_" + secrets.token_hex(16)
    created = time.time()
    echo = wire.Echo.of(body, requested)
    given = await _resolve(state, namespace, wire.input_items(body))
    new_items = wire.stored_input(response_id, given)

    async def store(events: list[AgentEvent]) -> None:
        if not body.store:
            return
        final = wire.finished(response_id, echo, events, created)
        record = ResponseRecord(
            id=response_id,
            namespace=namespace,
            previous_id=body.previous_response_id,
            status=final["status"],
            input=new_items,
            body=final,
            created_at=created,
        )
        await state.responses.save(record)

    if body.background:
        return await _background(
            state,
            request,
            client,
            body,
            requested,
            history,
            given,
            response_id,
            echo,
            created,
            store,
        )
    door = FrontDoor(
        endpoint="/v1/responses",
        requested=requested,
        session_id=body.session_id,
        to_turn=lambda model: wire.to_turn(body, model, requested, history, given),
        stream=(lambda turn: wire.ResponseStream(response_id, echo, created))
        if body.stream
        else None,
        whole=lambda turn, events: wire.finished(response_id, echo, events, created),
        on_end=store,
    )
    return await answer(state, request, client, door)


async def _background(
    state: Gateway,
    request: Request,
    client: Caller,
    body: wire.ResponsesRequest,
    requested: str,
    history: list[dict[str, Any]],
    given: list[dict[str, Any]],
    response_id: str,
    echo: wire.Echo,
    created: float,
    store: Callable[[list[AgentEvent]], Awaitable[None]],
) -> Response:
    """Admit the request, store it queued, answer at once; the turn runs on its own."""
    model = state.catalogue.resolve(requested)
    client.check_model(model)
    turn = wire.to_turn(body, model, requested, history, given)
    session = session_key(request, body.session_id)
    ticket = await state.admit(client, "/v1/responses", model, requested)
    if ticket.accounts is not None:
        turn = replace(turn, accounts=ticket.accounts)
    queued = wire.response_object(response_id, echo, created_at=created, status="queued", output=[])
    record = ResponseRecord(
        id=response_id,
        namespace=client.namespace,
        previous_id=body.previous_response_id,
        status="queued",
        input=wire.stored_input(response_id, given),
        body=queued,
        created_at=created,
    )
    await state.responses.save(record)
    cache_control = request.headers.get("cache-control", "")

    async def run() -> None:
        try:
            await state.responses.save(
                replace(record, status="in_progress", body={**queued, "status": "in_progress"})
            )
            events, _ = await run_segment(state, turn, ticket, session, cache_control=cache_control)
            await store(events)
        except asyncio.CancelledError:
            cancelled = {**queued, "status": "cancelled", "completed_at": int(time.time())}
            with anyio.CancelScope(shield=True):
                await state.responses.save(replace(record, status="cancelled", body=cancelled))
            raise
        except Exception as exc:  # noqa: BLE001 - the failure is what the poller reads
            log.warning("background_response_failed id=%s", response_id, exc_info=True)
            message = exc.message if isinstance(exc, GatewayError) else "ccgate failed"
            failed = {
                **queued,
                "status": "failed",
                "error": {"code": "server_error", "message": message},
            }
            await state.responses.save(replace(record, status="failed", body=failed))

    state.run_in_background(response_id, run())
    return JSONResponse(queued)


@router.post("/v1/responses/input_tokens", responses=errors("openai", 403, 404))
async def input_tokens(body: wire.ResponsesRequest, state: State, client: Client) -> dict[str, Any]:
    """Estimate a response's input tokens (with the conversation it continues); no turn runs."""
    requested = body.model or state.settings.default_model
    model = state.catalogue.resolve(requested)
    client.check_model(model)
    history = (
        await _history(state, client.namespace, body.previous_response_id)
        if body.previous_response_id
        else []
    )
    given = await _resolve(state, client.namespace, wire.input_items(body))
    turn = wire.to_turn(body, model, requested, history, given)
    return {"object": "response.input_tokens", "input_tokens": wire.count_input_tokens(turn)}


async def _stored(state: Any, namespace: str, response_id: str) -> ResponseRecord:
    record: ResponseRecord | None = await state.responses.get(namespace, response_id)
    if record is None:
        raise NotFound(
            f"no stored response {response_id!r} for this key", code="response_not_found"
        )
    return record


@router.get("/v1/responses/{response_id:response_id}", responses=errors("openai", 404))
async def get_response(response_id: ResponseId, state: State, client: Client) -> dict[str, Any]:
    """Return a stored response."""
    return (await _stored(state, client.namespace, response_id)).body


@router.get("/v1/responses/{response_id:response_id}/input_items", responses=errors("openai", 404))
async def get_input_items(
    response_id: ResponseId, state: State, client: Client, order: Literal["asc", "desc"] = "desc"
) -> dict[str, Any]:
    """List a stored response's input items (newest first unless ``order=asc``)."""
    record = await _stored(state, client.namespace, response_id)
    items = record.input if order == "asc" else record.input[::-1]
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": False,
    }


@router.post("/v1/responses/{response_id:response_id}/cancel", responses=errors("openai", 400, 404))
async def cancel_response(response_id: ResponseId, state: State, client: Client) -> dict[str, Any]:
    """Cancel a background response that is still queued or running; answer it as it is."""
    record = await _stored(state, client.namespace, response_id)
    if not record.body.get("background"):
        raise InvalidRequest("only a background response can be cancelled", param="response_id")
    await state.cancel_background(response_id)
    return (await _stored(state, client.namespace, response_id)).body


@router.delete("/v1/responses/{response_id:response_id}", responses=errors("openai", 404))
async def delete_response(response_id: ResponseId, state: State, client: Client) -> JSONResponse:
    """Delete a stored response (those that continued it keep their own items)."""
    if not await state.responses.delete(client.namespace, response_id):
        raise NotFound(
            f"no stored response {response_id!r} for this key", code="response_not_found"
        )
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})
