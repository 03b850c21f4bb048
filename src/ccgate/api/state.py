"""The gateway every route works with, from the app's lifespan state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ccgate.gateway import Gateway

__all__ = ["State", "gateway_of"]


def gateway_of(request: Request) -> Gateway:
    """Return the running gateway of the request's app."""
    gateway: Gateway = request.app.state.ccgate
    return gateway


State = Annotated[Gateway, Depends(gateway_of)]
