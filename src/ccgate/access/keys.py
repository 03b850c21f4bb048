"""Client keys of ``auth_mode=multi``: make them, check them, manage them.

A key is ``ccg_`` and 43 url-safe characters (256 random bits). Only its
SHA-256 is stored, with a preview (``ccg_ab12…``) to recognise it by; the raw
key is returned once, when it is made. A presented key is hashed and looked up
by hash, and the stored hash is compared with ``hmac.compare_digest``, so
neither the lookup nor the comparison depends on how much of a guess is right.

Authenticated keys are cached for ``KEY_CACHE_TTL`` seconds, so a busy key
costs one lookup a second, not one per request. A key changed or revoked here
is forgotten at once, and ``on_change(key id)`` tells the other replicas
(``cluster.bus``), which call :meth:`KeyManager.forget`; a change no replica
heard of (a command run against the database) applies within the ttl.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ccgate.errors import AuthenticationFailed, DatabaseBusy, InvalidRequest, NotFound
from ccgate.store.keys import KeyRecord, KeyStore, Quota

__all__ = ["KEY_CACHE_TTL", "KEY_PREFIX", "KeyManager", "NewKey", "hash_key", "preview"]

KEY_PREFIX = "ccg_"
#: Seconds an authenticated key is reused without a lookup.
KEY_CACHE_TTL = 1.0
#: Keys cached at most (the least recently checked go first).
_CACHE_MAX = 10_000
_NAME_MAX = 200


def hash_key(raw: str) -> str:
    """Return the stored form of a key."""
    return hashlib.sha256(raw.encode()).hexdigest()


def preview(raw: str) -> str:
    """Return how a key is shown: its prefix and first four characters."""
    return raw[: len(KEY_PREFIX) + 4] + "…"


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: its record and, this once, the key itself."""

    record: KeyRecord
    key: str


def _check_quota(quota: Quota) -> Quota:
    for name, value in quota.as_dict().items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise InvalidRequest(f"quota.{name} must be a number of 0 or more", param="quota")
        if name == "plan_share" and value > 1:
            raise InvalidRequest("quota.plan_share must be a fraction from 0 to 1", param="quota")
        if name not in ("budget_usd_per_month", "plan_share") and not isinstance(value, int):
            raise InvalidRequest(f"quota.{name} must be a whole number", param="quota")
    return quota


def _check_name(name: str) -> str:
    name = name.strip()
    if not 0 < len(name) <= _NAME_MAX:
        raise InvalidRequest(f"name must be 1 to {_NAME_MAX} characters", param="name")
    return name


class KeyManager:
    """Make, authenticate, change and revoke client keys.

    A key's last use is recorded through ``last_used`` (default: ``store``), best
    effort: while the database is locked it is skipped, never a reason to refuse.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        last_used: KeyStore | None = None,
        on_change: Callable[[str], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._last_used = last_used or store
        self._on_change = on_change
        self._clock = clock
        #: Authenticated keys by hash, with when they were looked up.
        self._cache: dict[str, tuple[KeyRecord, float]] = {}

    def forget(self, key_id: str | None) -> None:
        """Drop a key from the cache (``None``: every key)."""
        if key_id is None:
            self._cache.clear()
            return
        for digest, (record, _) in list(self._cache.items()):
            if record.id == key_id:
                del self._cache[digest]

    async def _changed(self, key_id: str) -> None:
        self.forget(key_id)
        if self._on_change is not None:
            await self._on_change(key_id)

    async def _lookup(self, digest: str) -> KeyRecord | None:
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[1] < KEY_CACHE_TTL:
            return cached[0]
        record = await self._store.by_hash(digest)
        if record is None:
            self._cache.pop(digest, None)
            return None
        if len(self._cache) >= _CACHE_MAX:
            self._cache.pop(next(iter(self._cache)))
        self._cache[digest] = (record, now)
        return record

    async def create(
        self,
        name: str,
        *,
        quota: Quota | None = None,
        models: tuple[str, ...] | None = None,
        expires_at: float | None = None,
    ) -> NewKey:
        """Make a key; the raw key is in the result and nowhere else."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        record = await self._store.create(
            _check_name(name),
            hash_key(raw),
            preview(raw),
            quota=_check_quota(quota or Quota()),
            models=models,
            expires_at=expires_at,
        )
        return NewKey(record, raw)

    async def authenticate(self, raw: str, *, now: float | None = None) -> KeyRecord:
        """Return the key ``raw`` is, or raise :class:`AuthenticationFailed` saying why not."""
        digest = hash_key(raw)
        record = await self._lookup(digest)
        if record is None or not hmac.compare_digest(record.key_hash, digest):
            raise AuthenticationFailed("invalid API key")
        stamp = time.time() if now is None else now
        if record.revoked_at is not None:
            raise AuthenticationFailed("this API key was revoked; ask for a new one")
        if record.disabled:
            raise AuthenticationFailed("this API key is disabled; ask its administrator")
        if record.expires_at is not None and record.expires_at <= stamp:
            raise AuthenticationFailed("this API key has expired; ask for a new one")
        try:
            touched = await self._last_used.touch(record, now=stamp)
        except DatabaseBusy:
            return record
        if touched is not record and digest in self._cache:
            self._cache[digest] = (touched, self._cache[digest][1])
        return touched

    async def get(self, key_id: str) -> KeyRecord:
        """Return a key by id, or raise NotFound."""
        record = await self._store.get(key_id)
        if record is None:
            raise NotFound(f"no API key '{key_id}'", code="key_not_found")
        return record

    async def list_keys(self, *, include_revoked: bool = False) -> list[KeyRecord]:
        """Return the keys, oldest first."""
        return await self._store.list_keys(include_revoked=include_revoked)

    async def update(self, key_id: str, **changes: Any) -> KeyRecord:
        """Change a key's name, quota, models, disabled flag or expiry."""
        current = await self.get(key_id)
        if current.revoked_at is not None:
            raise InvalidRequest(f"the API key '{key_id}' is revoked and cannot change")
        if "name" in changes:
            changes["name"] = _check_name(changes["name"])
        if "quota" in changes:
            changes["quota"] = _check_quota(changes["quota"])
        updated = await self._store.update(key_id, **changes)
        if updated is None:
            raise NotFound(f"no API key '{key_id}'", code="key_not_found")
        await self._changed(key_id)
        return updated

    async def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key; it stops working at once."""
        record = await self._store.revoke(key_id)
        if record is None:
            raise NotFound(f"no API key '{key_id}'", code="key_not_found")
        await self._changed(key_id)
        return record
