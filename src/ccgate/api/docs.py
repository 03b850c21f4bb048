"""The OpenAPI schema and its interactive docs, behind the same key as the API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from ccgate.api.auth import Client
from ccgate.api.routing import GatewayRoute

__all__ = ["as_served", "router"]

router = APIRouter(include_in_schema=False, route_class=GatewayRoute)


@router.get("/openapi.json")
async def openapi(request: Request, client: Client) -> dict[str, Any]:
    """Serve the OpenAPI schema of every route."""
    schema: dict[str, Any] = request.app.openapi()
    return as_served(schema)


def as_served(schema: dict[str, Any]) -> dict[str, Any]:
    """Return ``schema`` as ccgate answers: a malformed request is a 400, never a 422."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {}) if isinstance(operation, dict) else {}
            if responses.pop("422", None) is not None and "400" not in responses:
                responses["400"] = {
                    "description": "The request is malformed: the error names the field"
                }
    return schema


@router.get("/docs")
async def docs(client: Client) -> HTMLResponse:
    """Serve Swagger UI for the schema."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title="ccgate API")
