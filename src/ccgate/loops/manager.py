"""Loops: long-lived agents with a workspace each, owned by a caller.

The manager creates loops (a record and a workspace directory), checks who
owns them, keeps one :class:`~ccgate.loops.runtime.LoopRuntime` per
loop in use, and starts each loop's agent confined to its workspace:

- ``<loops_dir>/<loop id>/workspace`` is the agent's working directory;
  ``<loops_dir>/<loop id>/tmp`` its temporary files;
- its commands may not read ccgate's data dir, the other loops, or the
  operator's Claude Code login (the agent's own directory stays readable).

A message may carry an idempotency key (per caller, 24 hours): its record
(the body's hash, the turn, the turn's events once it is over) is kept in the
database, so a retry replays the turn — following it live while it runs —
instead of sending the message again, even after a restart; the same key with
another body is a 409.

With a ``journal``, what a finished turn records (the loop's turn count, the
events of a message with an idempotency key) goes through it (kinds
``loop_turn`` and ``loop_finish``, the arguments of ``LoopStore.record_turn``
and ``LoopStore.finish``), so a locked database delays it instead of losing it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ccgate.engine.gate import Gate
from ccgate.engine.runner import IdleProcess
from ccgate.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from ccgate.loops.agent import Agent, Agents, AgentSpec, Chooser
from ccgate.loops.events import Failed, LoopEvent, dump, load
from ccgate.loops.runtime import LoopRuntime, TurnLog
from ccgate.store.journal import Journal
from ccgate.store.loops import LoopRecord, LoopStore, RequestRecord

__all__ = ["PERMISSION_MODES", "LoopManager"]

log = logging.getLogger("ccgate.loops")

#: How an agent asks before it acts: ``default`` asks for commands and edits,
#: ``acceptEdits`` for commands only, ``plan`` lets it read and plan only.
PERMISSION_MODES = ("default", "acceptEdits", "plan")

#: How long a message's idempotency record is kept.
IDEMPOTENCY_TTL = 24 * 3600.0


#: Called before a new turn is queued (to admit it); returns what to call when it ends.
Admit = Callable[[], Awaitable[Callable[[TurnLog], Awaitable[None]]]]


class LoopManager:
    """Create, find, run and stop loops."""

    def __init__(
        self,
        store: LoopStore,
        *,
        agents: Agents,
        loops_dir: Path,
        gate: Gate,
        cli_model: Callable[[str], str],
        idle_timeout: float,
        choice_timeout: float,
        journal: Journal | None = None,
        on_event: Callable[[LoopRecord, LoopEvent], None] | None = None,
    ) -> None:
        self._store = store
        self._on_event = on_event
        self._journal = journal
        self._cli_model = cli_model
        self._agents = agents
        self._loops_dir = loops_dir
        self._gate = gate
        self._idle_timeout = idle_timeout
        self._choice_timeout = choice_timeout
        self._runtimes: dict[str, LoopRuntime] = {}
        self._live_keys: dict[tuple[str, str], TurnLog] = {}
        self._key_locks: dict[tuple[str, str], asyncio.Lock] = {}

    # -- records ------------------------------------------------------------------------

    def workspace(self, loop_id: str) -> Path:
        """Return a loop's working directory."""
        return self._loops_dir / loop_id / "workspace"

    def _make_workspace(self, loop_id: str) -> Path:
        """Create a loop's directories, each readable by ccgate's user only, and return the
        workspace (``mkdir(parents=True)`` would leave the parents at the umask's 0755)."""
        workspace = self.workspace(loop_id)
        for directory in (self._loops_dir, workspace.parent, workspace):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # An older ccgate made them 0755; tighten what is already there.
            directory.chmod(0o700)
        return workspace

    async def create(
        self,
        namespace: str,
        *,
        title: str,
        metadata: dict[str, Any],
        permission_mode: str,
        model: str,
    ) -> LoopRecord:
        """Make a loop and its workspace."""
        record = await self._store.create(
            namespace,
            title=title,
            metadata=metadata,
            permission_mode=permission_mode,
            model=model,
            session_id=str(uuid.uuid4()),
        )
        self._make_workspace(record.id)
        log.info("loop_created loop=%s", record.id)
        return record

    async def get(self, loop_id: str) -> LoopRecord:
        """Return any caller's loop (404 when there is none): for the operator's console."""
        record = await self._store.get(loop_id)
        if record is None:
            raise NotFound(f"no loop '{loop_id[:80]}'", code="loop_not_found")
        return record

    async def owned(self, namespace: str, loop_id: str) -> LoopRecord:
        """Return the caller's loop: 404 when there is none, 403 when it is another's."""
        record = await self._store.get(loop_id)
        if record is None:
            raise NotFound(f"no loop '{loop_id[:80]}'", code="loop_not_found")
        if record.namespace != namespace:
            raise PermissionDenied("this loop belongs to another caller", code="not_loop_owner")
        return record

    async def list_loops(
        self,
        namespace: str,
        *,
        limit: int,
        after: str | None,
        before: str | None,
        archived: bool,
    ) -> tuple[list[LoopRecord], bool]:
        """Return a page of the caller's loops, newest first."""
        return await self._store.list_loops(
            namespace, limit=limit, after=after, before=before, archived=archived
        )

    async def archive(self, record: LoopRecord) -> None:
        """Archive a loop: its running turn is stopped and its process ended."""
        await self._store.archive(record.id)
        runtime = self._runtimes.pop(record.id, None)
        if runtime is not None:
            await runtime.close("the loop was archived")

    # -- runtimes -----------------------------------------------------------------------

    def runtime(self, record: LoopRecord) -> LoopRuntime:
        """Return the loop's runtime, made on first use."""
        runtime = self._runtimes.get(record.id)
        if runtime is None:
            runtime = LoopRuntime(
                record,
                self._start_agent,
                idle_timeout=self._idle_timeout,
                choice_timeout=self._choice_timeout,
                gate=self._gate,
                on_event=self._on_event,
            )
            self._runtimes[record.id] = runtime
        return runtime

    def running(self, loop_id: str) -> LoopRuntime | None:
        """Return the loop's runtime if it has one."""
        return self._runtimes.get(loop_id)

    def live_processes(self) -> int:
        """Return how many loops hold a Claude Code process."""
        return sum(1 for r in self._runtimes.values() if r.live_process)

    def idle_processes(self) -> list[IdleProcess]:
        """Return the loops' processes that wait for a message (memory pressure may end them)."""
        return [
            IdleProcess(r.idle_since, r.idle_pid, r.release_idle)
            for r in self._runtimes.values()
            if r.idle_pid is not None and r.idle_since is not None
        ]

    async def _start_agent(self, record: LoopRecord, chooser: Chooser) -> Agent:
        workspace = self._make_workspace(record.id)
        spec = AgentSpec(
            workspace=workspace,
            private_dir=workspace.parent,
            session_id=record.session_id,
            model=self._cli_model(record.model),
            permission_mode=record.permission_mode,
            deny_read=(self._loops_dir,),  # the other loops
        )
        return await self._agents.start(spec, chooser)

    # -- messages -----------------------------------------------------------------------

    async def send(
        self,
        record: LoopRecord,
        content: str,
        permission_mode: str,
        key: str | None,
        admit: Admit,
    ) -> TurnLog:
        """Queue a message (or, for a key seen before, return its turn to replay)."""
        if record.archived_at is not None:
            raise InvalidRequest(
                "this loop is archived and takes no messages", code="loop_archived"
            )
        if key is None:
            return await self._queue(record, content, permission_mode, admit, None)
        slot = (record.namespace, key)
        lock = self._key_locks.setdefault(slot, asyncio.Lock())
        async with lock:
            digest = _digest(record.id, content, permission_mode)
            live = self._live_keys.get(slot)
            if live is not None:
                if live.digest != digest:
                    raise _reused()
                return live
            turn_id = "turn_" + uuid.uuid4().hex[:24]
            stored = await self._store.remember(
                RequestRecord(
                    record.namespace, key, record.id, digest, turn_id, [], False, time.time()
                )
            )
            if stored.turn_id != turn_id:
                if stored.request_hash != digest:
                    raise _reused()
                return _replay(stored)
            turn = await self._queue(record, content, permission_mode, admit, turn_id)
            turn.digest = digest
            self._live_keys[slot] = turn

            async def persist(done: TurnLog) -> None:
                # A retry finds the live turn until its events are in the store.
                events = [dump(e) for e in done.events]
                stored = await self._later(
                    "loop_finish", {"namespace": record.namespace, "key": key, "events": events}
                )
                if stored:
                    self._live_keys.pop(slot, None)

            turn.on_end.append(persist)
            return turn

    async def _queue(
        self,
        record: LoopRecord,
        content: str,
        permission_mode: str,
        admit: Admit,
        turn_id: str | None,
    ) -> TurnLog:
        on_end = await admit()
        runtime = self.runtime(record)
        turn = runtime.submit(content, permission_mode, turn_id=turn_id)
        turn.on_final.insert(0, on_end)

        async def counted(done: TurnLog) -> None:
            await self._later("loop_turn", {"loop_id": record.id, "now": time.time()})

        turn.on_end.append(counted)
        return turn

    async def _later(self, kind: str, arguments: dict[str, Any]) -> bool:
        """Record what a finished turn leaves; say whether it is in the store already."""
        if self._journal is not None:
            return await self._journal.keep(kind, arguments)
        if kind == "loop_finish":
            await self._store.finish(**arguments)
        else:
            await self._store.record_turn(**arguments)
        return True

    async def expire(self) -> int:
        """Forget idempotency records older than a day."""
        self._key_locks = {k: v for k, v in self._key_locks.items() if v.locked()}
        return await self._store.expire(time.time() - IDEMPOTENCY_TTL)

    async def aclose(self) -> None:
        """Stop every loop's turn and process."""
        runtimes, self._runtimes = list(self._runtimes.values()), {}
        await asyncio.gather(
            *(runtime.close("ccgate is shutting down") for runtime in runtimes),
            return_exceptions=True,
        )


def _digest(loop_id: str, content: str, permission_mode: str) -> str:
    body = json.dumps([loop_id, content, permission_mode], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def _reused() -> Conflict:
    return Conflict(
        "this Idempotency-Key was used with another request; use a new key for a new message",
        code="idempotency_key_reused",
    )


def _replay(stored: RequestRecord) -> TurnLog:
    """Return a finished turn made of a stored record's events."""
    turn = TurnLog(stored.turn_id, "", "default")
    for data in stored.events:
        turn.add(load(data))
    if not turn.done:
        turn.add(
            Failed(
                "turn_lost",
                "this message's turn was cut short when ccgate restarted; send it again with a "
                "new Idempotency-Key",
            )
        )
    return turn
