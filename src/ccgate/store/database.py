"""Open the database named by ``database_url`` and bring its schema up to date.

Writes wait a bounded time for a lock another process holds (SQLite's write
lock during a backup or ``ccgate keys create``, a Postgres lock): past
``busy_timeout`` seconds they raise :class:`ccgate.errors.DatabaseBusy`
instead of an error of the driver.

On SQLite a write transaction runs on a connection of the event loop's own
thread when it can: it begins with ``BEGIN IMMEDIATE`` without waiting, so it
either holds the write lock at once (and then never waits: a local write takes
microseconds) or finds another process holding it and goes the regular way, on
the driver's worker thread, which waits for the lock. Each statement through
the worker thread costs several thread hand-offs; the in-loop way costs none.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, CursorResult, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ccgate.errors import ConfigError, DatabaseBusy

__all__ = ["Database", "InlineConnection", "Writer", "async_url", "is_lock_error"]

#: The Postgres advisory lock ccgate's migrations hold (any fixed 64-bit number).
_MIGRATE_LOCK = 0x63636761_7465  # "ccgate"

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def async_url(url: str) -> str:
    """Return ``url`` with the async driver ccgate uses for its backend."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises several kinds
        raise ConfigError(f"database_url is not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"database_url: unsupported database '{backend}'; use sqlite:///PATH or "
            "postgresql://USER@HOST/DB"
        )
    if "+" not in parsed.drivername:
        parsed = parsed.set(drivername=_DRIVERS[parsed.drivername])
    return parsed.render_as_string(hide_password=False)


class Writer(Protocol):
    """A connection in a write transaction: an ``AsyncConnection``, or an
    :class:`InlineConnection` (the same calls, run at once in the event loop's thread)."""

    async def execute(self, statement: Any, parameters: Any = None) -> CursorResult[Any]:
        """Run a statement (SQLAlchemy Core) with its parameters (a dict, or a list of them)."""
        ...


class InlineConnection:
    """A :class:`Writer` over a synchronous connection: its calls complete without waiting."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def execute(self, statement: Any, parameters: Any = None) -> CursorResult[Any]:
        """Run a statement at once."""
        return self._connection.execute(statement, parameters)


def _private_file(path: Path) -> None:
    """Create the database file readable by its owner only (SQLite gives its journal files
    the database file's mode), and tighten an existing one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)


def _sqlite_pragmas(busy_ms: int) -> Any:
    def configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        # With WAL this never corrupts the database; only an OS crash could lose the last
        # commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    return configure


def _inline_engine(url: str, options: dict[str, Any]) -> Engine:
    """Return a synchronous engine whose transactions take SQLite's write lock at once or fail."""
    sync_url = make_url(url).set(drivername="sqlite")
    engine = create_engine(sync_url, **options)
    configure = _sqlite_pragmas(0)

    def connect(dbapi_connection: Any, record: Any) -> None:
        configure(dbapi_connection, record)
        dbapi_connection.isolation_level = None  # transactions begin as said below

    def begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", connect)
    event.listen(engine, "begin", begin)
    return engine


def _with_lock_timeout(options: dict[str, Any], busy_ms: int) -> dict[str, Any]:
    """Return engine options whose Postgres sessions give up a lock wait after ``busy_ms``."""
    connect_args = dict(options.get("connect_args", {}))
    server_settings = dict(connect_args.get("server_settings", {}))
    server_settings.setdefault("lock_timeout", str(busy_ms))
    connect_args["server_settings"] = server_settings
    return {**options, "connect_args": connect_args}


def is_lock_error(exc: BaseException) -> bool:
    """Tell whether a driver error means a lock another connection holds was not granted."""
    orig = getattr(exc, "orig", exc)
    if getattr(orig, "sqlstate", None) == "55P03":  # Postgres lock_not_available
        return True
    message = str(orig).lower()
    return "database is locked" in message or "database table is locked" in message


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "ccgate.store:migrations")
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class Database:
    """One async engine for ccgate's database; ``migrate()`` runs at start.

    Stores write through :meth:`write`. SQLite lets one writer in at a time and
    makes the others sleep and retry in growing steps, so this process's writers
    queue for it in memory instead (other processes still meet SQLite's lock).
    A write waits at most ``busy_timeout`` seconds in all, in that queue and for
    the lock itself, then raises :class:`ccgate.errors.DatabaseBusy`.
    """

    def __init__(self, url: str, *, busy_timeout: float = 5.0, **engine_options: Any) -> None:
        self.url = async_url(url)
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            _private_file(Path(parsed.database).expanduser())
        # An error's text names the statement, never its values (keys' hashes, prompts).
        engine_options.setdefault("hide_parameters", True)
        self._options = engine_options
        self.busy_timeout = busy_timeout
        self.engine: AsyncEngine = self._engine(busy_timeout)
        #: Every engine of this database and its hurried views, closed together.
        self._engines = [self.engine]
        self._writer: asyncio.Lock | None = None
        #: SQLite: the engine of write transactions in the event loop's thread.
        self._inline: Engine | None = None
        if self.engine.dialect.name == "sqlite":
            self._writer = asyncio.Lock()
            self._inline = _inline_engine(self.url, engine_options)

    def _engine(self, wait: float) -> AsyncEngine:
        """Return an engine whose connections wait ``wait`` seconds for a lock."""
        if make_url(self.url).get_backend_name() == "postgresql":
            return create_async_engine(self.url, **_with_lock_timeout(self._options, _ms(wait)))
        engine = create_async_engine(self.url, **self._options)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(_ms(wait)))
        return engine

    def hurried(self, wait: float) -> Database:
        """Return this database with writes that wait at most ``wait`` seconds.

        It shares this one's writer queue, and has connections of its own (set up
        for the shorter wait); closing either closes both.
        """
        view = copy.copy(self)
        view.busy_timeout = min(wait, self.busy_timeout)
        view.engine = self._engine(view.busy_timeout)
        self._engines.append(view.engine)
        return view

    def _busy(self) -> DatabaseBusy:
        return DatabaseBusy(
            f"the database is locked by another process (a backup, `ccgate keys`, another "
            f"ccgate?) and stayed locked for {self.busy_timeout:g} s; retry shortly",
            retry_after=1,
        )

    def _begin_inline(self) -> Connection | None:
        """Begin a write transaction in this thread; ``None`` if another process holds the lock."""
        if self._inline is None:
            return None
        connection = self._inline.connect()
        try:
            connection.begin()
        except DBAPIError as exc:
            connection.close()
            if is_lock_error(exc):
                return None
            raise
        return connection

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Writer]:
        """Run a write transaction (committed at the end of the block, rolled back on error).

        Raise :class:`ccgate.errors.DatabaseBusy` when a lock is not granted in time.
        """
        try:
            if self._writer is None:
                async with self.engine.begin() as conn:
                    yield conn
                return
            deadline = time.monotonic() + self.busy_timeout
            try:
                # Not wait_for: on Python 3.11 it can swallow a cancellation of the caller.
                async with asyncio.timeout(self.busy_timeout):
                    await self._writer.acquire()
            except TimeoutError:
                raise self._busy() from None
            try:
                inline = self._begin_inline()
                if inline is not None:
                    try:
                        yield InlineConnection(inline)
                        inline.commit()
                    except BaseException:
                        inline.rollback()
                        raise
                    finally:
                        inline.close()
                    return
                async with self.engine.begin() as conn:
                    # Time spent queueing counts: wait only what is left for SQLite's lock.
                    left = deadline - time.monotonic()
                    shorter = left < self.busy_timeout - 0.05
                    if shorter:
                        await conn.exec_driver_sql(f"PRAGMA busy_timeout={_ms(left)}")
                    try:
                        yield conn
                    finally:
                        if shorter:
                            with contextlib.suppress(Exception):
                                restore = _ms(self.busy_timeout)
                                await conn.exec_driver_sql(f"PRAGMA busy_timeout={restore}")
            finally:
                self._writer.release()
        except DBAPIError as exc:
            if is_lock_error(exc):
                raise self._busy() from None
            raise

    @property
    def dialect(self) -> str:
        """Return ``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    async def migrate(self) -> None:
        """Upgrade the schema to the newest migration (an older database is upgraded).

        On Postgres the upgrade holds an advisory lock for its transaction, so
        replicas starting at the same time migrate one after the other: the
        first upgrades, the others then find the schema current and do nothing.
        (SQLite serialises writers by itself.)
        """
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK}
                )
            await conn.run_sync(_upgrade)

    async def close(self) -> None:
        """Close every pooled connection (of the hurried views too)."""
        for engine in self._engines:
            await engine.dispose()
        if self._inline is not None:
            self._inline.dispose()
