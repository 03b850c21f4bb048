"""The route class of every ccgate router: request bodies are read as strict JSON."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from ccgate.protocol import strict_json

__all__ = ["GatewayRoute", "StrictJSONRequest"]


class StrictJSONRequest(Request):
    """A request whose JSON body is parsed by :func:`ccgate.protocol.strict_json.loads`.

    FastAPI turns the ``JSONDecodeError`` it raises into a validation error, so a
    lone surrogate, ``NaN`` or runaway nesting is answered with the protocol's
    400 before any handler runs.
    """

    async def json(self) -> Any:
        """Return the body parsed as strict JSON (cached, as Starlette does)."""
        if not hasattr(self, "_json"):
            self._json = strict_json.loads(await self.body())
        return self._json


class GatewayRoute(APIRoute):
    """An API route whose handler sees a :class:`StrictJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler so it reads the body through the strict parser."""
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
