"""Admissions: every admitted request is on record until its ledger row is written.

A request is admitted with a row here, written in the transaction that counts
it in its quota windows, so a process killed mid-turn leaves a trace: the
row, what the request had spent at its last checkpoint, and which process
owned it. The request's end *settles* it; a later start-up (or another
process) *interrupts* an admission whose owner is gone. Either one deletes
the row in the transaction that writes the ledger row and charges the quota
counters, and does nothing if the row is already gone — so each admitted
request gets exactly one ledger row, whichever comes first, however often
either is retried.

Contract of an :class:`AdmissionStore` (one conformance suite runs it on
SQLite and Postgres):

- ``admit`` is atomic: it counts the request in a namespace's windows as
  :meth:`CounterStore.admit` does and, only if no limit is reached, stores
  the admission (``None``: counts only).
- ``settle`` and ``interrupt`` act once per admission: the first call deletes
  it, appends the ledger row (unless the admission says the ledger is off)
  and charges tokens and cost to its windows; later calls change nothing and
  return ``False`` / ``None``. A settlement without an admission id writes
  its row and charge unconditionally. ``settle_many`` settles several in one
  transaction, each as ``settle`` would (the journal's batches).
- ``checkpoint`` marks an owner's admissions as seen now and stores what some
  of them have spent so far; ``pending`` lists every admission.

With counters kept apart (``SqlAdmissionStore(database, counters=...)``: the
Redis the replicas share, ``store.redis_counters``), the count and the record
cannot share a transaction. ``admit`` then counts first (one Redis round trip)
and stores the record after; if storing it fails, the count is refunded, so a
request is still never counted without its record (only for the moment in
between). ``settle`` charges the counters last in its transaction: if the
charge fails (Redis down, ``redis_outage=closed``) the transaction is rolled
back and the settlement waits in the journal like any other (only a commit
that failed after the charge went through would let a retry charge twice).
The ledger row and the admission's deletion stay in the database.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from sqlalchemy import Insert, bindparam, delete, insert, select, update
from sqlalchemy.sql.dml import ReturningDelete

from ccgate.store.counters import CounterStore, Limit, Window, charge_on, count_on
from ccgate.store.database import Database, Writer
from ccgate.store.tables import admissions
from ccgate.store.usage import UsageRecord, record_many_on

__all__ = [
    "INTERRUPTED",
    "AdmissionStore",
    "ApartCounterStore",
    "Pending",
    "Progress",
    "Settlement",
    "SqlAdmissionStore",
]

log = logging.getLogger("ccgate.store")

#: The ledger status of a request whose process died before it ended.
INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class Progress:
    """What a running request has spent so far."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float = 0.0
    session_key: str | None = None

    @property
    def tokens(self) -> int:
        """Return every token counted."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_creation_tokens
        )


@dataclass(frozen=True, slots=True)
class Pending:
    """An admitted request that has no ledger row yet."""

    id: str
    namespace: str
    endpoint: str
    model: str
    owner: str
    admitted_at: float
    session_key: str | None = None
    #: Where its tokens and cost are charged (empty: the request is not counted).
    windows: tuple[Window, ...] = ()
    #: Whether it gets a ledger row (``usage_ledger``); its charge is due either way.
    ledger: bool = True
    seen_at: float = 0.0
    progress: Progress = field(default_factory=Progress)


@dataclass(frozen=True, slots=True)
class Settlement:
    """What closes an admitted request: its ledger row, and what it spent on its windows."""

    admission_id: str | None
    namespace: str
    windows: tuple[Window, ...] = ()
    tokens: int = 0
    cost_usd: float = 0.0
    record: UsageRecord | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the settlement as JSON-able data (for the journal)."""
        return {
            "admission_id": self.admission_id,
            "namespace": self.namespace,
            "windows": [[w.kind, w.start] for w in self.windows],
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "record": asdict(self.record) if self.record is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settlement:
        """Return the settlement ``to_json`` made."""
        record = data.get("record")
        return cls(
            admission_id=data.get("admission_id"),
            namespace=str(data["namespace"]),
            windows=tuple(Window(str(k), int(s)) for k, s in data.get("windows", [])),
            tokens=int(data.get("tokens", 0)),
            cost_usd=float(data.get("cost_usd", 0.0)),
            record=UsageRecord(**record) if record is not None else None,
        )


class AdmissionStore(Protocol):
    """Where admissions are kept; see the module docstring for the contract."""

    async def admit(
        self,
        namespace: str,
        pending: Pending | None,
        windows: list[Window],
        limits: list[Limit],
    ) -> Limit | None:
        """Count a request in ``windows`` and store ``pending``, unless a limit is reached."""
        ...

    async def settle(self, settlement: Settlement) -> bool:
        """Close an admission with its ledger row and charge; False if it was closed already."""
        ...

    async def settle_many(self, settlements: list[Settlement]) -> list[bool]:
        """Settle several admissions at once; say which were still open (``settle`` each)."""
        ...

    async def checkpoint(self, owner: str, progress: dict[str, Progress], now: float) -> None:
        """Mark ``owner``'s admissions seen at ``now``; store the progress of some."""
        ...

    async def pending(self) -> list[Pending]:
        """Return every admission, oldest first."""
        ...

    async def interrupt(self, pending: Pending) -> UsageRecord | None:
        """Close an admission whose process died; return its row (None if closed already)."""
        ...


def _interrupted_record(pending: Pending) -> UsageRecord:
    """Return the ledger row of a request that was cut off with its process."""
    spent = pending.progress
    seen = max(pending.seen_at, pending.admitted_at)
    return UsageRecord(
        namespace=pending.namespace,
        endpoint=pending.endpoint,
        model=pending.model,
        status=INTERRUPTED,
        duration_ms=(seen - pending.admitted_at) * 1000,
        session_key=spent.session_key or pending.session_key,
        input_tokens=spent.input_tokens,
        output_tokens=spent.output_tokens,
        cache_read_tokens=spent.cache_read_tokens,
        cache_creation_tokens=spent.cache_creation_tokens,
        cost_usd=spent.cost_usd,
        created_at=seen,
    )


class ApartCounterStore(CounterStore, Protocol):
    """Counters kept apart from the database (Redis), which can take a count back."""

    async def refund(self, namespace: str, windows: list[Window]) -> None:
        """Take back one request ``admit`` counted in ``windows``."""
        ...


class SqlAdmissionStore:
    """An :class:`AdmissionStore` on SQLAlchemy Core (SQLite or Postgres).

    ``counters``: where requests are counted and charged instead of the database's
    ``quota_counters`` (see the module docstring); ``None``: in the same transactions.
    """

    def __init__(self, database: Database, *, counters: ApartCounterStore | None = None) -> None:
        self._db = database
        self._counters = counters

    async def admit(
        self,
        namespace: str,
        pending: Pending | None,
        windows: list[Window],
        limits: list[Limit],
    ) -> Limit | None:
        """Count a request in ``windows`` and store ``pending``, unless a limit is reached."""
        if self._counters is not None:
            return await self._admit_apart(self._counters, namespace, pending, windows, limits)
        async with self._db.write() as conn:
            reached = await count_on(conn, self._db.dialect, namespace, windows, limits)
            if reached is not None or pending is None:
                return reached
            seen = pending.seen_at or pending.admitted_at
            await conn.execute(_open(), _values(replace(pending, seen_at=seen)))
        return None

    async def _admit_apart(
        self,
        counters: ApartCounterStore,
        namespace: str,
        pending: Pending | None,
        windows: list[Window],
        limits: list[Limit],
    ) -> Limit | None:
        reached = await counters.admit(namespace, windows, limits)
        if reached is not None or pending is None:
            return reached
        seen = pending.seen_at or pending.admitted_at
        try:
            async with self._db.write() as conn:
                await conn.execute(_open(), _values(replace(pending, seen_at=seen)))
        except BaseException:
            # Not stored (a locked database, a cancelled request): not counted either.
            try:
                await counters.refund(namespace, windows)
            except Exception:  # noqa: BLE001 - the first failure is the one to raise
                log.error("quota_refund_failed namespace=%s", namespace, exc_info=True)
            raise
        return None

    async def settle(self, settlement: Settlement) -> bool:
        """Close an admission with its ledger row and charge; False if it was closed already."""
        [done] = await self.settle_many([settlement])
        return done

    async def settle_many(self, settlements: list[Settlement]) -> list[bool]:
        """Settle several admissions in one transaction; say which were still open.

        With the counters kept apart, each is settled in a transaction of its own
        (a charge there cannot be rolled back with the others).
        """
        if self._counters is not None:
            return [await self._settle_apart(self._counters, s) for s in settlements]
        async with self._db.write() as conn:
            done = await self._close_open(conn, settlements)
            charges: dict[tuple[str, tuple[Window, ...]], list[float]] = {}
            for settlement, closed in zip(settlements, done, strict=True):
                if closed and settlement.windows:
                    spent = charges.setdefault((settlement.namespace, settlement.windows), [0, 0])
                    spent[0] += settlement.tokens
                    spent[1] += settlement.cost_usd
            for (namespace, windows), (tokens, cost_usd) in charges.items():
                await charge_on(
                    conn,
                    self._db.dialect,
                    namespace,
                    list(windows),
                    tokens=int(tokens),
                    cost_usd=cost_usd,
                )
        return done

    async def _close_open(self, conn: Writer, settlements: list[Settlement]) -> list[bool]:
        """Delete the admissions and write the ledger rows of those still open."""
        ids = [s.admission_id for s in settlements if s.admission_id is not None]
        gone: set[str] = set()
        if ids:
            result = await conn.execute(_close(), {"ids": ids})
            gone = {str(row[0]) for row in result}
        done = [s.admission_id is None or s.admission_id in gone for s in settlements]
        await record_many_on(
            conn,
            [
                s.record
                for s, closed in zip(settlements, done, strict=True)
                if closed and s.record is not None
            ],
        )
        return done

    async def _settle_apart(self, counters: ApartCounterStore, settlement: Settlement) -> bool:
        async with self._db.write() as conn:
            [closed] = await self._close_open(conn, [settlement])
            if closed:
                # Last: a charge that fails rolls the transaction back (the journal retries).
                await counters.charge(
                    settlement.namespace,
                    list(settlement.windows),
                    tokens=settlement.tokens,
                    cost_usd=settlement.cost_usd,
                )
        return closed

    async def checkpoint(self, owner: str, progress: dict[str, Progress], now: float) -> None:
        """Mark ``owner``'s admissions seen at ``now``; store the progress of some."""
        c = admissions.c
        async with self._db.write() as conn:
            await conn.execute(update(admissions).where(c.owner == owner).values(seen_at=now))
            for admission_id, spent in progress.items():
                values = asdict(spent)
                if values["session_key"] is None:
                    del values["session_key"]
                await conn.execute(update(admissions).where(c.id == admission_id).values(**values))

    async def pending(self) -> list[Pending]:
        """Return every admission, oldest first."""
        query = select(admissions).order_by(admissions.c.admitted_at, admissions.c.id)
        async with self._db.engine.connect() as conn:
            return [_pending(row._mapping) for row in await conn.execute(query)]

    async def interrupt(self, pending: Pending) -> UsageRecord | None:
        """Close an admission whose process died; return its row (None if closed already)."""
        record = _interrupted_record(pending)
        settlement = Settlement(
            pending.id,
            pending.namespace,
            pending.windows,
            pending.progress.tokens,
            pending.progress.cost_usd,
            record if pending.ledger else None,
        )
        return record if await self.settle(settlement) else None


@functools.cache
def _open() -> Insert:
    """The statement that stores an admission (built once)."""
    return insert(admissions)


@functools.cache
def _close() -> ReturningDelete[tuple[str]]:
    """The statement that deletes admissions by id and says which it found (built once)."""
    c = admissions.c
    return delete(admissions).where(c.id.in_(bindparam("ids", expanding=True))).returning(c.id)


def _values(pending: Pending) -> dict[str, Any]:
    spent = pending.progress
    return {
        "id": pending.id,
        "namespace": pending.namespace,
        "endpoint": pending.endpoint,
        "model": pending.model,
        "session_key": spent.session_key or pending.session_key,
        "windows": json.dumps([[w.kind, w.start] for w in pending.windows]),
        "ledger": pending.ledger,
        "owner": pending.owner,
        "admitted_at": pending.admitted_at,
        "seen_at": pending.seen_at,
        "input_tokens": spent.input_tokens,
        "output_tokens": spent.output_tokens,
        "cache_read_tokens": spent.cache_read_tokens,
        "cache_creation_tokens": spent.cache_creation_tokens,
        "cost_usd": spent.cost_usd,
    }


def _pending(row: Any) -> Pending:
    return Pending(
        id=row["id"],
        namespace=row["namespace"],
        endpoint=row["endpoint"],
        model=row["model"],
        owner=row["owner"],
        admitted_at=float(row["admitted_at"]),
        session_key=row["session_key"],
        windows=tuple(Window(str(k), int(s)) for k, s in json.loads(row["windows"] or "[]")),
        ledger=bool(row["ledger"]),
        seen_at=float(row["seen_at"]),
        progress=Progress(
            int(row["input_tokens"]),
            int(row["output_tokens"]),
            int(row["cache_read_tokens"]),
            int(row["cache_creation_tokens"]),
            float(row["cost_usd"]),
        ),
    )
