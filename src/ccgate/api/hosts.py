"""Answer only for this gateway's own host names, and never to web pages of other origins.

*DNS rebinding*: a web page the operator visits can point its own name at
127.0.0.1 and then, from the operator's browser, talk to a gateway that checks
no key (``auth_mode=none`` on loopback), loops and their tools included. The
browser sends the page's name in ``Host``, so a request whose ``Host`` is not a
name of this gateway is refused with **421 Misdirected Request** (this server
does not serve that authority; not 403, which would say the caller lacks a
right). The names are the loopback ones (``localhost``, ``127.0.0.1``,
``[::1]``, any port), the bound address and ``allowed_hosts``.

*Cross-origin requests*: a browser names the page that makes a request in
``Origin``. A request whose ``Origin`` is neither this gateway's own origin nor
an allowed host is refused with **403**, whatever its method (writes and reads
of sessions, usage or metrics alike), CORS preflights included, which therefore
never succeed. A browser's request from another site without ``Origin`` (an
image or script tag) is refused by its ``Sec-Fetch-Site`` header, except a
plain navigation (a link to ``/docs``). SDKs and curl send neither header and
are not affected.

When ccgate listens on a network address, a key is required anyway (which a
browser never adds on its own); there, unless ``allowed_hosts`` is set, any
``Host`` is accepted, since clients may use any of the machine's names.
``allowed_hosts = ["*"]`` turns both checks off.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from ccgate.api.errors import error_body
from ccgate.config import Settings, host_name, is_loopback
from ccgate.errors import GatewayError, MisdirectedRequest, PermissionDenied

__all__ = ["HostGuard", "HostPolicy"]

_NAVIGATION_METHODS = frozenset({"GET", "HEAD"})


def _canonical(name: str) -> str:
    """Return ``name`` in one spelling (IPv6 literals compressed)."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return host == ""


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Which ``Host`` and ``Origin`` values a gateway accepts."""

    #: Names accepted besides the loopback ones (canonical, without a port).
    names: frozenset[str] = frozenset()
    #: ``Host`` is not checked (a network bind without ``allowed_hosts``, or ``*``).
    any_host: bool = False
    #: ``Origin`` is not checked (``*``).
    any_origin: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        """Return the policy of ``settings``: loopback names, the bound address, the list."""
        listed = set(settings.allowed_hosts)
        wildcard = "*" in listed
        names = {_canonical(n) for n in listed - {"*"}}
        network = not is_loopback(settings.host)
        if network and not _is_wildcard(settings.host):
            bound = host_name(settings.host)
            if bound:
                names.add(_canonical(bound))
        return cls(
            names=frozenset(names),
            any_host=wildcard or (network and not listed),
            any_origin=wildcard,
        )

    def _known(self, name: str) -> bool:
        return is_loopback(name) or _canonical(name) in self.names

    def host_allowed(self, host: str | None) -> bool:
        """Tell whether a request with this ``Host`` header is for this gateway."""
        if self.any_host or host is None:  # no Host at all: not a browser (HTTP/1.0)
            return True
        name = host_name(host)
        return name is not None and self._known(name)

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """Tell whether a page of ``origin`` may use this gateway (reached as ``host``)."""
        if self.any_origin:
            return True
        parts = urlsplit(origin.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (a file, a sandbox), an extension, garbage
        if host is not None and parts.netloc.lower() == host.strip().lower():
            return True  # the gateway's own pages (/docs)
        name = host_name(parts.netloc)
        return name is not None and self._known(name)


class HostGuard:
    """ASGI middleware: refuse a wrong ``Host`` (421) and other origins' browsers (403)."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        error = self._refusal(scope)
        if error is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await self._refuse(scope.get("path", ""), error, send)

    def _refusal(self, scope: Scope) -> GatewayError | None:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            name = raw_name.decode("latin-1").lower()
            if name in ("host", "origin", "sec-fetch-site", "sec-fetch-mode"):
                headers.setdefault(name, raw_value.decode("latin-1"))
        host = headers.get("host")
        if not self.policy.host_allowed(host):
            return MisdirectedRequest(
                f"this gateway does not answer to the host {(host or '')[:100]!r}: it answers "
                "to its loopback names (localhost, 127.0.0.1, [::1]) and the names in "
                "allowed_hosts. To reach it by this name, add the name to allowed_hosts "
                "(CCGATE_ALLOWED_HOSTS).",
                code="host_not_allowed",
            )
        origin = headers.get("origin")
        if origin is not None:
            if self.policy.origin_allowed(origin, host):
                return None
            return PermissionDenied(
                f"web pages of another origin ({origin[:100]}) may not use this gateway; "
                "clients other than browsers send no Origin header. To let a page of your own "
                "use it, add its host name to allowed_hosts (CCGATE_ALLOWED_HOSTS).",
                code="origin_not_allowed",
            )
        navigation = (
            headers.get("sec-fetch-mode") == "navigate"
            and scope.get("method") in _NAVIGATION_METHODS
        )
        if (
            headers.get("sec-fetch-site") == "cross-site"
            and not navigation
            and not self.policy.any_origin
        ):
            return PermissionDenied(
                "web pages of another site may not use this gateway",
                code="origin_not_allowed",
            )
        return None

    async def _refuse(self, path: str, error: GatewayError, send: Send) -> None:
        body, status = error_body(path, error)
        payload = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),  # the body, if any, was never read
            *((k.encode(), v.encode()) for k, v in error.headers().items()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
