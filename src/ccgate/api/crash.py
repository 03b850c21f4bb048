"""Answer an unexpected error with a 500 in the protocol's shape, and log it once.

Starlette's handler for ``Exception`` answers and then re-raises, so that the
server logs the crash too: every crash was logged twice, the second time with
the exception's text, which for a database error holds the statement's values.
This middleware sits inside it and ends the crash here: one ``request_crashed``
record (the JSON log writes database errors without their text, see
:mod:`ccgate.logs`) and, if the answer had not started, a 500 that says nothing
about the cause. An answer that had started is cut off: the server closes the
connection, so the client sees a broken answer, never a complete-looking one.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ccgate.api.errors import error_response
from ccgate.errors import GatewayError
from ccgate.logs import statement_kind

__all__ = ["CrashGuard"]

log = logging.getLogger("ccgate.api")


class CrashGuard:
    """ASGI middleware: log a request's unexpected exception once and answer 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:  # noqa: BLE001 - the one place a crash ends
            path = scope.get("path", "")
            log.error(
                "request_crashed method=%s path=%s error=%s statement=%s answer_started=%s",
                scope.get("method", ""),
                path,
                type(exc).__name__,
                statement_kind(exc) or "-",
                str(started).lower(),
                exc_info=exc,
            )
            if not started:
                error = GatewayError("ccgate hit an internal error; the details are in its log")
                await error_response(path, error)(scope, receive, send)
