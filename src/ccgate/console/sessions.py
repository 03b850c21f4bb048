"""The sessions page: the conversations the viewer may see; delete one or all."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from ccgate.access.signins import Viewer
from ccgate.console.view import PREFIX, render
from ccgate.console.web import gateway_of, namespaces, post, signed_in

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get(f"{PREFIX}/sessions")
async def sessions(request: Request) -> Response:
    """The conversations (Claude Code sessions) the viewer may see, most recent first."""

    async def page(request: Request, viewer: Viewer) -> Response:
        gateway = gateway_of(request)
        now = time.time()
        ttl = gateway.settings.session_ttl
        rows = []
        for namespace, name in (await namespaces(gateway, viewer)).items():
            for record in await gateway.sessions.list_sessions(namespace):
                idle = max(0.0, now - record.last_used_at)
                rows.append((name, namespace, record, idle, max(0.0, ttl - idle)))
        rows.sort(key=lambda row: row[2].last_used_at, reverse=True)
        return render(
            request, "sessions.html", {"title": "Sessions", "viewer": viewer, "rows": rows}
        )

    return await signed_in(request, page)


@router.post(f"{PREFIX}/sessions/delete")
async def delete_sessions(request: Request) -> Response:
    """Forget one session (``key`` given) or all of a namespace's, with their transcripts."""

    async def action(viewer: Viewer, form: dict[str, str]) -> Response:
        gateway = gateway_of(request)
        namespace = form.get("namespace", viewer.namespace)
        if namespace not in await namespaces(gateway, viewer):
            return render(
                request,
                "error.html",
                {"viewer": viewer, "title": "Not yours", "message": "These are not your sessions."},
                status_code=403,
            )
        key = form.get("key") or None
        await gateway.sessions.delete(namespace, key)
        return RedirectResponse(f"{PREFIX}/sessions", status_code=303)

    return await post(request, action)
