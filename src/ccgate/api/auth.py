"""Client authentication: which caller is this, and may it use the gateway."""

from __future__ import annotations

import hmac

from fastapi import Request

from ccgate.api.state import AppState
from ccgate.errors import AuthenticationFailed

__all__ = ["client_key", "require_client"]


def client_key(request: Request) -> str | None:
    """Return the key a request carries (``Authorization: Bearer`` or ``x-api-key``)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = request.headers.get("x-api-key", "").strip()
    return key or None


def require_client(request: Request) -> str:
    """Check the caller's key for the auth mode in force; return the caller's namespace."""
    state: AppState = request.app.state.ccgate
    settings = state.settings
    if settings.auth_mode == "none":
        return "local"
    presented = client_key(request)
    if presented is None:
        raise AuthenticationFailed(
            "no API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
        )
    if settings.auth_mode == "shared" and settings.api_key is not None:
        expected = settings.api_key.get_secret_value()
        if hmac.compare_digest(presented.encode(), expected.encode()):
            return "shared"
    raise AuthenticationFailed("invalid API key")
