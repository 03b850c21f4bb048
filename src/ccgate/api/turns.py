"""Run a turn for a route: the first event, streaming, pings, disconnects.

Each request is answered with one segment of a turn (``engine.live``): the
whole turn, or, when the model calls the client's tools, the part up to those
calls; the request carrying their results gets the next segment.

A streamed answer waits for the turn's first content (or its failure, or
``FIRST_EVENT_WAIT``) before it commits to ``200``, so a failure that happens
before any output (bad credentials, rate limit, overload) answers with its
real HTTP status; later failures go in-band.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ccgate.api.errors import error_for_turn
from ccgate.api.state import AppState
from ccgate.engine.events import (
    AgentEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallStart,
    TurnEnd,
    TurnError,
)
from ccgate.engine.live import LiveTurn, ends_segment
from ccgate.engine.turn import TurnRequest
from ccgate.errors import ClientGone, GatewayError, Unavailable

__all__ = ["SESSION_HEADER", "Renderer", "collect_turn", "session_key", "stream_turn"]

SESSION_HEADER = "X-Session-Id"


def session_key(request: Request, body_key: str | None) -> str | None:
    """Return the session key a request names: its headers first, then its body."""
    for header in ("x-session-id", "x-opencode-session"):
        value = request.headers.get(header)
        if value:
            return value.strip()
    return body_key.strip() if body_key else None


log = logging.getLogger("ccgate.api")

#: How long a streamed answer may wait for first output before committing to 200.
FIRST_EVENT_WAIT = 10.0
PING_EVERY = 15.0

T = TypeVar("T")


class Renderer(Protocol):
    """A protocol's streaming renderer (``ChatStream``, ``MessageStream``)."""

    def start(self) -> list[str]: ...

    def render(self, event: AgentEvent) -> list[str]: ...

    def error(self, error: GatewayError) -> list[str]: ...


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first, in which case cancel it."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task.cancelled():
        log.info("client_gone path=%s", request.url.path)
        raise ClientGone("the client disconnected before the answer was ready")
    return task.result()


def _log_turn(turn: TurnRequest, started: float, outcome: str, first: float | None) -> None:
    ttft = f"{(first - started) * 1000:.0f}" if first else "-"
    log.info(
        "turn_finished model=%s outcome=%s ms=%.0f ttft_ms=%s",
        turn.model,
        outcome,
        (time.monotonic() - started) * 1000,
        ttft,
    )


def _refuse_when_draining(state: AppState) -> None:
    if state.draining:
        raise Unavailable("ccgate is shutting down and takes no new turns; retry shortly")


def _outcome(end: AgentEvent | None) -> str:
    if isinstance(end, TurnError):
        return end.kind
    if isinstance(end, TurnEnd):
        return "tool_use" if end.waiting_for else "ok"
    return "cancelled"


def _count(state: AppState, end: AgentEvent | None) -> None:
    if isinstance(end, TurnError):
        state.counters.turns_failed += 1
    elif isinstance(end, TurnEnd) and not end.waiting_for:
        state.counters.turns_finished += 1


async def collect_turn(
    state: AppState, request: Request, turn: TurnRequest, namespace: str, key: str | None
) -> tuple[list[AgentEvent], str]:
    """Run a turn (or its next segment) in its session; return its events and the session key.

    A failed turn raises its error as a GatewayError.
    """

    _refuse_when_draining(state)

    async def work() -> tuple[list[AgentEvent], str]:
        live = await state.turns.open(namespace, key, turn)
        events: list[AgentEvent] = []
        try:
            while not (events and ends_segment(events[-1])):
                events.append(await live.next_event())
        except StopAsyncIteration:
            pass
        finally:
            with anyio.CancelScope(shield=True):
                await state.turns.end_segment(live, events)
        return events, live.session_key

    started = time.monotonic()
    events, session_key = await until_disconnect(request, work())
    end = events[-1] if events else None
    _log_turn(turn, started, _outcome(end), None)
    _count(state, end)
    if isinstance(end, TurnError):
        raise error_for_turn(end)
    return events, session_key


async def _first_events(live: LiveTurn, wait: float) -> tuple[list[AgentEvent], bool]:
    """Pull events until content or the segment's end arrives, or ``wait`` passes.

    Say whether the segment ended.
    """
    pulled: list[AgentEvent] = []
    with anyio.move_on_after(wait):
        while True:
            try:
                event = await live.next_event()
            except StopAsyncIteration:
                return pulled, True
            pulled.append(event)
            if ends_segment(event):
                return pulled, True
            if _is_content(event):
                break
    return pulled, False


async def stream_turn(
    state: AppState,
    request: Request,
    turn: TurnRequest,
    renderer: Renderer,
    namespace: str,
    key: str | None,
    *,
    ping: Callable[[], str] | None = None,
) -> StreamingResponse:
    """Start a turn (or its next segment) in its session and answer with its events as SSE."""
    _refuse_when_draining(state)
    started = time.monotonic()
    seen: list[AgentEvent] = []
    holder: list[LiveTurn] = []
    finished: list[bool] = []
    streaming: list[bool] = []

    async def begin() -> tuple[list[AgentEvent], bool]:
        live = await state.turns.open(namespace, key, turn)
        holder.append(live)
        return await _first_events(live, FIRST_EVENT_WAIT)

    async def finish() -> None:
        # Once: from the body's end, or from the response when the body never ran.
        if holder and not finished:
            finished.append(True)
            # A body that never ran delivered nothing: the turn must not wait for results.
            delivered = seen if streaming else []
            with anyio.CancelScope(shield=True):
                await state.turns.end_segment(holder[0], delivered)

    try:
        first, ended = await until_disconnect(request, begin())
    except BaseException:
        await finish()
        raise
    seen.extend(first)
    if ended and isinstance(first[-1], TurnError) and not any(map(_is_content, first)):
        await finish()
        _count(state, first[-1])
        _log_turn(turn, started, first[-1].kind, None)
        raise error_for_turn(first[-1])
    live = holder[0]

    async def body() -> AsyncIterator[str]:
        end: AgentEvent | None = None
        first_at: float | None = time.monotonic() if any(map(_is_content, first)) else None
        streaming.append(True)
        try:
            for line in renderer.start():
                yield line
            chain = contextlib.aclosing(_chain(first, None if ended else live, ping, seen))
            async with chain as events:
                async for event in events:
                    if isinstance(event, str):
                        yield event
                        continue
                    if first_at is None and _is_content(event):
                        first_at = time.monotonic()
                    if ends_segment(event):
                        # Record (and park) the turn before the client sees its end: a client
                        # that answers tool calls at once must find the turn waiting.
                        end = event
                        await finish()
                    if isinstance(event, TurnError):
                        for line in renderer.error(error_for_turn(event)):
                            yield line
                        return
                    for line in renderer.render(event):
                        yield line
        finally:
            with anyio.CancelScope(shield=True):
                await finish()
            _count(state, end)
            _log_turn(turn, started, _outcome(end), first_at)

    return SSEResponse(body(), {SESSION_HEADER: live.session_key}, on_close=finish)


async def _chain(
    first: list[AgentEvent],
    rest: LiveTurn | None,
    ping: Callable[[], str] | None,
    seen: list[AgentEvent],
) -> AsyncGenerator[AgentEvent | str, None]:
    for event in first:
        yield event
    if rest is None:
        return
    pending: asyncio.Task[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(rest.next_event())
            done, _ = await asyncio.wait({pending}, timeout=PING_EVERY)
            if not done:
                yield ping() if ping else ": ping\n\n"
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            finally:
                if done:
                    pending = None
            seen.append(event)
            yield event
            if ends_segment(event):
                return
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending


def _is_content(event: AgentEvent) -> bool:
    return isinstance(event, TextDelta | ThinkingDelta | ToolCallStart)


class SSEResponse(StreamingResponse):
    """A streaming response that always watches for the client going away.

    Starlette skips the watch on ASGI 2.4 servers and notices a disconnect only
    at the next write; a turn that is thinking or stalled writes nothing for a
    while, and its CLI process must end as soon as the client is gone.
    ``on_close`` runs when the response is over however it ended, even if the
    body never started (the client left before the first byte).
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterator[str],
        headers: dict[str, str] | None,
        on_close: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(
            content,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})},
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def respond() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:
                        pass
                    finally:
                        group.cancel_scope.cancel()

                group.start_soon(respond)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._on_close()
