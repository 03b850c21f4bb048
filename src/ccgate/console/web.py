"""What every console page shares: who is asking, the sign-in cookie, forms and their CSRF
token, answering with a page or a redirect, server-sent events.

Every page needs a sign-in (:mod:`ccgate.access.signins`), except with ``auth_mode=none``,
where the first visit gets one. Forms are plain HTML forms (they work without script)
posting ``application/x-www-form-urlencoded`` with the sign-in's CSRF token; each answers
with a redirect or the page again, with what went wrong said on it.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ccgate.access.signins import Viewer
from ccgate.console.view import PREFIX, render
from ccgate.gateway import Gateway

__all__ = [
    "COOKIE",
    "FORM_MAX",
    "Action",
    "Page",
    "client_address",
    "day_start",
    "gateway_of",
    "month_start",
    "namespace_of",
    "namespaces",
    "one_line",
    "signed_in",
    "post",
    "quote",
    "read_form",
    "sentence",
    "set_cookie",
    "sse_event",
    "to_signin",
    "viewer_of",
]

#: The cookie that holds a sign-in's token.
COOKIE = "ccgate_console"
#: A form body larger than this is refused (bytes).
FORM_MAX = 64 * 1024


def gateway_of(request: Request) -> Gateway:
    """Return the running gateway."""
    gateway: Gateway = request.app.state.ccgate
    return gateway


async def viewer_of(request: Request) -> Viewer | None:
    """Return who the request's sign-in cookie says is asking, or None."""
    return await gateway_of(request).signins.viewer(request.cookies.get(COOKIE))


def to_signin() -> RedirectResponse:
    """Send the browser to the sign-in form."""
    return RedirectResponse(f"{PREFIX}/signin", status_code=303)


def set_cookie(request: Request, response: Response, token: str) -> None:
    """Set the sign-in cookie: HttpOnly, SameSite=Strict, Secure over TLS."""
    secure = request.url.scheme == "https" or (
        request.headers.get("x-forwarded-proto", "").lower() == "https"
    )
    response.set_cookie(
        COOKIE,
        token,
        max_age=round(gateway_of(request).settings.console_session_ttl),
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
    )


async def read_form(request: Request) -> dict[str, str]:
    """Return an urlencoded form's fields (the last value of each)."""
    body = await request.body()
    if len(body) > FORM_MAX:
        return {}
    try:
        text = body.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return {}
    fields = parse_qs(text, keep_blank_values=True, max_num_fields=100)
    return {name: values[-1] for name, values in fields.items()}


Page = Callable[[Request, Viewer], Awaitable[Response]]


async def signed_in(request: Request, page: Page) -> Response:
    """Run ``page`` for the signed-in viewer, or send the browser to sign in."""
    viewer = await viewer_of(request)
    if viewer is None:
        signins = gateway_of(request).signins
        if not signins.open:
            return to_signin()
        token, viewer = await signins.open_session()
        response = await page(request, viewer)
        set_cookie(request, response, token)
        return response
    return await page(request, viewer)


Action = Callable[[Viewer, dict[str, str]], Awaitable[Response]]


async def post(request: Request, action: Action) -> Response:
    """Run a form's ``action`` when the sign-in and its CSRF token hold; else refuse (403)."""
    viewer = await viewer_of(request)
    if viewer is None:
        return to_signin()
    form = await read_form(request)
    if not viewer.check_csrf(form.get("csrf") or request.headers.get("x-csrf-token")):
        return render(
            request,
            "error.html",
            {
                "viewer": viewer,
                "title": "Refused",
                "message": "This form is stale or was "
                "not sent from this console. Go back, reload the page and try again.",
            },
            status_code=403,
        )
    return await action(viewer, form)


def quote(text: str) -> str:
    """Return ``text`` for a query string."""
    return urllib.parse.quote(text[:300], safe="")


def client_address(request: Request) -> str:
    """Return the address a request came from (the sign-in brake counts per address)."""
    return request.client.host if request.client else "unknown"


def sentence(message: str) -> str:
    """Return ``message`` as a sentence (capital first, full stop last)."""
    text = message[:1].upper() + message[1:]
    return text if text.endswith(".") else text + "."


def namespace_of(viewer: Viewer) -> str | None:
    """Return the namespace whose data ``viewer`` sees (None: every one)."""
    return None if viewer.sees_all else viewer.namespace


async def namespaces(gateway: Gateway, viewer: Viewer) -> dict[str, str]:
    """Return the namespaces ``viewer`` may see, with a name for people."""
    if not viewer.sees_all:
        return {viewer.namespace: viewer.name}
    names = {"local": "local", "shared": "shared key", "admin": "admin"}
    for key in await gateway.keys.list_keys(include_revoked=True):
        names[key.id] = key.name
    return names


def one_line(html: str) -> str:
    """Return rendered HTML on one line."""
    return " ".join(line.strip() for line in html.splitlines() if line.strip())


def sse_event(name: str, data: str) -> str:
    """Return one SSE event; ``data`` may span lines (each gets its ``data:`` field)."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {name}\n{lines}\n"


def month_start() -> float:
    """Return when this UTC month began (Unix seconds)."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def day_start() -> float:
    """Return when this UTC day began (Unix seconds)."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
