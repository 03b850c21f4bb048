"""The HTTP app: ``create_app(settings)``, its routes and middleware, the Gateway in its lifespan.

Nothing starts when the app is built: the :class:`~ccgate.gateway.Gateway`
starts in the lifespan (served with uvicorn's factory mode or any ASGI
server) and is the app's ``state.ccgate`` while it runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ccgate import __version__
from ccgate.api.crash import CrashGuard
from ccgate.api.errors import install_error_handlers
from ccgate.api.hosts import HostGuard, HostPolicy
from ccgate.api.limits import BodyLimit
from ccgate.api.routes import ROUTERS
from ccgate.config import Settings
from ccgate.console.routes import ROUTERS as CONSOLE_ROUTERS
from ccgate.console.view import PREFIX, ConsoleHeaders, static_files
from ccgate.engine.runner import Runner
from ccgate.gateway import Gateway

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    *,
    runner: Runner | None = None,
    environ: Mapping[str, str] | None = None,
) -> FastAPI:
    """Build the app; its :class:`Gateway` starts in the lifespan, never at build time.

    ``runner`` and ``environ`` go to the gateway (a test's runner; the environment
    Claude Code's processes are made from, default ``os.environ``).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Gateway(settings, runner=runner, environ=environ) as gateway:
            app.state.ccgate = gateway
            yield

    app = FastAPI(
        title="ccgate",
        version=__version__,
        summary="Claude Code behind the OpenAI and Anthropic APIs",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    if settings.console:
        for router in CONSOLE_ROUTERS:
            app.include_router(router)
        app.mount(f"{PREFIX}/static", static_files(), name="console-static")
        app.add_middleware(ConsoleHeaders)
    # The last one added runs first: crashes end in CrashGuard; a wrong Host or origin is
    # refused before anything else is done.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(HostGuard, policy=HostPolicy.from_settings(settings))
    app.add_middleware(CrashGuard)
    return app
