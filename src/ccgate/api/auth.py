"""Client authentication: which caller is this, and may it use the gateway (or the admin API)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from ccgate.access.caller import Caller
from ccgate.errors import AuthenticationFailed, PermissionDenied
from ccgate.gateway import Gateway
from ccgate.keystrength import MAKE_ONE

__all__ = [
    "Admin",
    "Client",
    "MetricsReader",
    "client_key",
    "require_admin",
    "require_client",
    "require_metrics_reader",
]


def client_key(request: Request) -> str | None:
    """Return the key a request carries (``Authorization: Bearer`` or ``x-api-key``)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = request.headers.get("x-api-key", "").strip()
    return key or None


def _equal(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())


async def require_client(request: Request) -> Caller:
    """Check the caller's key for the auth mode in force; return the caller."""
    state: Gateway = request.app.state.ccgate
    settings = state.settings
    if settings.auth_mode == "none":
        return Caller("local")
    presented = client_key(request)
    if presented is None:
        raise AuthenticationFailed(
            "no API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
        )
    if settings.auth_mode == "shared":
        if settings.api_key is not None and _equal(presented, settings.api_key.get_secret_value()):
            return Caller("shared")
        raise AuthenticationFailed("invalid API key")
    key = await state.keys.authenticate(presented)
    return Caller(key.id, key)


def require_admin(request: Request) -> None:
    """Check the admin key (``admin_key``) of an admin request."""
    state: Gateway = request.app.state.ccgate
    expected = state.settings.admin_key
    if expected is None:
        raise AuthenticationFailed(
            "the admin API is off: start ccgate with CCGATE_ADMIN_KEY set to the output of "
            f"{MAKE_ONE}"
        )
    presented = client_key(request)
    if presented is None or not _equal(presented, expected.get_secret_value()):
        raise AuthenticationFailed("invalid admin key")


async def require_metrics_reader(request: Request) -> None:
    """Check who reads ``/metrics``: the admin key or ``metrics_token``, or the shared key.

    In ``auth_mode=multi`` a client key is refused (403): the metrics show every
    key's traffic, which is not one client's business. With ``auth_mode=none``
    ``/metrics`` is open, like everything else on loopback.
    """
    state: Gateway = request.app.state.ccgate
    settings = state.settings
    if settings.auth_mode == "none":
        return
    presented = client_key(request)
    if presented is None:
        raise AuthenticationFailed(
            "no key: /metrics needs the admin key or metrics_token (or, with "
            "auth_mode=shared, the shared key) as 'Authorization: Bearer <key>'"
        )
    readers = [settings.admin_key, settings.metrics_token]
    if settings.auth_mode == "shared":
        readers.append(settings.api_key)
    # Every candidate is compared, so the time taken does not say which one matched.
    matches = [_equal(presented, r.get_secret_value()) for r in readers if r is not None]
    if any(matches):
        return
    if settings.auth_mode == "multi":
        await state.keys.authenticate(presented)  # 401 for an unknown, revoked... key
        raise PermissionDenied(
            "a client key may not read /metrics in auth_mode=multi (the metrics show every "
            "key's traffic): scrape it with admin_key or metrics_token",
            code="metrics_not_allowed",
        )
    raise AuthenticationFailed("invalid key for /metrics")


Client = Annotated[Caller, Depends(require_client)]
Admin = Annotated[None, Depends(require_admin)]
MetricsReader = Annotated[None, Depends(require_metrics_reader)]
