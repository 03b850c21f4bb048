"""The OpenAPI schema and its interactive docs, behind the same key as the API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from ccgate.api.auth import Client
from ccgate.api.openapi import complete
from ccgate.api.routing import GatewayRoute

__all__ = ["router"]

router = APIRouter(include_in_schema=False, route_class=GatewayRoute)


@router.get("/openapi.json")
async def openapi(request: Request, client: Client) -> dict[str, Any]:
    """Serve the OpenAPI schema of every route."""
    schema: dict[str, Any] = request.app.openapi()
    return complete(schema)


@router.get("/docs")
async def docs(client: Client) -> HTMLResponse:
    """Serve Swagger UI for the schema."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title="ccgate API")
