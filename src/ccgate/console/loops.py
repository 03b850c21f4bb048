"""The console's loops: the list, and a loop's page, phone-first, where a person follows the
agent's turn live and answers its permissions and questions.

A loop's page shows the last turns that ended and the running one, then follows the loop's
events as server-sent events: ``item`` (a piece of the page the server rendered, escaped: a
turn's start, a tool call, a choice, how the turn ended; one with the ``id`` of an earlier
piece replaces it) and ``text`` (JSON ``{kind, text}``: a piece of the answer or of the
thinking, which the page adds as text). Reopening the page, or a lost connection, starts from
the running turn as it stands and goes on.

The operator (the admin key, the shared key, or anyone with ``auth_mode=none``) sees every
caller's loops; a client key only its own. Messages sent from here are accounted to the
loop's owner, as if sent through the Loop API.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ccgate.access.caller import Caller
from ccgate.access.signins import Viewer
from ccgate.api.answer import PING_EVERY, SSEResponse
from ccgate.api.forward import to_loop_home
from ccgate.api.routes.loops import admission
from ccgate.console import web
from ccgate.console.view import PREFIX, fragment, render
from ccgate.engine.events import TextDelta, ThinkingDelta, ToolResult
from ccgate.errors import GatewayError, NotFound
from ccgate.gateway import Gateway
from ccgate.loops.events import ChoiceRequested, ChoiceResolved, LoopEvent
from ccgate.loops.manager import PERMISSION_MODES
from ccgate.loops.runtime import TurnLog
from ccgate.protocol import loops as wire
from ccgate.store.records import LoopRecord

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


async def _loop(gateway: Gateway, viewer: Viewer, loop_id: str) -> LoopRecord:
    """Return the loop if ``viewer`` may see it; else raise NotFound (never say whose it is)."""
    if viewer.sees_all:
        return await gateway.loops.get(loop_id)
    try:
        return await gateway.loops.owned(viewer.namespace, loop_id)
    except GatewayError:
        raise NotFound(f"no loop '{loop_id[:80]}'", code="loop_not_found") from None


async def _caller(gateway: Gateway, namespace: str) -> Caller:
    """Return who a namespace is: a client key's, or a keyless one (local, shared, admin)."""
    if namespace in ("local", "shared", "admin"):
        return Caller(namespace)
    key = await gateway.keys.get(namespace)
    return Caller(key.id, key)


def _not_found(request: Request, viewer: Viewer) -> Response:
    return render(
        request,
        "error.html",
        {"viewer": viewer, "title": "No such loop", "message": "There is no such loop of yours."},
        status_code=404,
    )


# -- rendering -------------------------------------------------------------------------------


def _items(turn: TurnLog, context: dict[str, Any]) -> list[str]:
    """Render a whole turn: its message, then its events (text runs joined)."""
    parts = [fragment("_loop_item.html", {**context, "name": "message", "turn": turn})]
    text: dict[str, list[str]] = {"assistant": [], "thinking": []}
    # A tool's result is shown on its call's line (a page that follows live gets it apart).
    results = {e.tool_use_id: e.ok for e in turn.events if isinstance(e, ToolResult)}
    # A choice answered is shown as answered, not as a form again.
    answered = {e.choice_id for e in turn.events if isinstance(e, ChoiceResolved)}

    def flush() -> None:
        for kind in ("thinking", "assistant"):
            if text[kind]:
                parts.append(
                    fragment("_loop_text.html", {"kind": kind, "text": "".join(text[kind])})
                )
                text[kind] = []

    for event in turn.events:
        if isinstance(event, TextDelta | ThinkingDelta):
            kind = "assistant" if isinstance(event, TextDelta) else "thinking"
            if kind == "assistant" and text["thinking"]:
                flush()
            text[kind].append(event.text)
            continue
        flush()
        if isinstance(event, ToolResult):
            continue
        if isinstance(event, ChoiceRequested) and event.choice_id in answered:
            continue
        parts.append(_item(event, turn.turn_id, {**context, "results": results}))
    flush()
    return parts


def _item(event: LoopEvent, turn_id: str, context: dict[str, Any]) -> str:
    name, data = wire.named(event)
    return fragment("_loop_item.html", {**context, "name": name, "data": data, "turn_id": turn_id})


def _context(record: LoopRecord, viewer: Viewer) -> dict[str, str]:
    """What every piece of a loop's page needs: the loop, and the viewer's CSRF token."""
    return {"loop_id": record.id, "csrf": viewer.csrf, "prefix": PREFIX}


# -- pages -----------------------------------------------------------------------------------


@router.get(f"{PREFIX}/loops")
async def loops_page(request: Request) -> Response:
    """The loops the viewer may see, newest first, and a form to make one."""

    async def page(request: Request, viewer: Viewer) -> Response:
        gateway = web.gateway_of(request)
        names = await web.namespaces(gateway, viewer)
        found: list[tuple[str, LoopRecord, bool]] = []
        for namespace, name in names.items():
            records, _ = await gateway.loops.list_loops(
                namespace, limit=100, after=None, before=None, archived=False
            )
            for record in records:
                runtime = gateway.loops.running(record.id)
                found.append((name, record, runtime is not None and runtime.busy))
        found.sort(key=lambda row: row[1].created_at, reverse=True)
        return render(
            request,
            "loops.html",
            {
                "title": "Loops",
                "viewer": viewer,
                "loops": found,
                "modes": PERMISSION_MODES,
                "default_model": gateway.settings.default_model,
                "error": request.query_params.get("error"),
            },
        )

    return await web.signed_in(request, page)


@router.post(f"{PREFIX}/loops")
async def create_loop(request: Request) -> Response:
    """Make a loop of the viewer's own."""

    async def action(viewer: Viewer, form: dict[str, str]) -> Response:
        gateway = web.gateway_of(request)
        try:
            caller = await _caller(gateway, viewer.namespace)
            mode = wire.check_permission_mode(form.get("permission_mode") or None, PERMISSION_MODES)
            model = gateway.catalogue.resolve(form.get("model") or gateway.settings.default_model)
            caller.check_model(model)
            record = await gateway.loops.create(
                caller.namespace,
                title=(form.get("title") or "").strip()[:200] or "untitled",
                metadata={},
                permission_mode=mode or "default",
                model=model.id,
            )
        except GatewayError as exc:
            return RedirectResponse(
                f"{PREFIX}/loops?error={web.quote(web.sentence(exc.message))}", status_code=303
            )
        return RedirectResponse(f"{PREFIX}/loops/{record.id}", status_code=303)

    return await web.post(request, action)


@router.get(PREFIX + "/loops/{loop_id}")
async def loop_page(request: Request, loop_id: str) -> Response:
    """A loop: its turns live, the choice it waits for, a message box, interrupt."""

    async def page(request: Request, viewer: Viewer) -> Response:
        gateway = web.gateway_of(request)
        try:
            record = await _loop(gateway, viewer, loop_id)
            handed = await to_loop_home(gateway, request, record.id)
        except GatewayError:
            return _not_found(request, viewer)
        if handed is not None:
            return handed
        runtime = gateway.loops.running(record.id)
        items: list[str] = []
        if runtime is not None:
            turns = [*runtime.finished] + ([runtime.current] if runtime.current else [])
            for turn in turns:
                items.extend(_items(turn, _context(record, viewer)))
        return render(
            request,
            "loop.html",
            {
                "title": record.title,
                "viewer": viewer,
                "record": record,
                "items": items,
                "busy": runtime is not None and runtime.busy,
                "queued": runtime.queue_depth if runtime is not None else 0,
                "modes": PERMISSION_MODES,
            },
        )

    return await web.signed_in(request, page)


@router.get(PREFIX + "/loops/{loop_id}/events")
async def loop_events(request: Request, loop_id: str) -> Response:
    """The loop's events for its page (see the module docstring)."""
    viewer = await web.viewer_of(request)
    if viewer is None:
        return Response("sign in first", status_code=401, media_type="text/plain")
    gateway = web.gateway_of(request)
    try:
        record = await _loop(gateway, viewer, loop_id)
    except GatewayError:
        return Response("no such loop", status_code=404, media_type="text/plain")
    if record.archived_at is not None:
        return Response("archived", status_code=204)
    try:
        handed = await to_loop_home(gateway, request, record.id)
    except GatewayError as exc:
        return Response(exc.message, status_code=exc.status, media_type="text/plain")
    if handed is not None:
        return handed
    runtime = gateway.loops.runtime(record)
    watch, _ = runtime.watch()
    current = runtime.current  # read with the watch begun: nothing falls between them
    context = _context(record, viewer)

    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            if current is not None:
                html = "".join(_items(current, context))
                yield web.sse_event("reset", json.dumps({"turn_id": current.turn_id, "html": html}))
            while True:
                try:
                    event = await watch.next(PING_EVERY)
                except StopAsyncIteration:
                    yield web.sse_event("bye", "")
                    return
                if event is None:
                    yield ": ping\n\n"
                    continue
                if isinstance(event, TextDelta | ThinkingDelta):
                    kind = "assistant" if isinstance(event, TextDelta) else "thinking"
                    yield web.sse_event("text", json.dumps({"kind": kind, "text": event.text}))
                    continue
                name, _ = wire.named(event)
                if name == "snapshot":
                    continue
                turn_id = getattr(event, "turn_id", "") or ""
                if name == "started":
                    turn = runtime.current
                    if turn is not None and turn.turn_id == turn_id:
                        message = fragment(
                            "_loop_item.html", {**context, "name": "message", "turn": turn}
                        )
                        yield web.sse_event("item", message)
                yield web.sse_event("item", _item(event, turn_id, context))
                await asyncio.sleep(0)
        finally:
            watch.close()

    async def nothing() -> None:
        return None

    return SSEResponse(events(), {"cache-control": "no-store"}, on_close=nothing)


def _refused(request: Request, status: int, message: str, loop_id: str) -> Response:
    """Say what went wrong: JSON to the page's script, the page with it to a browser without."""
    if request.headers.get("x-requested-with") == "fetch":
        return JSONResponse({"ok": False, "message": message}, status_code=status)
    return RedirectResponse(f"{PREFIX}/loops/{loop_id}?error={web.quote(message)}", status_code=303)


#: What a form does to a loop it may act on; it may answer itself (a redirect, a refusal).
LoopAction = Callable[[Gateway, LoopRecord, dict[str, str]], Awaitable[Response | None]]


async def _act(request: Request, loop_id: str, act: LoopAction) -> Response:
    """Run ``act`` on the loop for a signed-in viewer with a good CSRF token; a refusal of
    the gateway (no such loop, a bad answer, shutting down) is said, never a 500."""

    async def action(viewer: Viewer, form: dict[str, str]) -> Response:
        gateway = web.gateway_of(request)
        try:
            record = await _loop(gateway, viewer, loop_id)
            handed = await to_loop_home(gateway, request, record.id)
            if handed is not None:
                return handed
            done = await act(gateway, record, form)
        except GatewayError as exc:
            return _refused(request, exc.status, web.sentence(exc.message), loop_id)
        if done is not None:
            return done
        if request.headers.get("x-requested-with") == "fetch":
            return JSONResponse({"ok": True})
        return RedirectResponse(f"{PREFIX}/loops/{loop_id}", status_code=303)

    return await web.post(request, action)


@router.post(PREFIX + "/loops/{loop_id}/messages")
async def send_message(request: Request, loop_id: str) -> Response:
    """Send a message; it queues while the loop is busy. The page follows the turn."""

    async def send(gateway: Gateway, record: LoopRecord, form: dict[str, str]) -> Response | None:
        content = form.get("content", "").strip()
        if not content:
            return _refused(request, 400, "Type a message first.", loop_id)
        if len(content.encode()) > wire.CONTENT_MAX:
            return _refused(request, 413, "A message is at most 1 MB.", loop_id)
        if gateway.draining:
            return _refused(request, 503, "ccgate is shutting down; try again soon.", loop_id)
        if record.archived_at is not None:
            return _refused(request, 409, "This loop is archived.", loop_id)
        mode = wire.check_permission_mode(form.get("permission_mode") or None, PERMISSION_MODES)
        owner = await _caller(gateway, record.namespace)
        await gateway.loops.send(
            record,
            content,
            mode or record.permission_mode,
            None,
            admission(gateway, owner, record),
        )
        return None

    return await _act(request, loop_id, send)


@router.post(PREFIX + "/loops/{loop_id}/choices/{choice_id}")
async def answer_choice(request: Request, loop_id: str, choice_id: str) -> Response:
    """Allow or deny a permission (with a message), or answer a question."""

    async def answer(gateway: Gateway, record: LoopRecord, form: dict[str, str]) -> None:
        runtime = gateway.loops.running(record.id)
        if runtime is None:
            raise NotFound("this choice was already answered", code="choice_not_found")
        if "allow" in form:
            body: dict[str, Any] = {"allow": form["allow"] == "true"}
            if form.get("message"):
                body["message"] = form["message"][:10_000]
        else:
            answers = {
                name.removeprefix("answer:"): value
                for name, value in form.items()
                if name.startswith("answer:")
            }
            body = {"answers": answers}
        runtime.resolve(choice_id, body)

    return await _act(request, loop_id, answer)


@router.post(PREFIX + "/loops/{loop_id}/interrupt")
async def interrupt(request: Request, loop_id: str) -> Response:
    """Stop the running turn; queued messages then run."""

    async def stop(gateway: Gateway, record: LoopRecord, form: dict[str, str]) -> None:
        runtime = gateway.loops.running(record.id)
        if runtime is not None:
            runtime.interrupt()

    return await _act(request, loop_id, stop)


@router.post(PREFIX + "/loops/{loop_id}/archive")
async def archive(request: Request, loop_id: str) -> Response:
    """Archive the loop: its turn stops, its process ends."""

    async def put_away(gateway: Gateway, record: LoopRecord, form: dict[str, str]) -> Response:
        await gateway.loops.archive(record)
        return RedirectResponse(f"{PREFIX}/loops", status_code=303)

    return await _act(request, loop_id, put_away)
