"""``GET /v1/usage``: a caller's own usage, from the ledger."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter

from ccgate.api.auth import Client
from ccgate.api.routing import GatewayRoute
from ccgate.api.state import State
from ccgate.protocol.admin import parse_time, usage_object

__all__ = ["router"]

router = APIRouter(tags=["Usage"], route_class=GatewayRoute)


@router.get("/v1/usage")
async def own_usage(
    state: State,
    client: Client,
    since: str | None = None,
    until: str | None = None,
    group_by: Literal["day", "model"] = "day",
) -> dict[str, Any]:
    """Summarise what the caller's key has used."""
    start, end = parse_time(since, "since"), parse_time(until, "until")
    rows = await state.ledger.summarize(client.namespace, since=start, until=end, group_by=group_by)
    return usage_object(rows, group_by, start, end)
