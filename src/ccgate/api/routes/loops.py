"""The Loop API (``/v1/loops``): long-lived agents, their turns, choices and events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import Response

from ccgate.access.caller import Caller
from ccgate.api.answer import PING_EVERY, SSEResponse
from ccgate.api.auth import Client
from ccgate.api.forward import to_loop_home
from ccgate.api.openapi import LOOP_ERROR
from ccgate.api.routing import GatewayRoute
from ccgate.api.state import State
from ccgate.errors import InvalidRequest, NotFound, RequestTooLarge, Unavailable
from ccgate.gateway import Gateway
from ccgate.loops.events import Failed, Interrupted, is_final
from ccgate.loops.manager import PERMISSION_MODES
from ccgate.loops.runtime import TurnLog
from ccgate.protocol import loops as wire
from ccgate.store.loops import LoopRecord

__all__ = ["admission", "router"]

router = APIRouter(prefix="/v1/loops", tags=["Loops"], route_class=GatewayRoute)

_SSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A stream of Server-Sent Events (`event: <name>`, `data: <JSON>`): "
        + "; ".join(f"`{name}` {data}" for name, data in wire.EVENTS.items()),
        "content": {"text/event-stream": {"schema": wire.event_schemas()}},
    }
}
_ERROR_CODES: dict[int, str] = {
    400: "invalid_request_error: invalid_request, loop_archived, invalid_choice_payload, "
    "invalid_permission_mode, metadata_too_large",
    401: "authentication_error: invalid_api_key",
    403: "permission_error: not_loop_owner, model_not_allowed",
    404: "not_found_error: loop_not_found, choice_not_found, model_not_found",
    409: "conflict_error: idempotency_key_reused",
    413: "request_too_large: content_too_large",
    429: "rate_limit_error: quota_exceeded, rate_limit_exceeded",
    503: "unavailable_error: unavailable (ccgate is shutting down)",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Describe the errors a route answers with (the Loop API's error shape, always JSON)."""
    return {
        code: {
            "description": _ERROR_CODES[code],
            "content": {"application/json": {"schema": LOOP_ERROR}},
        }
        for code in (400, 401, *codes)
    }


def _view(state: Gateway, record: LoopRecord) -> dict[str, Any]:
    runtime = state.loops.running(record.id)
    current = runtime.current if runtime is not None else None
    turn = None
    if runtime is not None and current is not None:
        turn = {
            "turn_id": current.turn_id,
            "started_at": int(current.started_at) if current.started_at else None,
            "pending_choice_id": runtime.pending_choice_id,
        }
    return wire.loop_object(
        record,
        busy=current is not None,
        queue_depth=runtime.queue_depth if runtime is not None else 0,
        current=turn,
    )


@router.post("", status_code=201, response_model=wire.Loop, responses=_errors(403, 404))
async def create_loop(body: wire.LoopCreate, state: State, client: Client) -> dict[str, Any]:
    """Make a loop: an agent with a workspace of its own."""
    mode = wire.check_permission_mode(body.permission_mode, PERMISSION_MODES) or "default"
    model = state.catalogue.resolve(body.model or state.settings.default_model)
    client.check_model(model)
    record = await state.loops.create(
        client.namespace,
        title=(body.title or "").strip() or "untitled",
        metadata=wire.check_metadata(body.metadata),
        permission_mode=mode,
        model=model.id,
    )
    return _view(state, record)


@router.get("", response_model=wire.LoopList, responses=_errors())
async def list_loops(
    state: State,
    client: Client,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
    before: str | None = None,
    archived: bool = False,
) -> dict[str, Any]:
    """List the caller's loops, newest first; ``after``/``before`` take a loop id."""
    if after and before:
        raise InvalidRequest("give after or before, not both", param="after")
    page, more = await state.loops.list_loops(
        client.namespace, limit=limit, after=after, before=before, archived=archived
    )
    return {
        "object": "list",
        "data": [wire.loop_object(r) for r in page],
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
        "has_more": more,
    }


@router.get("/{loop_id}", response_model=wire.Loop, responses=_errors(403, 404))
async def get_loop(loop_id: str, state: State, client: Client) -> dict[str, Any]:
    """Describe a loop, with what it is doing now."""
    return _view(state, await state.loops.owned(client.namespace, loop_id))


@router.delete("/{loop_id}", status_code=204, responses=_errors(403, 404))
async def archive_loop(loop_id: str, request: Request, state: State, client: Client) -> Response:
    """Archive a loop: its turn stops, its process ends, it takes no more messages."""
    record = await state.loops.owned(client.namespace, loop_id)
    handed = await to_loop_home(state, request, record.id)
    if handed is not None:
        return handed
    await state.loops.archive(record)
    return Response(status_code=204)


def admission(state: Gateway, client: Caller, record: LoopRecord) -> Callable[..., Any]:
    """Return how a loop message of ``client`` is admitted and accounted (API and console)."""

    async def admit() -> Callable[[TurnLog], Awaitable[None]]:
        model = state.catalogue.resolve(record.model)
        ticket = await state.admit(
            client, "/v1/loops/messages", model, record.model, session_key=record.id
        )

        async def account(turn: TurnLog) -> None:
            end = turn.final
            status = "interrupted" if isinstance(end, Interrupted) else None
            if isinstance(end, Failed):
                status = end.code
            await state.accounting.close(ticket, turn.agent_events, status=status)
            # A loop turn lasts seconds: its row is written before its end is sent, so a
            # client that saw `done` finds the turn in the ledger as it ended, whatever
            # happens to this replica next.
            await state.accounting.flush()

        return account

    return admit


async def _follow(turn: TurnLog) -> AsyncIterator[str]:
    """Yield a turn's events from its start until its end, with pings while it is quiet."""
    seen = 0
    while True:
        if not await turn.wait(seen, PING_EVERY):
            yield wire.ping()
            continue
        while seen < len(turn.events):
            event = turn.events[seen]
            seen += 1
            yield wire.sse(event)
            if is_final(event):
                return


async def _nothing() -> None:
    return None


@router.post(
    "/{loop_id}/messages",
    status_code=200,
    response_class=SSEResponse,
    responses={**_SSE, **_errors(403, 404, 409, 413, 429, 503)},
)
async def send_message(
    loop_id: str,
    body: wire.LoopMessage,
    request: Request,
    state: State,
    client: Client,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> Response:
    """Send a message; the answer is the turn's events as SSE (the turn goes on if you leave)."""
    if state.draining:  # before anything else: an idempotency record is no answer either
        raise Unavailable("ccgate is shutting down and takes no new turns; retry shortly")
    record = await state.loops.owned(client.namespace, loop_id)
    handed = await to_loop_home(state, request, record.id)
    if handed is not None:
        return handed
    size = len(body.content.encode())
    if size > wire.CONTENT_MAX:
        raise RequestTooLarge(
            f"content must be at most 1 MB ({wire.CONTENT_MAX} bytes of UTF-8); "
            f"this one is {size} bytes",
            code="content_too_large",
        )
    mode = wire.check_permission_mode(body.permission_mode, PERMISSION_MODES)
    turn = await state.loops.send(
        record,
        body.content,
        mode or record.permission_mode,
        idempotency_key,
        admission(state, client, record),
    )
    return SSEResponse(_follow(turn), {"x-turn-id": turn.turn_id}, on_close=_nothing)


@router.get(
    "/{loop_id}/events",
    status_code=200,
    response_class=SSEResponse,
    responses={**_SSE, **_errors(403, 404)},
)
async def watch_loop(loop_id: str, request: Request, state: State, client: Client) -> Response:
    """Watch everything the loop does, from now on (a running turn starts with a snapshot)."""
    record = await state.loops.owned(client.namespace, loop_id)
    if record.archived_at is not None:
        raise InvalidRequest(
            "this loop is archived: nothing more happens in it to watch", code="loop_archived"
        )
    handed = await to_loop_home(state, request, record.id)
    if handed is not None:
        return handed
    watch, snapshot = state.loops.runtime(record).watch()

    async def events() -> AsyncIterator[str]:
        try:
            if snapshot is not None:
                yield wire.sse(snapshot)
            while True:
                try:
                    event = await watch.next(PING_EVERY)
                except StopAsyncIteration:
                    return
                yield wire.ping() if event is None else wire.sse(event)
                if isinstance(event, Failed) and event.code == "watcher_too_slow":
                    return
        finally:
            watch.close()

    return SSEResponse(events(), None, on_close=_nothing)


@router.post(
    "/{loop_id}/choices/{choice_id}",
    status_code=202,
    response_model=wire.ChoiceAccepted,
    responses=_errors(403, 404),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": wire.ChoiceBody.model_json_schema()}},
        }
    },
)
async def answer_choice(
    loop_id: str,
    choice_id: str,
    body: Annotated[Any, Body(include_in_schema=False)],
    request: Request,
    state: State,
    client: Client,
) -> Any:
    """Answer a permission (``allow``, ``message``) or a question (``answers``)."""
    record = await state.loops.owned(client.namespace, loop_id)
    answer = wire.parse_choice(body)
    handed = await to_loop_home(state, request, record.id)
    if handed is not None:
        return handed
    runtime = state.loops.running(record.id)
    if runtime is None:
        raise NotFound(f"no pending choice '{choice_id[:80]}'", code="choice_not_found")
    runtime.resolve(choice_id, answer)
    return {"choice_id": choice_id, "status": "resolved"}


@router.post(
    "/{loop_id}/interrupt",
    status_code=202,
    response_model=wire.InterruptAccepted,
    responses=_errors(403, 404),
)
async def interrupt_loop(loop_id: str, request: Request, state: State, client: Client) -> Any:
    """Stop the running turn at once; queued messages then run."""
    record = await state.loops.owned(client.namespace, loop_id)
    handed = await to_loop_home(state, request, record.id)
    if handed is not None:
        return handed
    runtime = state.loops.running(record.id)
    stopped = runtime.interrupt() if runtime is not None else False
    return {"loop_id": record.id, "interrupted": stopped}
