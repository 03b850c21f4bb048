"""The caller's own conversation sessions: ``/v1/sessions``."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from ccgate.api.auth import Client
from ccgate.api.openapi import errors
from ccgate.api.routing import GatewayRoute
from ccgate.api.state import State
from ccgate.errors import NotFound
from ccgate.store.sessions import SessionRecord

__all__ = ["router", "session_object"]

router = APIRouter(tags=["Sessions"], route_class=GatewayRoute)


def session_object(record: SessionRecord, ttl: float, now: float | None = None) -> dict[str, Any]:
    """Return a session as the API shows it."""
    now = time.time() if now is None else now
    idle = max(0.0, now - record.last_used_at)
    return {
        "object": "session",
        "key": record.key,
        "model": record.model,
        "turns": record.turns,
        "created_at": int(record.created_at),
        "last_used_at": int(record.last_used_at),
        "idle_seconds": round(idle, 1),
        "ttl_remaining_seconds": round(max(0.0, ttl - idle), 1),
        "usage": {"input_tokens": record.input_tokens, "output_tokens": record.output_tokens},
    }


@router.get("/v1/sessions")
async def list_sessions(state: State, client: Client) -> dict[str, Any]:
    """List the caller's sessions, most recently used first."""
    ttl = state.settings.session_ttl
    records = await state.sessions.list_sessions(client.namespace)
    return {"object": "list", "data": [session_object(r, ttl) for r in records]}


@router.get("/v1/sessions/{key}", responses=errors("openai", 404))
async def get_session(key: str, state: State, client: Client) -> dict[str, Any]:
    """Describe one of the caller's sessions."""
    record = await state.sessions.get(client.namespace, key)
    if record is None:
        raise NotFound(f"no session '{key}'", param="key", code="session_not_found")
    return session_object(record, state.settings.session_ttl)


@router.delete("/v1/sessions/{key}", responses=errors("openai", 404))
async def delete_session(key: str, state: State, client: Client) -> dict[str, Any]:
    """Forget one of the caller's sessions and its transcript."""
    gone = await state.sessions.delete(client.namespace, key)
    if not gone:
        raise NotFound(f"no session '{key}'", param="key", code="session_not_found")
    return {"object": "session.deleted", "key": key, "deleted": True}


@router.delete("/v1/sessions")
async def delete_sessions(state: State, client: Client) -> dict[str, Any]:
    """Forget every session of the caller."""
    gone = await state.sessions.delete(client.namespace, None)
    return {"object": "session.deleted", "deleted": len(gone)}
