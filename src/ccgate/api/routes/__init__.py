"""The routes, one module per front door; ``ROUTERS`` in the order the app includes them."""

from ccgate.api.routes import (
    admin,
    anthropic,
    docs,
    health,
    loops,
    openai,
    responses,
    sessions,
    usage,
)

__all__ = ["ROUTERS"]

ROUTERS = (
    openai.router,
    responses.router,
    anthropic.router,
    sessions.router,
    usage.router,
    admin.router,
    loops.router,
    health.router,
    docs.router,
)
