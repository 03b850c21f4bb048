"""The settings page (the operator's): the doctor's checks, webhook deliveries, and the
effective settings with secrets hidden."""

from __future__ import annotations

import urllib.parse

from fastapi import APIRouter, Request
from pydantic import SecretStr
from starlette.responses import Response

from ccgate import checks
from ccgate.access.signins import Viewer
from ccgate.api.routes.health import public_upstream
from ccgate.console.view import PREFIX, render
from ccgate.console.web import gateway_of, signed_in

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


def _shown(name: str, value: object) -> str:
    """Return a setting as the page shows it: secrets only as set or not."""
    if isinstance(value, SecretStr):
        return "set (hidden)"
    if name == "upstream_url":
        return public_upstream(value if isinstance(value, str) else None)
    if name in ("database_url", "redis_url") and isinstance(value, str):
        return value.split("://", 1)[0] + "://… (hidden)"
    if value is None:
        return "—"
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value) or "—"
    return str(value)


@router.get(f"{PREFIX}/settings")
async def settings_page(request: Request) -> Response:
    """The effective settings (secrets hidden) and the doctor's checks, read-only."""

    async def page(request: Request, viewer: Viewer) -> Response:
        if not viewer.sees_all:
            return render(
                request,
                "error.html",
                {
                    "viewer": viewer,
                    "title": "Not yours",
                    "message": "The gateway's settings are its operator's: sign in with the "
                    "admin key to see them.",
                },
                status_code=403,
            )
        gateway = gateway_of(request)
        settings = gateway.settings
        rows = [
            (name, _shown(name, getattr(settings, name)), field.description or "")
            for name, field in type(settings).model_fields.items()
        ]
        found = [
            checks.data_dir(settings),
            checks.database(settings),
            checks.credentials(settings),
            checks.sandbox(),
            await checks.claude_cli(settings),
        ]
        shared = await checks.redis(settings)
        if shared is not None:
            found.append(shared)
        probe = gateway.probe.as_dict()
        hooks = gateway.webhooks
        deliveries = [
            (d, urllib.parse.urlsplit(d.url).hostname or "?") for d in reversed(hooks.deliveries)
        ]
        return render(
            request,
            "settings.html",
            {
                "title": "Settings",
                "viewer": viewer,
                "rows": rows,
                "checks": found,
                "probe": probe,
                "webhooks": hooks,
                "deliveries": deliveries,
            },
        )

    return await signed_in(request, page)
