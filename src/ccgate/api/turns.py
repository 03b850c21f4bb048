"""Run a turn for a route: the gate, the first event, streaming, pings, disconnects.

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
from contextlib import AsyncExitStack
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
    TurnEnd,
    TurnError,
    Usage,
)
from ccgate.engine.sessions import SessionTurn
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


def _reply(events: list[AgentEvent]) -> tuple[str, Usage | None, TurnEnd | None]:
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    usage = next((e for e in events if isinstance(e, Usage)), None)
    end = next((e for e in events if isinstance(e, TurnEnd)), None)
    return text, usage, end


async def _settle(state: AppState, bound: SessionTurn, events: list[AgentEvent]) -> None:
    """Record a finished turn in its session, or make the session rebuild next time."""
    text, usage, end = _reply(events)
    if end is None or end.stop_reason in ("stop_sequence", "max_tokens", "refusal"):
        # Failed, cut off, or stopped early by ccgate: the CLI's transcript and the
        # client's view may differ, so the next request rebuilds from the client's.
        state.sessions.abandon(bound)
        return
    await state.sessions.finished(
        bound, text, usage.input_tokens if usage else 0, usage.output_tokens if usage else 0
    )


async def collect_turn(
    state: AppState, request: Request, turn: TurnRequest, namespace: str, key: str | None
) -> tuple[list[AgentEvent], str]:
    """Run a whole turn in its session; return its events and the session key.

    A failed turn raises its error as a GatewayError.
    """

    _refuse_when_draining(state)

    async def work() -> tuple[list[AgentEvent], str]:
        async with state.sessions.turn(namespace, key, turn) as bound:
            events: list[AgentEvent] = []
            try:
                async with state.gate.slot():
                    run = state.runner.run(bound.turn)
                    try:
                        async for event in run:
                            events.append(event)
                    finally:
                        await run.aclose()
            finally:
                with anyio.CancelScope(shield=True):
                    await _settle(state, bound, events)
            return events, bound.record.key

    started = time.monotonic()
    events, session_key = await until_disconnect(request, work())
    failure = next((e for e in events if isinstance(e, TurnError)), None)
    _log_turn(turn, started, failure.kind if failure else "ok", None)
    if failure is not None:
        state.counters.turns_failed += 1
        raise error_for_turn(failure)
    state.counters.turns_finished += 1
    return events, session_key


async def _first_events(
    run: AsyncGenerator[AgentEvent, None], wait: float
) -> tuple[list[AgentEvent], bool]:
    """Pull events until content or the end arrives, or ``wait`` passes; say if it ended."""
    pulled: list[AgentEvent] = []
    with anyio.move_on_after(wait):
        async for event in run:
            pulled.append(event)
            if isinstance(event, TurnEnd | TurnError):
                return pulled, True
            if isinstance(event, TextDelta | ThinkingDelta):
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
    """Start a turn in its session and answer with its events as SSE."""
    _refuse_when_draining(state)
    stack = AsyncExitStack()
    started = time.monotonic()
    seen: list[AgentEvent] = []
    holder: list[SessionTurn] = []

    async def begin() -> tuple[AsyncGenerator[AgentEvent, None], list[AgentEvent], bool]:
        bound = await stack.enter_async_context(state.sessions.turn(namespace, key, turn))
        holder.append(bound)
        stack.push_async_callback(lambda: _settle(state, bound, seen))
        await stack.enter_async_context(state.gate.slot())
        run = state.runner.run(bound.turn)
        stack.push_async_callback(run.aclose)
        first, ended = await _first_events(run, FIRST_EVENT_WAIT)
        return run, first, ended

    try:
        run, first, ended = await until_disconnect(request, begin())
    except BaseException:
        await stack.aclose()
        raise
    if ended and isinstance(first[-1], TurnError) and not _has_content(first):
        await stack.aclose()
        state.counters.turns_failed += 1
        _log_turn(turn, started, first[-1].kind, None)
        raise error_for_turn(first[-1])

    async def body() -> AsyncIterator[str]:
        outcome = "cancelled"
        first_at: float | None = time.monotonic() if _has_content(first) else None
        try:
            for line in renderer.start():
                yield line
            chain = contextlib.aclosing(_chain(first, None if ended else run, ping))
            async with chain as events:
                async for event in events:
                    if isinstance(event, str):
                        yield event
                        continue
                    seen.append(event)
                    if first_at is None and isinstance(event, TextDelta | ThinkingDelta):
                        first_at = time.monotonic()
                    if isinstance(event, TurnError):
                        outcome = event.kind
                        state.counters.turns_failed += 1
                        for line in renderer.error(error_for_turn(event)):
                            yield line
                        return
                    for line in renderer.render(event):
                        yield line
                    if isinstance(event, TurnEnd):
                        outcome = "ok"
                        state.counters.turns_finished += 1
        finally:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            _log_turn(turn, started, outcome, first_at)

    return SSEResponse(body(), headers={SESSION_HEADER: holder[0].record.key})


async def _chain(
    first: list[AgentEvent],
    rest: AsyncGenerator[AgentEvent, None] | None,
    ping: Callable[[], str] | None,
) -> AsyncGenerator[AgentEvent | str, None]:
    for event in first:
        yield event
    if rest is None:
        return
    pending: asyncio.Task[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(rest.__anext__())
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
            yield event
            if isinstance(event, TurnEnd | TurnError):
                return
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending


def _has_content(events: list[AgentEvent]) -> bool:
    return any(isinstance(e, TextDelta | ThinkingDelta) for e in events)


class SSEResponse(StreamingResponse):
    """A streaming response that always watches for the client going away.

    Starlette skips the watch on ASGI 2.4 servers and notices a disconnect only
    at the next write; a turn that is thinking or stalled writes nothing for a
    while, and its CLI process must end as soon as the client is gone.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], headers: dict[str, str] | None) -> None:
        super().__init__(
            content,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
