"""Who is at the console (the web face at ``/``): sign-in with a key, the cookie, CSRF,
and the brake on guessing.

A key is typed into the sign-in form (never put in a URL). The admin key signs
in as ``admin`` (everything), the shared key (``auth_mode=shared``) as
``shared``, a client key (``auth_mode=multi``) as ``client`` (its own usage,
sessions and loops). With ``auth_mode=none`` (loopback only) the console is
open, as the API is: the first visit gets a ``local`` sign-in without a key.

A sign-in is a random token in an ``HttpOnly``, ``SameSite=Strict`` cookie
(``Secure`` when the request came over TLS), stored by its SHA-256 with an
expiry (``console_session_ttl``); signing out deletes it. Every
state-changing request carries the sign-in's CSRF token (a form field or the
``X-CSRF-Token`` header), compared in constant time. Failed sign-ins are
limited per client address (:class:`Brake`): after :data:`FAILURES` in
:data:`WINDOW` seconds the form answers 429 until the window has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass

from ccgate.access.keys import KeyManager
from ccgate.config import Settings
from ccgate.errors import AuthenticationFailed, NotFound
from ccgate.store.console import ConsoleSession, ConsoleSessionStore

__all__ = [
    "FAILURES",
    "WINDOW",
    "Brake",
    "Signins",
    "Viewer",
]

#: Failed sign-ins allowed per client address in :data:`WINDOW` seconds.
FAILURES = 5
WINDOW = 60.0


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _equal(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who a console request is from."""

    role: str
    namespace: str
    key_id: str | None
    name: str
    csrf: str

    @property
    def sees_all(self) -> bool:
        """Tell whether it sees every key's data (the admin, or the one shared key)."""
        return self.role in ("admin", "shared", "local")

    @property
    def is_admin(self) -> bool:
        """Tell whether it may manage keys."""
        return self.role == "admin"

    def check_csrf(self, presented: str | None) -> bool:
        """Tell whether ``presented`` is this sign-in's CSRF token."""
        return presented is not None and _equal(presented, self.csrf)

    @classmethod
    def of(cls, session: ConsoleSession) -> Viewer:
        """Return the viewer a stored sign-in stands for."""
        return cls(session.role, session.namespace, session.key_id, session.name, session.csrf)


class Brake:
    """Failed sign-ins per client address, in a sliding window."""

    def __init__(self, failures: int = FAILURES, window: float = WINDOW) -> None:
        self._failures = failures
        self._window = window
        self._seen: dict[str, deque[float]] = {}

    def wait(self, address: str, *, now: float | None = None) -> float:
        """Return how many seconds ``address`` must wait before it may try again (0: now)."""
        stamp = time.monotonic() if now is None else now
        seen = self._seen.get(address)
        if seen is None:
            return 0.0
        while seen and seen[0] <= stamp - self._window:
            seen.popleft()
        if not seen:
            del self._seen[address]
            return 0.0
        if len(seen) < self._failures:
            return 0.0
        return max(0.0, seen[0] + self._window - stamp)

    def failed(self, address: str, *, now: float | None = None) -> None:
        """Count a failed sign-in of ``address``."""
        stamp = time.monotonic() if now is None else now
        self._seen.setdefault(address, deque(maxlen=self._failures)).append(stamp)
        if len(self._seen) > 10_000:  # a flood of addresses: forget the oldest
            self._seen.pop(next(iter(self._seen)))


class Signins:
    """Sign in, find and sign out console viewers."""

    def __init__(self, settings: Settings, store: ConsoleSessionStore, keys: KeyManager) -> None:
        self._settings = settings
        self._store = store
        self._keys = keys
        self.brake = Brake()

    @property
    def open(self) -> bool:
        """Tell whether the console needs no key (``auth_mode=none``)."""
        return self._settings.auth_mode == "none"

    async def sign_in(self, raw_key: str) -> tuple[str, Viewer]:
        """Check ``raw_key``; return a new sign-in's token and its viewer.

        Raise :class:`AuthenticationFailed` saying why not.
        """
        key = raw_key.strip()
        settings = self._settings
        if not key:
            raise AuthenticationFailed("type a key to sign in")
        admin = settings.admin_key
        if admin is not None and _equal(key, admin.get_secret_value()):
            return await self._start("admin", "admin", None, "admin")
        if settings.auth_mode == "shared":
            shared = settings.api_key
            if shared is not None and _equal(key, shared.get_secret_value()):
                return await self._start("shared", "shared", None, "shared key")
            raise AuthenticationFailed("this key is not the gateway's key")
        if settings.auth_mode == "multi":
            record = await self._keys.authenticate(key)
            return await self._start("client", record.id, record.id, record.name)
        return await self._start("local", "local", None, "local")

    async def open_session(self) -> tuple[str, Viewer]:
        """Start a sign-in without a key (``auth_mode=none`` only)."""
        if not self.open:
            raise AuthenticationFailed("sign in with a key")
        return await self._start("local", "local", None, "local")

    async def viewer(self, token: str | None) -> Viewer | None:
        """Return who holds ``token``, or None (no sign-in, expired, or its key no longer works)."""
        if not token or len(token) > 128:
            return None
        session = await self._store.get(_hash(token))
        if session is None:
            return None
        if session.key_id is not None:
            try:
                record = await self._keys.get(session.key_id)
            except NotFound:
                await self._store.delete(session.token_hash)
                return None
            usable = (
                record.revoked_at is None
                and not record.disabled
                and (record.expires_at is None or record.expires_at > time.time())
            )
            if not usable:
                await self._store.delete(session.token_hash)
                return None
        elif session.role == "admin" and self._settings.admin_key is None:
            return None  # the admin key was taken away since
        return Viewer.of(session)

    async def sign_out(self, token: str | None) -> None:
        """End the sign-in ``token`` holds."""
        if token:
            await self._store.delete(_hash(token))

    async def end_key(self, key_id: str) -> int:
        """End every sign-in of a client key (it was revoked)."""
        return await self._store.delete_key(key_id)

    async def _start(
        self, role: str, namespace: str, key_id: str | None, name: str
    ) -> tuple[str, Viewer]:
        token = secrets.token_urlsafe(32)
        now = time.time()
        session = ConsoleSession(
            token_hash=_hash(token),
            role=role,
            namespace=namespace,
            key_id=key_id,
            name=name,
            csrf=secrets.token_urlsafe(24),
            created_at=now,
            expires_at=now + self._settings.console_session_ttl,
        )
        await self._store.expire(now=now)  # the expired go as new ones come
        await self._store.create(session)
        return token, Viewer.of(session)
