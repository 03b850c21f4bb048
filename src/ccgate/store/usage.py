"""The usage ledger: one record per admitted request, and summaries of them.

Rows are written when a request is settled or found interrupted (``store.admissions``).

Contract of a :class:`UsageStore` (one conformance suite runs it on SQLite and
Postgres):

- ``record`` appends one row atomically; rows are never changed afterwards.
- ``summarize`` groups the rows of a namespace (or of all namespaces) created
  in ``[since, until)`` by ``day`` (UTC date), ``model`` or ``key`` (the
  namespace), ordered by the group; every group counts its requests, cached
  requests, failed requests, tokens and cost.
- ``recent`` returns a namespace's newest rows first; ``between`` the rows of a
  namespace (or of all) made in ``[since, until)``, oldest first, at most ``limit``.

A finished request's row is written behind its answer (``store.journal``):
:class:`SqlUsageStore` is given the journal's ``flush`` as ``before_read``, so a
read in the same process sees every request that has been answered.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, Literal, Protocol

from sqlalchemy import case, func, insert, select

from ccgate.store.database import Database, Writer
from ccgate.store.records import COUNTS, UsageRecord, UsageSummary
from ccgate.store.tables import usage_records

__all__ = [
    "COUNTS",
    "GroupBy",
    "SqlUsageStore",
    "UsageRecord",
    "UsageStore",
    "UsageSummary",
    "record_many_on",
    "record_on",
    "utc_day",
]

GroupBy = Literal["day", "model", "key"]

#: Statuses of a request that got its answer (anything else is a failure or a cut).
OK_STATUSES = ("ok", "tool_use")


def utc_day(stamp: float) -> str:
    """Return the UTC date of a Unix time as ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(stamp))


class UsageStore(Protocol):
    """Where the ledger is kept; see the module docstring for the contract."""

    async def record(self, record: UsageRecord) -> None:
        """Append one record."""
        ...

    async def summarize(
        self,
        namespace: str | None,
        *,
        since: float | None = None,
        until: float | None = None,
        group_by: GroupBy = "day",
    ) -> list[UsageSummary]:
        """Return totals of the records in the window, by group."""
        ...

    async def recent(self, namespace: str, limit: int = 100) -> list[UsageRecord]:
        """Return the namespace's newest records first."""
        ...

    async def between(
        self, namespace: str | None, *, since: float, until: float, limit: int
    ) -> list[UsageRecord]:
        """Return the records made in ``[since, until)``, oldest first, at most ``limit``."""
        ...

    async def account_spend(self, account: str, since: float) -> dict[str, tuple[float, int]]:
        """Return each namespace's cost and tokens on ``account`` since ``since``."""
        ...


def _row(record: UsageRecord) -> dict[str, Any]:
    stamp = record.created_at or time.time()
    return {**asdict(record), "created_at": stamp, "day": utc_day(stamp)}


async def record_on(conn: Writer, record: UsageRecord) -> None:
    """Within ``conn``'s transaction, append one record."""
    await conn.execute(insert(usage_records).values(**_row(record)))


async def record_many_on(conn: Writer, records: list[UsageRecord]) -> None:
    """Within ``conn``'s transaction, append several records in one statement."""
    if records:
        await conn.execute(insert(usage_records), [_row(record) for record in records])


_GROUPS = {
    "day": usage_records.c.day,
    "model": usage_records.c.model,
    "key": usage_records.c.namespace,
}


class SqlUsageStore:
    """A :class:`UsageStore` on SQLAlchemy Core (SQLite or Postgres).

    ``before_read``: awaited before every read (the journal's ``flush``: rows written
    behind their answers are in the database before they are looked for).
    """

    def __init__(
        self, database: Database, *, before_read: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self._db = database
        self._before_read = before_read

    async def _read(self) -> None:
        if self._before_read is not None:
            await self._before_read()

    async def account_spend(self, account: str, since: float) -> dict[str, tuple[float, int]]:
        """Return each namespace's cost and tokens on ``account`` since ``since``."""
        c = usage_records.c
        tokens = c.input_tokens + c.output_tokens + c.cache_read_tokens + c.cache_creation_tokens
        query = (
            select(c.namespace, func.sum(c.cost_usd), func.sum(tokens))
            .where(c.account == account, c.created_at >= since)
            .group_by(c.namespace)
        )
        await self._read()
        async with self._db.engine.connect() as conn:
            rows = list(await conn.execute(query))
        return {row[0]: (float(row[1] or 0.0), int(row[2] or 0)) for row in rows}

    async def record(self, record: UsageRecord) -> None:
        """Append one record."""
        async with self._db.write() as conn:
            await record_on(conn, record)

    async def summarize(
        self,
        namespace: str | None,
        *,
        since: float | None = None,
        until: float | None = None,
        group_by: GroupBy = "day",
    ) -> list[UsageSummary]:
        """Return totals of the records in the window, by group."""
        group = _GROUPS[group_by]
        c = usage_records.c
        failed = case((c.status.in_(OK_STATUSES), 0), else_=1)
        query = select(
            group.label("grp"),
            func.count().label("requests"),
            func.coalesce(func.sum(case((c.cached, 1), else_=0)), 0).label("cached"),
            func.coalesce(func.sum(failed), 0).label("failed"),
            func.coalesce(func.sum(c.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(c.output_tokens), 0).label("output_tokens"),
            func.coalesce(func.sum(c.cache_read_tokens), 0).label("cache_read_tokens"),
            func.coalesce(func.sum(c.cache_creation_tokens), 0).label("cache_creation_tokens"),
            func.coalesce(func.sum(c.cost_usd), 0.0).label("cost_usd"),
        ).group_by(group)
        if namespace is not None:
            query = query.where(c.namespace == namespace)
        if since is not None:
            query = query.where(c.created_at >= since)
        if until is not None:
            query = query.where(c.created_at < until)
        await self._read()
        async with self._db.engine.connect() as conn:
            rows = list(await conn.execute(query.order_by(group)))
        return [
            UsageSummary(
                group=str(r.grp),
                requests=int(r.requests),
                cached_requests=int(r.cached),
                failed_requests=int(r.failed),
                input_tokens=int(r.input_tokens),
                output_tokens=int(r.output_tokens),
                cache_read_tokens=int(r.cache_read_tokens),
                cache_creation_tokens=int(r.cache_creation_tokens),
                cost_usd=round(float(r.cost_usd), 6),
            )
            for r in rows
        ]

    async def between(
        self, namespace: str | None, *, since: float, until: float, limit: int
    ) -> list[UsageRecord]:
        """Return the records made in ``[since, until)``, oldest first, at most ``limit``."""
        c = usage_records.c
        query = (
            select(usage_records)
            .where(c.created_at >= since, c.created_at < until)
            .order_by(c.created_at, c.id)
            .limit(limit)
        )
        if namespace is not None:
            query = query.where(c.namespace == namespace)
        await self._read()
        async with self._db.engine.connect() as conn:
            rows = list(await conn.execute(query))
        names = set(UsageRecord.__dataclass_fields__)
        return [UsageRecord(**{k: v for k, v in r._mapping.items() if k in names}) for r in rows]

    async def recent(self, namespace: str, limit: int = 100) -> list[UsageRecord]:
        """Return the namespace's newest records first."""
        c = usage_records.c
        query = (
            select(usage_records)
            .where(c.namespace == namespace)
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(limit)
        )
        await self._read()
        async with self._db.engine.connect() as conn:
            rows = list(await conn.execute(query))
        names = set(UsageRecord.__dataclass_fields__)
        return [UsageRecord(**{k: v for k, v in r._mapping.items() if k in names}) for r in rows]
