"""``GET /v1/usage``: a caller's own usage, from the ledger."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from ccgate.api.auth import Client
from ccgate.api.routing import GatewayRoute
from ccgate.api.state import State
from ccgate.protocol.admin import TIME_SCHEMA, parse_time, usage_object

__all__ = ["router"]

router = APIRouter(tags=["Usage"], route_class=GatewayRoute)


@router.get("/v1/usage")
async def own_usage(
    state: State,
    client: Client,
    since: Annotated[str | None, Query(json_schema_extra=TIME_SCHEMA)] = None,
    until: Annotated[str | None, Query(json_schema_extra=TIME_SCHEMA)] = None,
    group_by: Literal["day", "model"] = "day",
) -> dict[str, Any]:
    """Summarise what the caller's key has used; with ``usage_shows_plan``, also the shared
    headroom of the upstream accounts' plans (percentages and reset times only)."""
    start, end = parse_time(since, "since"), parse_time(until, "until")
    rows = await state.ledger.summarize(client.namespace, since=start, until=end, group_by=group_by)
    answer = usage_object(rows, group_by, start, end)
    if state.settings.usage_shows_plan:
        answer["plan"] = await state.shared_plan(client.namespace)
    return answer
