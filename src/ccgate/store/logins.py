"""Claude Code's OAuth login in the database, so every replica runs on the freshest copy.

A Claude Code login is an access token that expires within hours and a
refresh token that works once. Replicas on several machines share one login
through this store (``accounts.login`` decides when to refresh and who does);
this module only keeps the sealed bytes.

Contract of a :class:`LoginStore` (one conformance suite runs it on SQLite and
Postgres):

- A login is keyed by a name (``login``) and holds ``sealed`` (the encrypted
  credentials, opaque here) and ``expires_at`` (Unix milliseconds, when its
  access token expires).
- ``put`` keeps the newer login only: it stores ``sealed`` when no login of
  that name is stored or the stored one expires earlier, and returns whether
  it did. Two replicas racing to store what they hold thus end with the later
  expiry, never an older token over a newer one, in one statement.
- ``get`` returns the stored :class:`StoredLogin`, or ``None``.
- ``claim(name, expires_at, by=, until=)`` lets one replica renew the stored
  login: it succeeds (``True``) only while the stored login is still the one
  that expires at ``expires_at`` and no claim on it lasts past ``now``; the
  claim then lasts until ``until``. A claim is the database's half of the
  refresh lock: a refresh token is posted only under a successful claim, so
  two replicas never post the same one, even when the Redis lease was lost
  mid-refresh; a failed refresh leaves its claim standing, so the whole
  cluster waits until ``until`` before the next attempt. Storing a newer login
  (``put``) clears the claim.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ccgate.store.database import Database
from ccgate.store.tables import login_credentials

__all__ = ["LoginStore", "SqlLoginStore", "StoredLogin"]


@dataclass(frozen=True, slots=True)
class StoredLogin:
    """A stored login: its sealed credentials, their expiry and who stored them."""

    sealed: str
    expires_at: int
    updated_at: float
    updated_by: str

    def __repr__(self) -> str:
        return f"StoredLogin(expires_at={self.expires_at}, updated_by={self.updated_by!r})"


class LoginStore(Protocol):
    """Where the replicas share a login; see the module docstring for the contract."""

    async def get(self, name: str) -> StoredLogin | None:
        """Return the stored login ``name``, or ``None``."""
        ...

    async def put(
        self, name: str, sealed: str, expires_at: int, *, by: str, now: float | None = None
    ) -> bool:
        """Store the login unless the stored one expires as late or later; say whether."""
        ...

    async def claim(
        self, name: str, expires_at: int, *, by: str, until: float, now: float | None = None
    ) -> bool:
        """Claim the renewal of the stored login that expires at ``expires_at``; say whether."""
        ...


class SqlLoginStore:
    """A :class:`LoginStore` on SQLAlchemy Core (SQLite or Postgres)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def get(self, name: str) -> StoredLogin | None:
        """Return the stored login ``name``, or ``None``."""
        c = login_credentials.c
        query = select(c.sealed, c.expires_at, c.updated_at, c.updated_by).where(c.name == name)
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return StoredLogin(row.sealed, int(row.expires_at), float(row.updated_at), row.updated_by)

    async def put(
        self, name: str, sealed: str, expires_at: int, *, by: str, now: float | None = None
    ) -> bool:
        """Store the login unless the stored one expires as late or later; say whether."""
        values = {
            "sealed": sealed,
            "expires_at": expires_at,
            "updated_at": time.time() if now is None else now,
            "updated_by": by[:128],
            "refreshing_until": None,
            "refreshing_by": None,
        }
        make = pg_insert if self._db.dialect == "postgresql" else sqlite_insert
        c = login_credentials.c
        upsert = (
            make(login_credentials)
            .values(name=name, **values)
            .on_conflict_do_update(
                index_elements=[c.name], set_=values, where=c.expires_at < expires_at
            )
            .returning(c.name)
        )
        async with self._db.write() as conn:
            stored = (await conn.execute(upsert)).first()
        return stored is not None

    async def claim(
        self, name: str, expires_at: int, *, by: str, until: float, now: float | None = None
    ) -> bool:
        """Claim the renewal of the stored login that expires at ``expires_at``; say whether."""
        now = time.time() if now is None else now
        c = login_credentials.c
        claim = (
            update(login_credentials)
            .where(
                c.name == name,
                c.expires_at == expires_at,
                or_(c.refreshing_until.is_(None), c.refreshing_until < now),
            )
            .values(refreshing_until=until, refreshing_by=by[:128])
            .returning(c.name)
        )
        async with self._db.write() as conn:
            claimed = (await conn.execute(claim)).first()
        return claimed is not None
