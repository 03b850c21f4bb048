"""Refuse oversized request bodies before anything reads them."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ccgate.api.errors import error_body
from ccgate.errors import RequestTooLarge

__all__ = ["BodyLimit"]


class BodyLimit:
    """ASGI middleware: answer 413 in the protocol's shape for a body over ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(path, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # FastAPI turns other exceptions raised while reading a body into a 400;
                    # an HTTPException passes through to the error handlers as a 413.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return (
            f"the request body is larger than {self.limit} bytes (max_body_bytes); "
            "send smaller images or less history"
        )

    async def _refuse(self, path: str, send: Send) -> None:
        body, _ = error_body(path, RequestTooLarge(self._message()))
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
