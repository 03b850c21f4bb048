"""The console's routes, one module per page; ``ROUTERS`` in the order the app includes them."""

from ccgate.console import accounts, keys, loops, overview, sessions, settings, signin, usage

__all__ = ["ROUTERS"]

ROUTERS = (
    signin.router,
    overview.router,
    keys.router,
    accounts.router,
    usage.router,
    sessions.router,
    settings.router,
    loops.router,
)
