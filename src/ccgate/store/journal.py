"""The journal: writes a finished turn owes the database, kept in a local file until it takes them.

What a turn leaves behind (its ledger row and quota charge, its session's new
state, a loop's turn count) must not be lost because another process holds
the database's lock. :meth:`Journal.keep` applies such a write at once; if the
database cannot take it, the write is appended to ``journal.jsonl`` in the
data dir (mode 0600, flushed to disk before ``keep`` returns) and
:meth:`Journal.replay` applies it later, in order: at start and then
periodically. While entries wait for a busy database, new writes queue behind
them in the file rather than wait for it too.

Each kind of write is applied by a function given at construction. A write
may be applied twice (a crash between the database's commit and the file's
rewrite), so each must be safe to repeat: settling an admission and recording
a session's turn are (``store.admissions``, ``store.sessions``). An entry that
keeps failing for another reason than a busy database is moved, after
``max_attempts`` replays, to ``journal.failed.jsonl`` and logged.

Several processes sharing a data dir share the journal: ``journal.lock``
(``flock``) orders their appends and replays.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ccgate.errors import DatabaseBusy, SharedStateUnavailable

__all__ = ["Apply", "Journal", "Replayed"]

log = logging.getLogger("ccgate.store")

#: Applies one kind of write to the database (raises DatabaseBusy when it cannot now).
Apply = Callable[[dict[str, Any]], Awaitable[object]]


@dataclass
class _Entry:
    kind: str
    payload: dict[str, Any]
    ref: str | None = None
    at: float = 0.0
    attempts: int = 0

    def line(self) -> bytes:
        return (json.dumps(asdict(self), separators=(",", ":")) + "\n").encode()


@dataclass(frozen=True, slots=True)
class Replayed:
    """What a replay did: entries applied, entries still waiting, entries given up."""

    applied: int = 0
    left: int = 0
    failed: int = 0


def _open_private(path: Path, flags: int) -> int:
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return fd


@contextmanager
def _locked(lock: Path, *, wait: bool) -> Iterator[bool]:
    """Hold ``lock`` (an flock) for the block; say whether it was granted."""
    fd = _open_private(lock, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _append_to(path: Path, lines: list[bytes]) -> None:
    fd = _open_private(path, os.O_WRONLY | os.O_APPEND)
    try:
        _write_all(fd, b"".join(lines))
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Apply writes now, or keep them in a file and apply them later; never lose one."""

    def __init__(
        self, path: Path, appliers: Mapping[str, Apply], *, max_attempts: int = 100
    ) -> None:
        self.path = path
        self._lock_path = path.with_name(path.stem + ".lock")
        self._failed_path = path.with_name(path.stem + ".failed" + path.suffix)
        self._appliers = dict(appliers)
        self._max_attempts = max_attempts
        self._local = asyncio.Lock()
        #: Entries this process knows wait in the file; whether they wait for a busy database
        #: (then new writes queue behind them instead of waiting for it too).
        self._waiting = 0
        self._busy = False
        self._refs: set[str] = set()

    @property
    def waiting(self) -> int:
        """Return how many entries wait in the file, as of this process's last look."""
        return self._waiting

    def refs(self) -> set[str]:
        """Return the references (admission ids) of the entries waiting in the file."""
        return set(self._refs)

    async def keep(self, kind: str, payload: dict[str, Any], *, ref: str | None = None) -> bool:
        """Apply a write now, or keep it for later; say whether it was applied now.

        Never raises: a write that can neither be applied nor kept is logged.
        """
        if not self._busy:
            try:
                await self._appliers[kind](payload)
                return True
            except (DatabaseBusy, SharedStateUnavailable):
                self._busy = True
                log.warning("journal_kept kind=%s reason=database_busy", kind)
            except Exception:  # noqa: BLE001 - kept and retried; a lost write is worse
                log.error("journal_kept kind=%s reason=error", kind, exc_info=True)
        entry = _Entry(kind, payload, ref, time.time())
        try:
            async with self._local:
                await asyncio.to_thread(self._append, [entry.line()], self.path)
                self._waiting += 1
                if ref is not None:
                    self._refs.add(ref)
        except Exception:  # noqa: BLE001 - nothing more can be done than say so
            log.error("journal_write_failed kind=%s path=%s", kind, self.path, exc_info=True)
        return False

    def _append(self, lines: list[bytes], path: Path) -> None:
        with _locked(self._lock_path, wait=True):
            _append_to(path, lines)

    def _read(self) -> tuple[list[_Entry], list[bytes]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return [], []
        entries: list[_Entry] = []
        broken: list[bytes] = []
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                entries.append(_Entry(**json.loads(line)))
            except (ValueError, TypeError):
                broken.append(line + b"\n")  # a line cut by a crash mid-write, say
        return entries, broken

    def _rewrite(self, entries: list[_Entry]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = _open_private(temporary, os.O_WRONLY | os.O_TRUNC)
        try:
            _write_all(fd, b"".join(e.line() for e in entries))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def replay(self) -> Replayed:
        """Apply the entries waiting in the file, in order, until the database is busy.

        Skipped (nothing done) while another process replays the same file.
        """
        async with self._local:
            if not self.path.exists():
                self._waiting, self._busy, self._refs = 0, False, set()
                return Replayed()
            with _locked(self._lock_path, wait=False) as granted:
                if not granted:
                    return Replayed(left=self._waiting)
                return await self._replay_locked()

    async def _replay_locked(self) -> Replayed:
        entries, broken = self._read()
        left: list[_Entry] = []
        failed: list[bytes] = list(broken)
        applied = 0
        retried = False
        busy = False
        for entry in entries:
            if busy:
                left.append(entry)
                continue
            try:
                apply = self._appliers[entry.kind]
                await apply(entry.payload)
                applied += 1
                continue
            except (DatabaseBusy, SharedStateUnavailable):
                busy = True
                left.append(entry)
                continue
            except Exception:  # noqa: BLE001 - counted; given up on after max_attempts
                entry.attempts += 1
                retried = True
                log.warning(
                    "journal_replay_failed kind=%s attempts=%d",
                    entry.kind,
                    entry.attempts,
                    exc_info=True,
                )
            if entry.attempts >= self._max_attempts:
                failed.append(entry.line())
            else:
                left.append(entry)
        if failed:
            await asyncio.to_thread(_append_to, self._failed_path, failed)  # lock held
            log.error("journal_entries_failed count=%d path=%s", len(failed), self._failed_path)
        if applied or failed or retried:
            await asyncio.to_thread(self._rewrite, left)
        self._waiting, self._busy = len(left), busy
        self._refs = {e.ref for e in left if e.ref is not None}
        if applied or failed:
            log.info(
                "journal_replayed applied=%d left=%d failed=%d", applied, len(left), len(failed)
            )
        return Replayed(applied, len(left), len(failed))
