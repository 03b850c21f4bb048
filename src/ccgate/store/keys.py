"""API keys of ``auth_mode=multi``: the contract (:class:`KeyStore`) and its SQL implementation.

Contract of a :class:`KeyStore` (one conformance suite runs it on SQLite and
Postgres):

- Only a key's hash is stored (with a short preview such as ``ccg_ab12…``);
  ``by_hash`` finds a key by it, revoked or not (the caller decides).
- ``create`` refuses a hash already stored (:class:`KeyExists`).
- ``update`` changes only the fields it is given; ``revoke`` stamps
  ``revoked_at`` once (a second revoke keeps the first time) and a revoked key
  is never updated again.
- ``list_keys`` returns keys oldest first, revoked ones only when asked.
- ``touch`` writes ``last_used_at`` at most once a minute per key.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import replace
from typing import Any, Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from ccgate.store.database import Database
from ccgate.store.records import KeyRecord, Quota
from ccgate.store.tables import api_keys

__all__ = ["KeyExists", "KeyRecord", "KeyStore", "Quota", "SqlKeyStore"]


class KeyExists(Exception):
    """A key with that hash is already stored."""


class KeyStore(Protocol):
    """Where API keys are kept; see the module docstring for the contract."""

    async def create(
        self,
        name: str,
        key_hash: str,
        preview: str,
        *,
        quota: Quota | None = None,
        models: tuple[str, ...] | None = None,
        expires_at: float | None = None,
        now: float | None = None,
    ) -> KeyRecord:
        """Store a new key."""
        ...

    async def get(self, key_id: str) -> KeyRecord | None:
        """Return the key ``key_id``."""
        ...

    async def by_hash(self, key_hash: str) -> KeyRecord | None:
        """Return the key whose hash is ``key_hash``."""
        ...

    async def list_keys(self, *, include_revoked: bool = False) -> list[KeyRecord]:
        """Return the keys, oldest first."""
        ...

    async def update(self, key_id: str, **changes: Any) -> KeyRecord | None:
        """Change name, quota, models, disabled or expires_at; return the key, or None."""
        ...

    async def revoke(self, key_id: str, *, now: float | None = None) -> KeyRecord | None:
        """Revoke a key; return it, or ``None`` if it does not exist."""
        ...

    async def touch(self, key: KeyRecord, *, now: float | None = None) -> KeyRecord:
        """Remember when a key was last used (at most once a minute per key)."""
        ...


def _record(row: Any) -> KeyRecord:
    m = row._mapping
    models = json.loads(m["models"]) if m["models"] is not None else None
    return KeyRecord(
        id=m["id"],
        name=m["name"],
        key_hash=m["key_hash"],
        preview=m["preview"],
        quota=Quota.from_dict(json.loads(m["quota"] or "{}")),
        models=tuple(models) if models is not None else None,
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        disabled=bool(m["disabled"]),
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
    )


def _models(models: tuple[str, ...] | None) -> str | None:
    return json.dumps(list(models)) if models is not None else None


_UPDATABLE = {"name", "quota", "models", "disabled", "expires_at"}


class SqlKeyStore:
    """A :class:`KeyStore` on SQLAlchemy Core (SQLite or Postgres)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(
        self,
        name: str,
        key_hash: str,
        preview: str,
        *,
        quota: Quota | None = None,
        models: tuple[str, ...] | None = None,
        expires_at: float | None = None,
        now: float | None = None,
    ) -> KeyRecord:
        """Store a new key."""
        made = KeyRecord(
            id="key_" + secrets.token_hex(8),
            name=name,
            key_hash=key_hash,
            preview=preview,
            quota=quota or Quota(),
            models=models,
            created_at=time.time() if now is None else now,
            expires_at=expires_at,
        )
        values = {
            "id": made.id,
            "name": name,
            "key_hash": key_hash,
            "preview": preview,
            "quota": json.dumps(made.quota.as_dict()),
            "models": _models(models),
            "created_at": made.created_at,
            "expires_at": expires_at,
            "disabled": False,
        }
        try:
            async with self._db.write() as conn:
                await conn.execute(insert(api_keys).values(**values))
        except IntegrityError:
            raise KeyExists("a key with this hash exists") from None
        return made

    async def get(self, key_id: str) -> KeyRecord | None:
        """Return the key ``key_id``."""
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return _record(row) if row else None

    async def by_hash(self, key_hash: str) -> KeyRecord | None:
        """Return the key whose hash is ``key_hash``."""
        query = select(api_keys).where(api_keys.c.key_hash == key_hash)
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row else None

    async def list_keys(self, *, include_revoked: bool = False) -> list[KeyRecord]:
        """Return the keys, oldest first."""
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self._db.engine.connect() as conn:
            return [_record(r) for r in await conn.execute(query)]

    async def update(self, key_id: str, **changes: Any) -> KeyRecord | None:
        """Change name, quota, models, disabled or expires_at; return the key, or None."""
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise TypeError(f"cannot update {', '.join(sorted(unknown))}")
        values = dict(changes)
        if "quota" in values:
            values["quota"] = json.dumps(values["quota"].as_dict())
        if "models" in values:
            values["models"] = _models(values["models"])
        async with self._db.write() as conn:
            if values:
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                    .values(**values)
                )
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return _record(row) if row else None

    async def revoke(self, key_id: str, *, now: float | None = None) -> KeyRecord | None:
        """Revoke a key; return it, or ``None`` if it does not exist."""
        stamp = time.time() if now is None else now
        async with self._db.write() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=stamp)
            )
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return _record(row) if row else None

    async def touch(self, key: KeyRecord, *, now: float | None = None) -> KeyRecord:
        """Remember when a key was last used (at most once a minute per key)."""
        stamp = time.time() if now is None else now
        if key.last_used_at is not None and stamp - key.last_used_at < 60:
            return key
        async with self._db.write() as conn:
            await conn.execute(
                update(api_keys).where(api_keys.c.id == key.id).values(last_used_at=stamp)
            )
        return replace(key, last_used_at=stamp)
