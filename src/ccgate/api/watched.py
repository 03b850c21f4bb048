"""Streaming responses that notice at once when the client goes away."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["SSEResponse", "WatchedResponse"]


class WatchedResponse(StreamingResponse):
    """A streaming response that always watches for the client going away.

    Starlette skips the watch on ASGI 2.4 servers and notices a disconnect only
    at the next write; a turn that is thinking or stalled writes nothing for a
    while, and its CLI process must end as soon as the client is gone.
    ``on_close`` runs when the response is over however it ended, even if the
    body never started (the client left before the first byte).
    """

    def __init__(
        self,
        content: AsyncIterator[str] | AsyncIterator[bytes],
        headers: dict[str, str] | None,
        on_close: Callable[[], Awaitable[None]],
        *,
        status_code: int = 200,
    ) -> None:
        super().__init__(content, status_code=status_code, headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def respond() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:
                        pass
                    finally:
                        group.cancel_scope.cancel()

                group.start_soon(respond)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._on_close()


class SSEResponse(WatchedResponse):
    """A stream of Server-Sent Events (see :class:`WatchedResponse`), never cached or buffered."""

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterator[str],
        headers: dict[str, str] | None,
        on_close: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(
            content,
            {"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})},
            on_close,
        )
