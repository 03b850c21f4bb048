"""Upstream accounts: the credentials Claude Code runs with, and what the plan meter knows.

Contract of an :class:`AccountStore` (one conformance suite runs it on SQLite and
Postgres):

- ``create`` stores an account and returns it; a name in use raises
  :class:`AccountExists`. The secret is stored as given: the caller encrypts it
  (``accounts.secrets``), and no method returns it decrypted;
- ``get`` finds one account by id or by name; ``list_accounts`` returns them all,
  lowest priority number first, then oldest;
- ``update`` changes ``name``, ``priority``, ``enabled``, ``base_url``, ``kind``,
  ``secret`` or ``secret_hint`` and returns the account (``None``: no such
  account); a name in use raises :class:`AccountExists`;
- ``save_plan`` stores the meter's state of one account (no other field moves);
- ``delete`` removes one and tells whether it existed.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Protocol

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ccgate.store.database import Database
from ccgate.store.records import AccountRecord
from ccgate.store.tables import accounts

__all__ = ["AccountExists", "AccountRecord", "AccountStore", "SqlAccountStore"]

_UPDATABLE = {"name", "priority", "enabled", "base_url", "kind", "secret", "secret_hint"}


class AccountExists(Exception):
    """Another account has that name."""


class AccountStore(Protocol):
    """Where upstream accounts are kept; see the module docstring for the contract."""

    async def create(
        self,
        name: str,
        kind: str,
        *,
        secret: str | None = None,
        secret_hint: str | None = None,
        base_url: str | None = None,
        priority: int = 0,
        enabled: bool = True,
        source: str = "stored",
    ) -> AccountRecord:
        """Store a new account."""
        ...

    async def get(self, id_or_name: str) -> AccountRecord | None:
        """Return the account with that id or name."""
        ...

    async def list_accounts(self) -> list[AccountRecord]:
        """Return every account, lowest priority number first."""
        ...

    async def update(self, account_id: str, **values: Any) -> AccountRecord | None:
        """Change an account; return it, or ``None`` when there is no such account."""
        ...

    async def save_plan(self, account_id: str, plan: dict[str, Any]) -> None:
        """Store what the plan meter knows of an account."""
        ...

    async def delete(self, account_id: str) -> bool:
        """Remove an account; tell whether it existed."""
        ...


def _record(row: Any) -> AccountRecord:
    m = row._mapping
    return AccountRecord(
        id=m["id"],
        name=m["name"],
        kind=m["kind"],
        secret=m["secret"],
        secret_hint=m["secret_hint"],
        base_url=m["base_url"],
        priority=int(m["priority"]),
        enabled=bool(m["enabled"]),
        source=m["source"],
        plan=json.loads(m["plan"] or "{}"),
        created_at=float(m["created_at"]),
        updated_at=float(m["updated_at"]),
    )


class SqlAccountStore:
    """:class:`AccountStore` on the database."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(
        self,
        name: str,
        kind: str,
        *,
        secret: str | None = None,
        secret_hint: str | None = None,
        base_url: str | None = None,
        priority: int = 0,
        enabled: bool = True,
        source: str = "stored",
    ) -> AccountRecord:
        """Store a new account."""
        now = time.time()
        made = AccountRecord(
            id="acc_" + secrets.token_hex(8),
            name=name,
            kind=kind,
            secret=secret,
            secret_hint=secret_hint,
            base_url=base_url,
            priority=priority,
            enabled=enabled,
            source=source,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._db.write() as conn:
                await conn.execute(
                    insert(accounts).values(
                        id=made.id,
                        name=name,
                        kind=kind,
                        secret=secret,
                        secret_hint=secret_hint,
                        base_url=base_url,
                        priority=priority,
                        enabled=enabled,
                        source=source,
                        plan="{}",
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError as exc:
            raise AccountExists(name) from exc
        return made

    async def get(self, id_or_name: str) -> AccountRecord | None:
        """Return the account with that id or name."""
        c = accounts.c
        query = select(accounts).where(or_(c.id == id_or_name, c.name == id_or_name))
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row is not None else None

    async def list_accounts(self) -> list[AccountRecord]:
        """Return every account, lowest priority number first, then oldest."""
        c = accounts.c
        query = select(accounts).order_by(c.priority, c.created_at, c.id)
        async with self._db.engine.connect() as conn:
            return [_record(row) for row in await conn.execute(query)]

    async def update(self, account_id: str, **values: Any) -> AccountRecord | None:
        """Change an account; return it, or ``None`` when there is no such account."""
        unknown = set(values) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        try:
            async with self._db.write() as conn:
                done = await conn.execute(
                    update(accounts)
                    .where(accounts.c.id == account_id)
                    .values(**values, updated_at=time.time())
                )
        except IntegrityError as exc:
            raise AccountExists(str(values.get("name"))) from exc
        if not done.rowcount:
            return None
        return await self.get(account_id)

    async def save_plan(self, account_id: str, plan: dict[str, Any]) -> None:
        """Store what the plan meter knows of an account."""
        async with self._db.write() as conn:
            await conn.execute(
                update(accounts).where(accounts.c.id == account_id).values(plan=json.dumps(plan))
            )

    async def delete(self, account_id: str) -> bool:
        """Remove an account; tell whether it existed."""
        async with self._db.write() as conn:
            done = await conn.execute(delete(accounts).where(accounts.c.id == account_id))
        return bool(done.rowcount)
