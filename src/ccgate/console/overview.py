"""The overview: the live feed of requests (server-sent events) beside the gateway's gauges
and the Plan card (``plan``), which the stream sends again every :data:`PLAN_EVERY` seconds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from ccgate.access.feed import Entry, Notice
from ccgate.access.signins import Viewer
from ccgate.api.answer import PING_EVERY, SSEResponse
from ccgate.console.plan import View, plan_card, plan_view, sees_accounts
from ccgate.console.view import PREFIX, fragment, render
from ccgate.console.web import gateway_of, namespace_of, one_line, signed_in, sse_event, viewer_of
from ccgate.gateway import Gateway

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

#: How often the overview's gauges are sent again (seconds).
STATS_EVERY = 2.0
#: How often the Plan card is sent again (seconds): its "resets in" times move on.
PLAN_EVERY = 20.0
#: Rows the overview shows.
ROWS = 50


def _stats(gateway: Gateway) -> dict[str, Any]:
    pool = gateway.runner.pool_status()
    hits, misses = _count(pool.get("hits")), _count(pool.get("misses"))
    return {
        "active": gateway.gate.active,
        "queued": gateway.gate.queued,
        "waiting_for_tools": gateway.turns.parked,
        "max_concurrent": gateway.settings.max_concurrent,
        "max_queue": gateway.settings.max_queue,
        "pool": pool,
        "hit_rate": (hits / (hits + misses)) if hits + misses else None,
        "loops_active": gateway.loops.live_processes(),
        "probe": gateway.probe.as_dict(),
        "draining": gateway.draining,
    }


def _count(value: object) -> int:
    return value if isinstance(value, int) else 0


@router.get("/")
async def overview(request: Request) -> Response:
    """What the gateway is doing now: the live feed of requests, and its gauges."""

    async def page(request: Request, viewer: Viewer) -> Response:
        gateway = gateway_of(request)
        rows = gateway.feed.recent(namespace_of(viewer), ROWS)
        view = plan_view(gateway, viewer)
        return render(
            request,
            "overview.html",
            {
                "title": "Overview",
                "viewer": viewer,
                "rows": rows,
                "stats": _stats(gateway) if viewer.sees_all else None,
                "plan_view": view,
                "plan_rows": await plan_card(gateway, viewer, view) if view else [],
            },
        )

    return await signed_in(request, page)


@router.get(PREFIX)
@router.get(f"{PREFIX}/")
async def console_root() -> Response:
    """The console's own address: the overview."""
    return RedirectResponse("/", status_code=303)


def _row(entry: Entry) -> str:
    return one_line(fragment("_row.html", {"row": entry}))


async def _plan(gateway: Gateway, viewer: Viewer, view: View) -> str:
    rows = await plan_card(gateway, viewer, view)
    return one_line(fragment("_plan.html", {"plan_view": view, "plan_rows": rows}))


def _plan_news(notice: Notice) -> bool:
    """Tell whether ``notice`` is news of an account's plan (it links to the accounts page)."""
    return notice.link.startswith(f"{PREFIX}/accounts")


def _for(viewer: Viewer, notice: Notice) -> bool:
    """Tell whether ``viewer`` is told ``notice``: an account's plan news is the operator's."""
    return sees_accounts(viewer) or not _plan_news(notice)


@router.get(f"{PREFIX}/feed")
async def feed(request: Request) -> Response:
    """The live feed as server-sent events: ``row`` (a table row, new or updated),
    ``stats`` (the gauges, for those who see the whole gateway), ``plan`` (the Plan card,
    for those who see it: again every :data:`PLAN_EVERY` seconds, and at once when an
    account's plan changed) and ``choice`` (a loop waits for a person; an account's plan
    changed, for the operator). It starts with the newest rows, so nothing that happened
    between the page and the stream is missed. With ``?notices=only``, only ``choice``
    (every other page)."""
    viewer = await viewer_of(request)
    rows = request.query_params.get("notices") != "only"
    stats_too = rows and viewer is not None and viewer.sees_all
    if viewer is None:
        return Response("sign in first", status_code=401, media_type="text/plain")
    gateway = gateway_of(request)
    view = plan_view(gateway, viewer) if rows else None
    watch = gateway.feed.watch(namespace_of(viewer))
    # Taken with the watch (nothing runs between them): every later change comes after it.
    start = list(reversed(gateway.feed.recent(namespace_of(viewer), ROWS))) if rows else []

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        next_stats = loop.time()
        next_ping = loop.time() + PING_EVERY
        next_plan = loop.time() + PLAN_EVERY  # the page has it already
        yield "retry: 2000\n\n"
        # What happened between the page and this stream (or while it was cut): the
        # newest rows again, oldest first; the page replaces the ones it has.
        for kept in start:
            yield sse_event("row", _row(kept))
        try:
            while True:
                now = loop.time()
                if stats_too and now >= next_stats:
                    stats = fragment("_stats.html", {"stats": _stats(gateway)})
                    yield sse_event("stats", one_line(stats))
                    next_stats = now + STATS_EVERY
                if view is not None and now >= next_plan:
                    yield sse_event("plan", await _plan(gateway, viewer, view))
                    next_plan = now + PLAN_EVERY
                if now >= next_ping:
                    yield ": ping\n\n"
                    next_ping = now + PING_EVERY
                wait = (
                    min(
                        next_ping,
                        next_stats if stats_too else next_ping,
                        next_plan if view is not None else next_ping,
                    )
                    - now
                )
                try:
                    entry = await watch.next(max(0.05, wait))
                except StopAsyncIteration:
                    yield sse_event("bye", "")
                    return
                if isinstance(entry, Notice):
                    if _plan_news(entry):
                        next_plan = loop.time()  # the card shows it at once
                    if not _for(viewer, entry):
                        continue
                    notice = {"title": entry.title, "body": entry.body, "link": entry.link}
                    yield sse_event("choice", json.dumps(notice))
                elif entry is not None and rows:
                    yield sse_event("row", _row(entry))
        finally:
            watch.close()

    async def nothing() -> None:
        return None

    return SSEResponse(events(), {"cache-control": "no-store"}, on_close=nothing)
