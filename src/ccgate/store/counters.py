"""Quota counters: requests, tokens and cost per namespace and time window.

Contract of a :class:`CounterStore` (one conformance suite runs it on SQLite
and Postgres):

- A window is a kind (``minute``, ``day``, ``month``) and its start (Unix
  seconds). A counter row holds the window's requests, tokens and cost.
- ``admit`` is atomic: it checks every limit against the counters (plus what
  the caller reserved for requests still running) and, only if none is
  reached, counts one request in every given window. Concurrent ``admit``
  calls are serialised per row, so two callers never both pass the last unit
  of a limit, in one process or several.
- ``charge`` adds tokens and cost to the given windows.
- ``sweep(kind, before)`` deletes the windows of a kind that started before ``before``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import (
    Float,
    Integer,
    Select,
    Update,
    and_,
    bindparam,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql.expression import ColumnElement

from ccgate.store.database import Database, Writer
from ccgate.store.tables import quota_counters

__all__ = [
    "CounterStore",
    "Limit",
    "Measure",
    "SqlCounterStore",
    "Totals",
    "Window",
    "charge_on",
    "count_on",
]

Measure = Literal["requests", "tokens", "cost_usd"]


@dataclass(frozen=True, slots=True)
class Window:
    """A time window: its kind and its start (Unix seconds)."""

    kind: str
    start: int


@dataclass(frozen=True, slots=True)
class Limit:
    """A ceiling on one measure of one window; admitted while ``value + reserved < ceiling``."""

    name: str
    window: Window
    measure: Measure
    ceiling: float
    reserved: float = 0.0


@dataclass(frozen=True, slots=True)
class Totals:
    """What a window has counted."""

    requests: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def value(self, measure: Measure) -> float:
        """Return one measure."""
        return float(getattr(self, measure))


class CounterStore(Protocol):
    """Where quota counters are kept; see the module docstring for the contract."""

    async def admit(
        self, namespace: str, windows: list[Window], limits: list[Limit]
    ) -> Limit | None:
        """Count one request in ``windows`` unless a limit is reached; return that limit."""
        ...

    async def charge(
        self, namespace: str, windows: list[Window], *, tokens: int, cost_usd: float
    ) -> None:
        """Add what a request spent to ``windows``."""
        ...

    async def totals(self, namespace: str, window: Window) -> Totals:
        """Return what a window has counted."""
        ...

    async def sweep(self, kind: str, before: int) -> int:
        """Delete the windows of ``kind`` that started before ``before``; return how many."""
        ...


def _key(namespace: str, window: Window) -> ColumnElement[bool]:
    c = quota_counters.c
    return and_(c.namespace == namespace, c.window == window.kind, c.start == window.start)


def _keys(namespace: str, windows: list[Window]) -> ColumnElement[bool]:
    c = quota_counters.c
    return and_(
        c.namespace == namespace,
        or_(*(and_(c.window == w.kind, c.start == w.start) for w in windows)),
    )


@functools.cache
def _where(n: int) -> ColumnElement[bool]:
    """Match a namespace's ``n`` windows by bound parameters (see :func:`_bind`); built once."""
    c = quota_counters.c
    return and_(
        c.namespace == bindparam("k_ns"),
        or_(
            *(
                and_(c.window == bindparam(f"k_w{i}"), c.start == bindparam(f"k_s{i}"))
                for i in range(n)
            )
        ),
    )


def _bind(namespace: str, windows: list[Window]) -> dict[str, Any]:
    bound: dict[str, Any] = {"k_ns": namespace}
    for i, window in enumerate(windows):
        bound[f"k_w{i}"] = window.kind
        bound[f"k_s{i}"] = window.start
    return bound


# The statements of every admission and charge, built once per number of windows: SQLAlchemy
# then neither rebuilds them nor recomputes their cache keys per request.


@functools.cache
def _read(n: int) -> Select[Any]:
    c = quota_counters.c
    return (
        select(c.window, c.start, c.requests, c.tokens, c.cost_usd)
        .where(_where(n))
        .with_for_update()
    )


@functools.cache
def _count(n: int) -> Update:
    return update(quota_counters).where(_where(n)).values(requests=quota_counters.c.requests + 1)


@functools.cache
def _add(n: int) -> Update:
    c = quota_counters.c
    return (
        update(quota_counters)
        .where(_where(n))
        .values(
            tokens=c.tokens + bindparam("add_tokens", type_=Integer),
            cost_usd=c.cost_usd + bindparam("add_usd", type_=Float),
        )
    )


async def _ensure(conn: Writer, dialect: str, namespace: str, windows: list[Window]) -> None:
    rows = [{"namespace": namespace, "window": w.kind, "start": w.start} for w in windows]
    if not rows:
        return
    # A write first: on SQLite it takes the database's write lock for the transaction.
    if dialect == "postgresql":
        await conn.execute(pg_insert(quota_counters).values(rows).on_conflict_do_nothing())
    else:
        await conn.execute(insert(quota_counters).prefix_with("OR IGNORE"), rows)


async def count_on(
    conn: Writer,
    dialect: str,
    namespace: str,
    windows: list[Window],
    limits: list[Limit],
) -> Limit | None:
    """Within ``conn``'s transaction, do what :meth:`CounterStore.admit` does."""
    every = list(dict.fromkeys([*windows, *(limit.window for limit in limits)]))
    if not every:
        return None
    await _ensure(conn, dialect, namespace, every)
    rows = await conn.execute(_read(len(every)), _bind(namespace, every))
    seen = {
        Window(r.window, int(r.start)): Totals(int(r.requests), int(r.tokens), float(r.cost_usd))
        for r in rows
    }
    for limit in limits:
        value = seen.get(limit.window, Totals()).value(limit.measure)
        if value + limit.reserved >= limit.ceiling:
            return limit  # nothing counted (the empty rows made above may stay)
    if windows:
        await conn.execute(_count(len(windows)), _bind(namespace, windows))
    return None


async def charge_on(
    conn: Writer,
    dialect: str,
    namespace: str,
    windows: list[Window],
    *,
    tokens: int,
    cost_usd: float,
) -> None:
    """Within ``conn``'s transaction, do what :meth:`CounterStore.charge` does."""
    if not windows or (not tokens and not cost_usd):
        return
    c = quota_counters.c
    # The rows exist since the request was admitted, unless a sweep removed them.
    bound = {**_bind(namespace, windows), "add_tokens": tokens, "add_usd": cost_usd}
    done = await conn.execute(_add(len(windows)), bound)
    if (done.rowcount or 0) < len(windows):
        await _ensure(conn, dialect, namespace, windows)
        await conn.execute(
            update(quota_counters)
            .where(_keys(namespace, windows), c.tokens == 0, c.cost_usd == 0)
            .values(tokens=tokens, cost_usd=cost_usd)
        )


class SqlCounterStore:
    """A :class:`CounterStore` on SQLAlchemy Core (SQLite or Postgres)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def admit(
        self, namespace: str, windows: list[Window], limits: list[Limit]
    ) -> Limit | None:
        """Count one request in ``windows`` unless a limit is reached; return that limit."""
        async with self._db.write() as conn:
            return await count_on(conn, self._db.dialect, namespace, windows, limits)

    async def charge(
        self, namespace: str, windows: list[Window], *, tokens: int, cost_usd: float
    ) -> None:
        """Add what a request spent to ``windows``."""
        if not tokens and not cost_usd:
            return
        async with self._db.write() as conn:
            await charge_on(
                conn, self._db.dialect, namespace, windows, tokens=tokens, cost_usd=cost_usd
            )

    async def totals(self, namespace: str, window: Window) -> Totals:
        """Return what a window has counted."""
        c = quota_counters.c
        query = select(c.requests, c.tokens, c.cost_usd).where(_key(namespace, window))
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return Totals()
        return Totals(int(row.requests), int(row.tokens), float(row.cost_usd))

    async def sweep(self, kind: str, before: int) -> int:
        """Delete the windows of ``kind`` that started before ``before``; return how many."""
        c = quota_counters.c
        async with self._db.write() as conn:
            result = await conn.execute(
                delete(quota_counters).where(c.window == kind, c.start < before)
            )
        return int(result.rowcount or 0)
