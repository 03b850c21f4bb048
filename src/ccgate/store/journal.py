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

**Written behind the answer.** :meth:`Journal.defer` takes a write that can be
applied in a batch (a request's settlement: its ledger row and quota charge)
without waiting for the database: the write is appended to a *spool* file of
this process (``journal.<pid>-<id>.spool``, held with an ``flock`` while its
process lives; the bytes are in the kernel before ``defer`` returns, so a
``kill -9`` does not lose them) and queued for the writer, which applies
everything queued in one transaction and then deletes the spool. New writes go
to a new spool meanwhile. A batch the database does not take goes the way of
:meth:`Journal.keep` (applied one by one, or kept in ``journal.jsonl``).
:meth:`Journal.flush` waits until everything deferred so far is applied (the
ledger's readers call it, so a read sees every answered request). A spool whose
process died (its ``flock`` is free) is moved into ``journal.jsonl`` by the next
:meth:`Journal.replay` of any process on the data dir, and applied with it;
deferred writes are therefore applied at least once, and must be safe to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ccgate.errors import DatabaseBusy, SharedStateUnavailable

__all__ = ["Apply", "ApplyMany", "Done", "Journal", "Replayed"]

log = logging.getLogger("ccgate.store")

#: Applies one kind of write to the database (raises DatabaseBusy when it cannot now).
Apply = Callable[[dict[str, Any]], Awaitable[object]]
#: Applies several writes of one kind in one transaction (all or none).
ApplyMany = Callable[[list[dict[str, Any]]], Awaitable[object]]
#: Told once a deferred write is applied (or kept in the journal's file).
Done = Callable[[], None]


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


class _Spool:
    """A file of deferred writes, ``flock``-ed by its process until they are applied."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = _open_private(path, os.O_WRONLY | os.O_APPEND)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: never contended

    def write(self, line: bytes) -> None:
        # No fsync: a killed process's writes are in the kernel; an OS crash is the database's
        # own risk too (synchronous=NORMAL).
        _write_all(self._fd, line)

    def discard(self) -> None:
        """Delete the file (its writes are applied), then let its lock go."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)


def _orphans(directory: Path, pattern: str) -> Iterator[tuple[Path, bytes]]:
    """Yield the spools whose process is gone (their lock is free), with their contents.

    Each is deleted once yielded and read; the caller keeps the contents first.
    """
    for path in sorted(directory.glob(pattern)):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process lives and writes it
            if os.fstat(fd).st_nlink == 0:
                continue  # applied and deleted by its process meanwhile
            with os.fdopen(os.dup(fd), "rb") as file:
                yield path, file.read()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        finally:
            os.close(fd)


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
        self,
        path: Path,
        appliers: Mapping[str, Apply],
        *,
        batches: Mapping[str, ApplyMany] | None = None,
        max_attempts: int = 100,
    ) -> None:
        self.path = path
        self._batches = dict(batches or {})
        self._spool_glob = f"{path.stem}.*.spool"
        #: The spool new deferred writes go to (made on the first), and what waits for the
        #: writer: each write with whom to tell once it is applied.
        self._spool: _Spool | None = None
        self._queue: list[tuple[_Entry, Done | None]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        #: Writes deferred and writes done with, ever: ``flush`` waits for the second to
        #: reach what the first was when it was called.
        self._deferred = 0
        self._settled = 0
        self._progress = asyncio.Condition()
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

    def defer(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        ref: str | None = None,
        done: Done | None = None,
    ) -> None:
        """Queue a write for the writer; it is in this process's spool when this returns.

        Writes of a kind with a batch applier are applied together; others one by
        one, as :meth:`keep` would. ``done`` is called once the write is
        applied or kept in the journal's file. Never raises: a spool that cannot be
        written is logged (the write is still queued, only not safe from a kill).
        """
        entry = _Entry(kind, payload, ref, time.time())
        try:
            if self._spool is None:
                name = f"{self.path.stem}.{os.getpid()}-{uuid.uuid4().hex[:12]}.spool"
                self._spool = _Spool(self.path.with_name(name))
            self._spool.write(entry.line())
        except OSError:
            log.error("journal_spool_failed kind=%s path=%s", kind, self.path, exc_info=True)
        self._queue.append((entry, done))
        self._deferred += 1
        self._wake.set()
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._write_behind(), name="ccgate-journal-writer"
            )

    async def flush(self) -> None:
        """Wait until every write deferred before this call is applied (or kept)."""
        target = self._deferred
        if self._settled >= target:
            return
        async with self._progress:
            await self._progress.wait_for(lambda: self._settled >= target)

    async def aclose(self) -> None:
        """Apply what is deferred, then stop the writer."""
        if self._writer is None:
            return
        await self.flush()
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self._writer = None

    async def _write_behind(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                spool, self._spool = self._spool, None  # what comes meanwhile: a new spool
                try:
                    await self._apply(batch)
                    if spool is not None:
                        spool.discard()  # cancelled before: it stays, for the next start
                finally:
                    for _, done in batch:
                        if done is not None:
                            try:
                                done()
                            except Exception:  # noqa: BLE001 - the write itself is done
                                log.error("journal_done_failed", exc_info=True)
                    async with self._progress:
                        self._settled += len(batch)
                        self._progress.notify_all()

    async def _apply(self, batch: list[tuple[_Entry, Done | None]]) -> None:
        """Apply a batch, kind by kind in one transaction each; else keep its writes."""
        kinds: dict[str, list[_Entry]] = {}
        for entry, _ in batch:
            kinds.setdefault(entry.kind, []).append(entry)
        for kind, entries in kinds.items():
            if not self._busy and kind in self._batches:
                try:
                    await self._batches[kind]([e.payload for e in entries])
                    continue
                except (DatabaseBusy, SharedStateUnavailable):
                    self._busy = True  # keep() puts them in the file without a second wait
                    log.warning(
                        "journal_kept kind=%s size=%d reason=database_busy", kind, len(entries)
                    )
                except Exception:  # noqa: BLE001 - each write goes the way of keep()
                    log.warning(
                        "journal_batch_failed kind=%s size=%d", kind, len(entries), exc_info=True
                    )
            for entry in entries:
                await self.keep(entry.kind, entry.payload, ref=entry.ref)

    def _adopt_orphans(self) -> None:
        """Move the spools of dead processes into the file (the journal's lock is held)."""
        for path, raw in _orphans(self.path.parent, self._spool_glob):
            lines = [line + b"\n" for line in raw.splitlines() if line.strip()]
            if lines:
                _append_to(self.path, lines)
                log.warning("journal_spool_adopted path=%s entries=%d", path.name, len(lines))

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
            with _locked(self._lock_path, wait=False) as granted:
                if not granted:
                    return Replayed(left=self._waiting)
                await asyncio.to_thread(self._adopt_orphans)
                if not self.path.exists():
                    self._waiting, self._busy, self._refs = 0, False, set()
                    return Replayed()
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
