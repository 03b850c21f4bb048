"""Render errors in the shape of the protocol a path belongs to; never leak a traceback.

Expected errors (a :class:`GatewayError`, a validation error, Starlette's 404
and 405) are rendered by exception handlers. Anything else is caught by
:class:`ccgate.api.crash.CrashGuard`, which answers 500 in the protocol's shape
and lets the connection live: Starlette's own last-resort handler re-raises
after answering, and the server then closes the connection, resetting the next
request a client had already sent on it.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Scope

from ccgate.engine.events import TurnError
from ccgate.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    OtherClientError,
    RequestTooLarge,
    RouteNotFound,
    for_turn,
)
from ccgate.protocol import anthropic, loops, openai

__all__ = [
    "error_body",
    "error_for_turn",
    "error_response",
    "install_error_handlers",
    "is_anthropic_path",
    "is_page_path",
]


def error_for_turn(event: TurnError) -> GatewayError:
    """Return the client-facing error for a failed turn, with a message a person can act on."""
    return for_turn(event.kind, event.message, retry_after=event.retry_after)


def is_anthropic_path(path: str) -> bool:
    """Tell whether ``path`` speaks the Anthropic protocol."""
    return path.startswith("/v1/messages")


def error_body(path: str, error: GatewayError) -> tuple[dict[str, Any], int]:
    """Return ``error`` in the shape of the protocol ``path`` speaks, and its status."""
    if is_anthropic_path(path):
        return anthropic.error_body(error), error.status
    if path.startswith("/v1/loops"):
        return loops.error_body(error), error.status
    return openai.error_body(error), error.openai_status or error.status


def is_page_path(path: str) -> bool:
    """Tell whether ``path`` is one of the console's pages (browsers read HTML there)."""
    return path == "/" or (path.startswith("/console") and not path.startswith("/console/static"))


def error_response(path: str, error: GatewayError) -> Response:
    """Render ``error`` in the shape of the protocol ``path`` speaks (a page, for the
    console's paths)."""
    if is_page_path(path):
        return _page(error)
    body, status = error_body(path, error)
    return JSONResponse(body, status_code=status, headers=error.headers())


def _page(error: GatewayError) -> HTMLResponse:
    """A plain page saying what went wrong (no script; the message escaped)."""
    title = f"{error.status} · ccgate"
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head><body>'
        f"<main><h1>{error.status}</h1><p>{escape(error.message)}</p>"
        '<p><a href="/">Back to the console</a></p></main></body></html>'
    )
    return HTMLResponse(html, status_code=error.status, headers=error.headers())


#: What pydantic puts in an error's location for the member of a union that was tried
#: (``str``, ``list[ContentPart]``, ``QuotaBody``, ...): not a field, so not in ``param``.
_UNION_MEMBER = re.compile(
    r"(str|int|float|bool|none|bytes|(list|dict|tuple|set|literal|function-\w+)\[.*\]|[A-Z]\w*)"
)


def _param(loc: Any) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(p for p in parts if not _UNION_MEMBER.fullmatch(p))


def _validation_message(exc: RequestValidationError) -> GatewayError:
    errors = exc.errors()
    if not errors:
        return InvalidRequest("the request body is not valid")
    first = errors[0]
    where = _param(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return InvalidRequest(
            "the request body is not valid JSON: " + str(first.get("ctx", {}).get("error", ""))
        )
    if first.get("type") == "model_attributes_type" or (not where and "dict" in first["msg"]):
        return InvalidRequest("the request body must be a JSON object")
    # The members of a union each say what they wanted: say it once, joined with "or".
    here = [e for e in errors if _param(e.get("loc", ())) == where]
    wanted = " or ".join(dict.fromkeys(str(e["msg"]) for e in here))
    others = len(errors) - len(here)
    more = f" (and {others} more problem(s))" if others else ""
    return InvalidRequest(
        f"{where}: {wanted}{more}" if where else wanted + more, param=where or None
    )


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed(request: Request) -> list[str]:
    """Return the methods some route takes on the request's path (asked of the routes)."""
    allowed: set[str] = set()
    for method in _METHODS:
        probe: Scope = {
            "type": "http",
            "method": method,
            "path": request.scope["path"],
            "root_path": request.scope.get("root_path", ""),
            "headers": [],
            "query_string": b"",
        }
        if any(r.matches(probe)[0] == Match.FULL for r in request.app.router.routes):
            allowed.add(method)
    return sorted(allowed)


def route_not_found(method: str, path: str) -> RouteNotFound:
    """Return the error for a path no route has, saying how a base URL goes wrong."""
    shown = path if len(path) <= 200 else path[:200] + "..."
    return RouteNotFound(
        f"Invalid URL ({method} {shown}): ccgate has no such route. Check the client's base "
        "URL: OpenAI clients take http://<host>:<port>/v1, Anthropic clients "
        "http://<host>:<port> (without /v1); GET /openapi.json lists every route."
    )


def install_error_handlers(app: FastAPI) -> None:
    """Make every expected error answer in the protocol's own shape (``CrashGuard`` in
    ``api/crash.py`` answers and logs the unexpected ones)."""

    async def gateway(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(request.url.path, exc)

    async def validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(request.url.path, _validation_message(exc))

    async def http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error: GatewayError
        if exc.status_code == 404:
            error = route_not_found(request.method, request.url.path)
        elif exc.status_code == 405:
            allow = _allowed(request)
            error = MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path[:200]}; "
                f"it takes {', '.join(allow)}",
                allow=allow,
            )
        elif exc.status_code == 401:
            error = AuthenticationFailed(str(exc.detail))
        elif exc.status_code == 413:
            error = RequestTooLarge(str(exc.detail))
        elif exc.status_code < 500:
            error = OtherClientError(str(exc.detail), status=exc.status_code)
        else:
            error = GatewayError(str(exc.detail))
        return error_response(request.url.path, error)

    app.add_exception_handler(GatewayError, gateway)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(HTTPException, http)
