"""Session transcripts shared through the database, so any replica resumes any session.

Claude Code keeps a session as one JSONL file under the replica's data dir
(``claude.transcript``). With a :class:`~ccgate.store.transcripts.TranscriptStore`
in ``RunnerConfig.transcripts``, :class:`SharedTranscripts` keeps a copy of each
file there:

- **Upload.** After every turn that leaves a session as the next turn may
  resume it (a conversation's turn that ended cleanly or parked on the client's
  tools, before the client sees its end; a loop's turn; a transcript ccgate
  wrote itself), :meth:`~SharedTranscripts.upload` stores the file, unless it
  is unchanged since this replica last stored or fetched it. When the file
  only grew since then (Claude Code appends a turn's lines), only what it
  added is stored (``TranscriptStore.append``); else, or when the store says
  no (another replica stored a newer version, or enough parts piled up), the
  whole file.
- **Resume.** :meth:`~SharedTranscripts.ready` is asked before a session is
  resumed. The stored copy is the newest state of the session (the replica
  that ran its last turn stored it): when the local file is missing or differs
  from it, it is written from the store first (``FETCHED``: a process this
  replica kept warm for the session holds an older state and must not serve
  it). A local file that differs only because this replica's own last upload
  failed is newer than the stored copy and is kept (``LOCAL``). A session the
  store holds no copy of is not resumed (``ABSENT``), even when a local file
  exists: another replica may have released it, or run turns this file lacks.
- **Release.** :meth:`~SharedTranscripts.forget` (a failed or cut turn, a
  rebuilt, deleted or expired conversation) deletes the stored copy in the
  background (a cut turn's copy may hold more than the client saw); this
  replica never resumes or uploads that session again.
- **Failures.** The database never fails a turn: an upload that fails is
  logged (warning) and made again after the session's next turn (a session
  the store never got is rebuilt instead, as above); a lookup or download that
  fails means "not resumable here" (``ABSENT``), and the conversation is
  rebuilt from the client's history. Each database call waits at most
  ``limit`` seconds.

Known limit: when a turn's upload failed and the conversation's next turn lands
on another replica before an upload succeeds, that replica resumes the copy of
the turn before (its own check cannot know a newer one exists).

Without a store every method keeps today's local behaviour: ``ready`` tells
whether the local file exists, the others do nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from ccgate.store.transcripts import TranscriptStore, digest_of

__all__ = ["Found", "SharedTranscripts"]

log = logging.getLogger("ccgate.engine")

#: How many sessions' sync states (digests, forgotten ids) a replica remembers.
_REMEMBERED = 100_000

_V = TypeVar("_V")


class Found(enum.Enum):
    """Where a session to resume was found."""

    #: Nowhere (or the store could not be asked): the session is rebuilt.
    ABSENT = "absent"
    #: The local file is current.
    LOCAL = "local"
    #: The store held a newer version; it was written to the local file.
    FETCHED = "fetched"


class _Bounded(OrderedDict[str, _V]):
    """A mapping that forgets its least recently set entries past ``_REMEMBERED``."""

    def put(self, key: str, value: _V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > _REMEMBERED:
            self.popitem(last=False)


class SharedTranscripts:
    """Keep session transcripts in a shared store; see the module docstring."""

    def __init__(self, store: TranscriptStore | None, *, limit: float = 5.0) -> None:
        self._store = store
        self._limit = limit
        #: The version each session last had in the store, as far as this replica knows (it
        #: stored or fetched it): its digest and its size in bytes.
        self._synced: _Bounded[tuple[str, int]] = _Bounded()
        #: Sessions forgotten here: never resumed or uploaded again.
        self._gone: _Bounded[str] = _Bounded()
        #: One upload or fetch at a time per session (waiters in arrival order).
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        """Tell whether transcripts are shared (a store was given)."""
        return self._store is not None

    async def ready(self, session_id: str, path: Path) -> Found:
        """Make ``path`` the newest transcript of the session, if any; say where it was."""
        if self._store is None:
            return Found.LOCAL if path.exists() else Found.ABSENT
        if session_id in self._gone:
            return Found.ABSENT
        async with self._serial(session_id):
            try:
                async with asyncio.timeout(self._limit):
                    stored = await self._store.digest(session_id)
            except Exception as exc:  # noqa: BLE001 - not resumable here: rebuilt instead
                log.warning("transcript_lookup_failed session=%s error=%s", session_id, _what(exc))
                return Found.ABSENT
            if stored is None:
                return Found.ABSENT
            local = _read(path)
            if local is not None:
                mine = digest_of(local)
                if mine == stored:
                    self._synced.put(session_id, (stored, len(local)))
                    return Found.LOCAL
                if self._digest(session_id) == stored:
                    return Found.LOCAL  # this replica's newer copy, whose upload failed
            try:
                async with asyncio.timeout(self._limit):
                    content = await self._store.load(session_id)
            except Exception as exc:  # noqa: BLE001 - not resumable here: rebuilt instead
                log.warning(
                    "transcript_download_failed session=%s error=%s", session_id, _what(exc)
                )
                return Found.ABSENT
            if content is None:  # released meanwhile
                return Found.ABSENT
            try:
                _write(path, content)
            except OSError as exc:
                log.warning(
                    "transcript_download_failed session=%s error=%s", session_id, _what(exc)
                )
                return Found.ABSENT
            self._synced.put(session_id, (digest_of(content), len(content)))
            log.info("transcript_fetched session=%s bytes=%d", session_id, len(content))
            return Found.FETCHED

    async def upload(self, session_id: str, path: Path, content: bytes | None = None) -> None:
        """Store the session's transcript (``content``, else the file at ``path``) unless it
        is unchanged; never raise for the store."""
        if self._store is None or session_id in self._gone:
            return
        async with self._serial(session_id):
            content = _read(path) if content is None else content
            if content is None or session_id in self._gone:
                return
            digest = digest_of(content)
            base, size = self._synced.get(session_id, (None, 0))
            if base == digest:
                return
            tail = _grown_by(content, base, size)
            try:
                async with asyncio.timeout(self._limit):
                    if (
                        base is None
                        or tail is None
                        or not await self._store.append(session_id, base, tail, digest)
                    ):
                        await self._store.save(session_id, content)
            except Exception as exc:  # noqa: BLE001 - the next turn uploads again
                log.warning(
                    "transcript_upload_failed session=%s bytes=%d error=%s",
                    session_id,
                    len(content),
                    _what(exc),
                )
                return
            self._synced.put(session_id, (digest, len(content)))

    def _digest(self, session_id: str) -> str | None:
        synced = self._synced.get(session_id)
        return synced[0] if synced is not None else None

    def upload_soon(self, session_id: str, path: Path) -> None:
        """Upload the file as it is now, in the background (for callers that cannot wait:
        a transcript ccgate just wrote); uploads of a session keep their order."""
        if self._store is None:
            return
        content = _read(path)  # now: the CLI that resumes it may be appending by then
        if content is not None:
            self._spawn(self.upload(session_id, path, content), "ccgate-transcript-upload")

    def forget(self, session_id: str) -> None:
        """Never resume or upload the session here again; delete its stored copy soon."""
        if self._store is None:
            return
        self._gone.put(session_id, "")
        self._synced.pop(session_id, None)
        self._spawn(self._delete(session_id), "ccgate-transcript-delete")

    async def _delete(self, session_id: str) -> None:
        assert self._store is not None
        async with self._serial(session_id):
            try:
                async with asyncio.timeout(self._limit):
                    await self._store.delete([session_id])
            except Exception as exc:  # noqa: BLE001 - its conversation's expiry deletes it
                log.warning("transcript_delete_failed session=%s error=%s", session_id, _what(exc))

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        try:
            task = asyncio.get_running_loop().create_task(work, name=name)
        except RuntimeError:  # no loop runs: nothing can be waited for
            work.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Wait (bounded) for the uploads and deletions still under way."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self._limit * 2)

    @contextlib.asynccontextmanager
    async def _serial(self, session_id: str) -> AsyncIterator[None]:
        held = self._locks.get(session_id)
        if held is None:
            held = self._locks[session_id] = (asyncio.Lock(), [0])
        lock, users = held
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[session_id]


def _grown_by(content: bytes, base: str | None, size: int) -> bytes | None:
    """Return what ``content`` added to version ``base`` (``size`` bytes), if it only grew."""
    if base is None or not 0 < size < len(content) or digest_of(content[:size]) != base:
        return None
    return content[size:]


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _write(path: Path, content: bytes) -> None:
    """Write a transcript as ``claude.transcript`` does: private, replaced at once."""
    for directory in (path.parent.parent, path.parent):  # projects/ and the cwd's folder
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".fetch")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    tmp.replace(path)


def _what(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
