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
import enum
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ccgate.access.accounting import Accounting, Ticket
from ccgate.access.caller import Caller
from ccgate.api.errors import error_for_turn
from ccgate.api.forward import elsewhere, forward
from ccgate.api.watched import SSEResponse, WatchedResponse
from ccgate.engine.events import (
    AgentEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallStart,
    TurnEnd,
    TurnError,
)
from ccgate.engine.live import ends_segment
from ccgate.engine.models import ModelInfo
from ccgate.engine.sessions import check_key
from ccgate.engine.sources import Source
from ccgate.engine.turn import TurnRequest
from ccgate.errors import ClientGone, GatewayError
from ccgate.gateway import Gateway

__all__ = [
    "FrontDoor",
    "Renderer",
    "SSEResponse",
    "WatchedResponse",
    "answer",
    "collect_turn",
    "run_segment",
    "session_key",
    "stream_turn",
]


def session_key(request: Request, body_key: str | None) -> str | None:
    """Return the session key a request names (its headers first, then its body), checked.

    A key that could not be echoed in the ``X-Session-Id`` header is refused here,
    before the request is admitted: no turn runs (or is billed) whose answer
    cannot be delivered.
    """
    for header in ("X-Session-Id", "x-opencode-session"):
        value = request.headers.get(header)
        if value:
            return check_key(value.strip(), header)
    return check_key(body_key.strip(), "session_id") if body_key else None


log = logging.getLogger("ccgate.api")

#: How long a streamed answer may wait for first output before committing to 200.
FIRST_EVENT_WAIT = 10.0
PING_EVERY = 15.0

T = TypeVar("T")


class Renderer(Protocol):
    """A protocol's streaming renderer (``ChatStream``, ``MessageStream``)."""

    def start(self, first: Sequence[AgentEvent] = ()) -> list[str]: ...

    def render(self, event: AgentEvent) -> list[str]: ...

    def error(self, error: GatewayError) -> list[str]: ...

    def ping(self) -> str: ...


@dataclass(frozen=True)
class FrontDoor:
    """What an OpenAI or Anthropic route does of its own; the rest of the answer is shared.

    ``to_turn(model)`` translates the request; ``stream(turn)`` is the renderer
    of a streamed answer (``None`` when it is not streamed); ``whole(turn,
    events)`` renders a collected one. ``on_end(events)``, when given, runs once
    the segment ended and before the client sees its end (a stored response
    exists before its id reaches the client).
    """

    endpoint: str
    requested: str
    session_id: str | None
    to_turn: Callable[[ModelInfo], TurnRequest]
    stream: Callable[[TurnRequest], Renderer] | None
    whole: Callable[[TurnRequest, list[AgentEvent]], dict[str, Any]]
    on_end: Callable[[list[AgentEvent]], Awaitable[None]] | None = None


async def answer(state: Gateway, request: Request, caller: Caller, door: FrontDoor) -> Response:
    """Answer a request of a compatible API: model, turn, session, admission, the turn."""
    model = state.catalogue.resolve(door.requested)
    caller.check_model(model)
    turn = door.to_turn(model)
    session = session_key(request, door.session_id)
    peer = await elsewhere(state, request, caller.namespace, turn, session)
    if peer is not None:
        handed = await forward(state, request, peer)
        if handed is not None:
            return handed
    ticket = await state.admit(caller, door.endpoint, model, door.requested)
    if ticket.accounts is not None:
        turn = replace(turn, accounts=ticket.accounts)
    if door.stream is not None:
        return await stream_turn(
            state, request, turn, ticket, session, door.stream(turn), on_end=door.on_end
        )
    events, headers = await collect_turn(state, request, turn, ticket, session)
    if door.on_end is not None:
        await door.on_end(events)
    return JSONResponse(door.whole(turn, events), headers=headers)


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


def _log_turn(ticket: Ticket, outcome: str) -> None:
    first = ticket.first_output
    ttft = f"{(first - ticket.started) * 1000:.0f}" if first else "-"
    log.info(
        "turn_finished model=%s outcome=%s ms=%.0f ttft_ms=%s",
        ticket.model.cli,
        outcome,
        (time.monotonic() - ticket.started) * 1000,
        ttft,
    )


def _outcome(end: AgentEvent | None) -> str:
    if isinstance(end, TurnError):
        return end.kind
    if isinstance(end, TurnEnd):
        return "tool_use" if end.waiting_for else "ok"
    return "cancelled"


def _count(state: Gateway, end: AgentEvent | None) -> None:
    if isinstance(end, TurnError):
        state.counters.turns_failed += 1
    elif isinstance(end, TurnEnd) and not end.waiting_for:
        state.counters.turns_finished += 1


@dataclass(eq=False)
class _Answer:
    """A request's source of events, accounted for: its ticket closes when it ends."""

    source: Source
    ticket: Ticket
    accounting: Accounting

    @property
    def headers(self) -> dict[str, str]:
        return self.source.headers

    async def next_event(self) -> AgentEvent:
        event = await self.source.next_event()
        self.ticket.saw(event)
        return event

    async def end(self, events: list[AgentEvent]) -> None:
        """Record what the request received, then what it cost (once each)."""
        try:
            await self.source.end(events)
        finally:
            await self.accounting.close(self.ticket, events)


async def _open(
    state: Gateway, cache_control: str, turn: TurnRequest, ticket: Ticket, session: str | None
) -> _Answer:
    try:
        source = await state.answers.open(
            ticket.caller.namespace, turn, session, cache_control=cache_control
        )
    except BaseException as exc:
        failure = exc.code if isinstance(exc, GatewayError) and exc.code else "cancelled"
        with anyio.CancelScope(shield=True):
            await state.accounting.close(ticket, [], failure=failure)
        raise
    ticket.cached, ticket.session_key = source.cached, source.session_key or None
    return _Answer(source, ticket, state.accounting)


async def collect_turn(
    state: Gateway, request: Request, turn: TurnRequest, ticket: Ticket, session: str | None
) -> tuple[list[AgentEvent], dict[str, str]]:
    """Answer a request with its whole segment; return the events and the response headers.

    A failed turn raises its error as a GatewayError.
    """

    cache_control = request.headers.get("cache-control", "")
    events, headers = await until_disconnect(
        request, run_segment(state, turn, ticket, session, cache_control=cache_control)
    )
    end = events[-1] if events else None
    if isinstance(end, TurnError):
        raise error_for_turn(end)
    return events, headers


async def run_segment(
    state: Gateway,
    turn: TurnRequest,
    ticket: Ticket,
    session: str | None,
    *,
    cache_control: str = "",
) -> tuple[list[AgentEvent], dict[str, str]]:
    """Run an admitted request's segment to its end, recorded and counted; return its events
    (a failure is its last event) and the response headers. No client waits on it here:
    :func:`collect_turn` does, and a background response runs it alone."""
    source = await _open(state, cache_control, turn, ticket, session)
    events: list[AgentEvent] = []
    try:
        while not (events and ends_segment(events[-1])):
            events.append(await source.next_event())
    except StopAsyncIteration:
        pass
    finally:
        with anyio.CancelScope(shield=True):
            await _bookkeeping(lambda: source.end(events))
    end = events[-1] if events else None
    _log_turn(ticket, _outcome(end))
    _count(state, end)
    return events, source.headers


class _Mark(enum.Enum):
    """What a read gives instead of an event."""

    TIMEOUT = "timeout"
    DONE = "done"


class _Reader:
    """Read a source's events one by one; a wait that times out leaves the read running.

    Cancelling a read would cancel the turn itself, so a read is only ever
    abandoned by :meth:`stop`, when the answer is over.
    """

    def __init__(self, source: _Answer) -> None:
        self._source = source
        self._pending: asyncio.Task[AgentEvent | None] | None = None

    async def _read(self) -> AgentEvent | None:
        try:
            return await self._source.next_event()
        except StopAsyncIteration:
            return None

    async def next(self, timeout: float | None = None) -> AgentEvent | _Mark:
        """Return the next event, ``DONE`` when there is none, or ``TIMEOUT``."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._read())
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            return _Mark.TIMEOUT
        task, self._pending = self._pending, None
        return task.result() or _Mark.DONE

    async def stop(self) -> None:
        """Abandon a read still running (the request is over)."""
        task, self._pending = self._pending, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def _first_events(reader: _Reader, wait: float) -> tuple[list[AgentEvent], bool]:
    """Pull events until content or the segment's end arrives, or ``wait`` passes.

    Say whether the segment ended.
    """
    pulled: list[AgentEvent] = []
    deadline = time.monotonic() + wait
    while True:
        event = await reader.next(max(0.0, deadline - time.monotonic()))
        if event is _Mark.TIMEOUT:
            return pulled, False
        if event is _Mark.DONE:
            return pulled, True
        pulled.append(event)
        if ends_segment(event):
            return pulled, True
        if _is_content(event):
            return pulled, False


async def stream_turn(
    state: Gateway,
    request: Request,
    turn: TurnRequest,
    ticket: Ticket,
    session: str | None,
    renderer: Renderer,
    *,
    on_end: Callable[[list[AgentEvent]], Awaitable[None]] | None = None,
) -> StreamingResponse:
    """Answer a request with its segment as SSE (``on_end``: see :class:`FrontDoor`)."""
    seen: list[AgentEvent] = []
    holder: list[tuple[_Answer, _Reader]] = []
    streaming: list[bool] = []

    async def begin() -> tuple[list[AgentEvent], bool]:
        cache_control = request.headers.get("cache-control", "")
        source = await _open(state, cache_control, turn, ticket, session)
        reader = _Reader(source)
        holder.append((source, reader))
        return await _first_events(reader, FIRST_EVENT_WAIT)

    async def finish() -> None:
        if holder:
            source, reader = holder[0]
            # A body that never ran delivered nothing: the turn must not wait for results.
            delivered = seen if streaming else []
            with anyio.CancelScope(shield=True):
                await reader.stop()
                await source.end(delivered)

    try:
        first, ended = await until_disconnect(request, begin())
    except BaseException:
        await finish()
        raise
    seen.extend(first)
    if ended and isinstance(first[-1], TurnError) and not any(map(_is_content, first)):
        streaming.append(True)  # the error is what the client gets
        await finish()
        _count(state, first[-1])
        _log_turn(ticket, first[-1].kind)
        raise error_for_turn(first[-1])
    source, reader = holder[0]

    async def body() -> AsyncIterator[str]:
        end: AgentEvent | None = None
        streaming.append(True)
        try:
            for line in renderer.start(first):
                yield line
            chain = contextlib.aclosing(
                _chain(first, None if ended else reader, renderer.ping, seen)
            )
            async with chain as events:
                async for event in events:
                    if isinstance(event, str):
                        yield event
                        continue
                    if ends_segment(event):
                        # Record (and park) the turn before the client sees its end: a client
                        # that answers tool calls at once must find the turn waiting.
                        end = event
                        await _bookkeeping(finish)
                        if on_end is not None:
                            await _bookkeeping(functools.partial(on_end, list(seen)))
                    if isinstance(event, TurnError):
                        for line in renderer.error(error_for_turn(event)):
                            yield line
                        return
                    for line in renderer.render(event):
                        yield line
        except Exception:  # noqa: BLE001 - the answer still ends the protocol's way
            log.error("stream_failed path=%s", request.url.path, exc_info=True)
            failure = GatewayError("ccgate hit an internal error; the details are in its log")
            for line in renderer.error(failure):
                yield line
        finally:
            await finish()
            _count(state, end)
            _log_turn(ticket, _outcome(end))

    return SSEResponse(body(), source.headers, on_close=finish)


async def _bookkeeping(finish: Callable[[], Awaitable[None]]) -> None:
    """Record a finished segment; a failure there must not cost the client its answer."""
    try:
        await finish()
    except Exception:  # noqa: BLE001 - the answer is complete; what failed is logged
        log.error("bookkeeping_failed", exc_info=True)


async def _chain(
    first: list[AgentEvent],
    rest: _Reader | None,
    ping: Callable[[], str],
    seen: list[AgentEvent],
) -> AsyncGenerator[AgentEvent | str, None]:
    for event in first:
        yield event
    if rest is None:
        return
    while True:
        got = await rest.next(PING_EVERY)
        if got is _Mark.TIMEOUT:
            yield ping()
            continue
        if got is _Mark.DONE:
            return
        seen.append(got)
        yield got
        if ends_segment(got):
            return


def _is_content(event: AgentEvent) -> bool:
    return isinstance(event, TextDelta | ThinkingDelta | ToolCallStart)
