"""Open the database named by ``database_url`` and bring its schema up to date."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ccgate.errors import ConfigError

__all__ = ["Database", "async_url"]

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


def _private_file(path: Path) -> None:
    """Create the database file readable by its owner only (SQLite gives its journal files
    the database file's mode), and tighten an existing one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # With WAL this never corrupts the database; only an OS crash could lose the last commits.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


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
    """

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = async_url(url)
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            _private_file(Path(parsed.database).expanduser())
        # An error's text names the statement, never its values (keys' hashes, prompts).
        engine_options.setdefault("hide_parameters", True)
        self.engine: AsyncEngine = create_async_engine(self.url, **engine_options)
        self._writer: asyncio.Lock | None = None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            self._writer = asyncio.Lock()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """Run a write transaction (committed at the end of the block, rolled back on error)."""
        if self._writer is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._writer, self.engine.begin() as conn:
            yield conn

    @property
    def dialect(self) -> str:
        """Return ``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    async def migrate(self) -> None:
        """Upgrade the schema to the newest migration (an older database is upgraded)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
