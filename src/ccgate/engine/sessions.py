"""Map conversations to Claude Code sessions: keys, continuation detection, rebuilt history.

A conversation's identity is a chain of fingerprints: ``fp(0)`` hashes the
system prompt, ``fp(k)`` hashes ``fp(k-1)`` with message ``k``. After every
turn the store remembers the fingerprint of the whole conversation including
the reply, so a later request whose earlier messages hash to it continues that
session (the CLI resumes it and receives only the new message). Anything else
(first request, edited or truncated history, a retried request) gets a Claude
Code session built from the history the client sent, so the model always sees
exactly the client's conversation as real turns.

A request that carries tool results is continued by its live turn when that
turn still waits (``engine.live``); one that reaches this module found no such
turn, and gets a session rebuilt from its history whose last tool call the CLI
re-runs with the client's result (``claude.transcript``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from ccgate.engine.runner import SessionStates
from ccgate.engine.turn import (
    ImagePart,
    Message,
    Part,
    SessionPlan,
    TextPart,
    ToolCallPart,
    TurnRequest,
)
from ccgate.errors import InvalidRequest
from ccgate.store.journal import Journal
from ccgate.store.sessions import SessionExists, SessionRecord, SessionStore

__all__ = [
    "KEY_CHARACTERS",
    "KEY_MAX",
    "ConversationSessions",
    "SessionTurn",
    "check_key",
    "fingerprints",
]

log = logging.getLogger("ccgate.sessions")

#: A session key's most characters, and the characters it may use: URL-safe ASCII, so a
#: key travels in a header (``X-Session-Id`` is echoed on every answer) and in a path
#: (``/v1/sessions/{key}``). UUIDs, ULIDs, opencode's ``ses_...`` ids and slugs fit.
KEY_MAX = 256
KEY_CHARACTERS = "A-Z a-z 0-9 . _ ~ : @ + = -"
_KEY = re.compile(rf"[A-Za-z0-9._~:@+=-]{{1,{KEY_MAX}}}")


def check_key(key: str, param: str) -> str:
    """Return ``key`` if it is a valid session key, else raise InvalidRequest naming ``param``."""
    if _KEY.fullmatch(key) is None:
        shown = ascii(key[:40]) + ("..." if len(key) > 40 else "")
        raise InvalidRequest(
            f"{param}: a session key must be 1 to {KEY_MAX} characters from "
            f"{KEY_CHARACTERS} (UUIDs, ULIDs, ses_... ids and slugs fit); got {shown} "
            f"({len(key)} characters)",
            param=param,
            code="invalid_session_key",
        )
    return key


def _canonical_part(part: Part) -> object:
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, ImagePart):
        return {"image": hashlib.sha256((part.data or part.url or "").encode()).hexdigest()}
    if isinstance(part, ToolCallPart):
        return {"call": part.id, "name": part.name, "input": part.input}
    content = [_canonical_part(p) for p in part.content]
    return {"result": part.tool_use_id, "content": content, "error": part.is_error}


def _canonical(message: Message) -> str:
    # Empty texts are left out: a client may send content "" beside its tool calls.
    parts = [_canonical_part(p) for p in message.parts if p != TextPart("")]
    text_only = all(isinstance(p, str) for p in parts)
    body: object = "".join(str(p) for p in parts).strip() if text_only else parts
    return json.dumps(
        [message.role, body], separators=(",", ":"), ensure_ascii=False, sort_keys=True
    )


def fingerprints(system: str | None, messages: tuple[Message, ...]) -> list[str]:
    """Return ``fp(1) .. fp(n)`` of ``messages`` under ``system``."""
    current = hashlib.sha256(("system:" + (system or "").strip()).encode()).hexdigest()
    chain: list[str] = []
    for message in messages:
        current = hashlib.sha256((current + _canonical(message)).encode()).hexdigest()
        chain.append(current)
    return chain


@dataclass
class SessionTurn:
    """A turn bound to a session: the turn to run and what to record when it ends."""

    turn: TurnRequest
    record: SessionRecord
    continued: bool


class ConversationSessions:
    """Resolve each request's session, and record each finished turn.

    With a ``journal``, a finished turn is recorded through it (kind
    ``session_turn``, the arguments of ``SessionStore.record_turn``): a locked
    database delays the record instead of failing the answer.
    """

    def __init__(
        self,
        store: SessionStore,
        states: SessionStates,
        *,
        supersede: Callable[[str], Awaitable[None]],
        continuation: bool = True,
        journal: Journal | None = None,
    ) -> None:
        """``states`` keeps each session's state (the runner); ``supersede(session id)``
        ends that session's turn waiting for tool results, when a request for the
        session arrives that is not its continuation."""
        self._store = store
        self._states = states
        self._supersede = supersede
        self._journal = journal
        self._continuation = continuation
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def turn(
        self, namespace: str, key: str | None, turn: TurnRequest
    ) -> AsyncIterator[SessionTurn]:
        """Bind ``turn`` to its session for the duration of the block (one turn at a time)."""
        if key is not None:
            check_key(key, "session_id")
        chain = fingerprints(turn.system, turn.messages)
        history_fp = chain[-2] if len(chain) > 1 else None
        record = await self._find(namespace, key, history_fp, len(turn.messages) - 1)
        if record is None and key is None:
            # A brand-new conversation: nobody else can name it yet, so no lock.
            yield await self._bind(namespace, key, record, history_fp, turn)
            return
        if record is not None:
            await self._supersede(record.id)
        lock = self._locks.setdefault(
            record.id if record else f"new:{namespace}:{key}", asyncio.Lock()
        )
        async with lock:
            if record is None:
                # Another request may have created this key while we waited.
                record = await self._store.get(namespace, key or "")
            yield await self._bind(namespace, key, record, history_fp, turn)

    async def _find(
        self, namespace: str, key: str | None, history_fp: str | None, count: int
    ) -> SessionRecord | None:
        if key is not None:
            return await self._store.get(namespace, key)
        if history_fp is None:
            return None
        found = await self._store.match(namespace, [history_fp])
        if found is None or found[1] != count:
            return None
        return found[0]

    async def _continues(self, record: SessionRecord, history_fp: str | None) -> bool:
        # Only the session's newest state continues: a retried request (same last user
        # message again) or an edit matches an older state and gets a rebuilt session.
        if not self._continuation or history_fp is None:
            return False
        if await self._store.head(record.id) != history_fp:
            return False
        return await self._states.has_session(record.cli_session_id)

    async def _bind(
        self,
        namespace: str,
        key: str | None,
        record: SessionRecord | None,
        history_fp: str | None,
        turn: TurnRequest,
    ) -> SessionTurn:
        results = turn.last if turn.last.tool_results else None
        if results is None and record is not None and await self._continues(record, history_fp):
            plan = SessionPlan(cli_session_id=record.cli_session_id, resume=True)
            return SessionTurn(replace(turn, session=plan), record, continued=True)
        # A conversation that starts here may take a process started ahead for it; one
        # built from history needs a process that reads the transcript at start.
        fresh = not turn.history and results is None
        cli_session_id = self._states.new_session(turn) if fresh else str(uuid.uuid4())
        if turn.history:
            self._states.seed_session(cli_session_id, turn.history, turn.model, results=results)
        plan = SessionPlan(
            cli_session_id=cli_session_id,
            resume=bool(turn.history),
            deferred_call=results.tool_results[-1].tool_use_id if results else None,
        )
        if record is None:
            record = await self._create(namespace, key, turn.model, cli_session_id)
        else:
            self._states.release(record.cli_session_id)
            await self._store.repoint(record.id, cli_session_id, turn.model)
            record = replace(record, cli_session_id=cli_session_id, model=turn.model)
        log.info(
            "session_bound session=%s continued=false history=%d", record.key, len(turn.history)
        )
        return SessionTurn(replace(turn, session=plan), record, continued=False)

    async def _create(
        self, namespace: str, key: str | None, model: str, cli_session_id: str
    ) -> SessionRecord:
        for _ in range(3):
            try:
                return await self._store.create(
                    namespace, key or "ccs_" + secrets.token_hex(12), model, cli_session_id
                )
            except SessionExists:
                if key is not None:
                    existing = await self._store.get(namespace, key)
                    if existing is not None:
                        return existing
        raise RuntimeError("could not allocate a session key")

    async def finished(
        self, bound: SessionTurn, reply: Message, input_tokens: int, output_tokens: int
    ) -> None:
        """Remember the conversation including ``reply`` so its next request continues.

        ``reply`` may end with tool calls (the turn waits for their results): a
        request that carries them then finds this session even when the waiting
        turn is gone.
        """
        turn = bound.turn
        full = (*turn.messages, reply)
        chain = fingerprints(turn.system, full)
        record: dict[str, Any] = {
            "session_id": bound.record.id,
            "fingerprint": chain[-1],
            "message_count": len(full),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "now": time.time(),
        }
        if self._journal is None:
            await self._store.record_turn(**record)
        else:
            await self._journal.keep("session_turn", record)

    def abandon(self, bound: SessionTurn) -> None:
        """Forget the CLI state of a turn that failed or was cut short.

        Its transcript may hold a user message without its answer; the next
        request rebuilds the session from the client's own history instead.
        """
        if bound.turn.session is not None:
            self._states.release(bound.turn.session.cli_session_id)

    async def expire(self, ttl: float) -> int:
        """Delete sessions idle longer than ``ttl`` seconds and their transcripts."""
        gone = await self._store.expire(time.time() - ttl)
        for record in gone:
            self._states.release(record.cli_session_id)
            self._locks.pop(record.id, None)
        return len(gone)

    async def list_sessions(self, namespace: str) -> list[SessionRecord]:
        """Return the namespace's sessions, most recently used first."""
        return await self._store.list_sessions(namespace)

    async def get(self, namespace: str, key: str) -> SessionRecord | None:
        """Return one session of the namespace."""
        return await self._store.get(namespace, key)

    async def delete(self, namespace: str, key: str | None) -> list[SessionRecord]:
        """Delete one session (or all of the namespace's when ``key`` is None)."""
        if key is None:
            gone = await self._store.delete_all(namespace)
        else:
            one = await self._store.delete(namespace, key)
            gone = [one] if one else []
        for record in gone:
            self._states.release(record.cli_session_id)
        return gone
