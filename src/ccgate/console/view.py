"""How the console renders: its templates, its static files and the headers on every page.

Templates are Jinja2 with autoescaping on (``select_autoescape`` for ``.html``):
text from models, tools, key names and users is escaped wherever it appears.
Script runs only from the console's own files: the Content-Security-Policy
has no ``unsafe-inline`` and no ``unsafe-eval``, pages may not be framed, and
nothing is fetched from another origin.
"""

from __future__ import annotations

import datetime as dt
import functools
from importlib.resources import files
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ccgate import __version__

__all__ = [
    "CSP",
    "ConsoleHeaders",
    "PREFIX",
    "is_console_path",
    "fragment",
    "render",
    "static_files",
    "templates",
]

#: Where the console's pages live (besides ``/``).
PREFIX = "/console"

#: The Content-Security-Policy of every console response.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)

_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def is_console_path(path: str) -> bool:
    """Tell whether ``path`` is the console's."""
    return path == "/" or path == PREFIX or path.startswith(PREFIX + "/")


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "—"
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _clock(stamp: float | None) -> str:
    if stamp is None:
        return "—"
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%H:%M:%S")


def _utc(stamp: float | None) -> str:
    if stamp is None:
        return "—"
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _iso(stamp: float | None) -> str:
    if stamp is None:
        return ""
    moment = dt.datetime.fromtimestamp(stamp, dt.UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def _money(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _number(value: float | int | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    if whole < 86_400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86_400} d {whole % 86_400 // 3600} h"


def _environment() -> Environment:
    folder = files("ccgate.console") / "templates"
    env = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when,
        clock=_clock,
        utc=_utc,
        iso=_iso,
        money=_money,
        number=_number,
        ms=_ms,
        duration=_duration,
    )
    env.globals.update(version=__version__, prefix=PREFIX)
    return env


@functools.cache
def templates() -> Environment:
    """Return the template environment (built on first use, not at import)."""
    return _environment()


def render(
    request: Request, name: str, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    """Render the page ``name`` with ``context`` (the request is in it as ``request``)."""
    html = templates().get_template(name).render({"request": request, **context})
    return HTMLResponse(html, status_code=status_code, headers={"cache-control": "no-store"})


def fragment(name: str, context: dict[str, Any]) -> str:
    """Render a piece of a page (a feed row, a gauge) as text."""
    return templates().get_template(name).render(context)


def static_files() -> StaticFiles:
    """Return the console's static files (shipped inside the package)."""
    return StaticFiles(packages=[("ccgate.console", "static")])


class ConsoleHeaders:
    """Add the console's security headers to every console response (not to the APIs')."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_console_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
