"""Transcripts shared through the database: a conversation resumes on whichever replica.

Two runners with data dirs of their own and one database stand for two replicas.
A conversation whose turns alternate between them stays one Claude Code session
(the model sees each earlier turn once), also after one of them dies; a store
that fails never fails a turn.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncGenerator, AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from ccgate.accounts.manager import Upstream
from ccgate.accounts.meter import PlanMeter
from ccgate.claude import ClaudeRunner, RunnerConfig
from ccgate.claude.accounts import AccountRouter
from ccgate.claude.agent import ClaudeAgents, sandbox_missing
from ccgate.claude.shared import Found, SharedTranscripts
from ccgate.claude.workdirs import WorkerDirs
from ccgate.demo import DemoServer, ScriptedModel
from ccgate.engine.events import AgentEvent, TextDelta, TurnEnd, TurnError, TurnStarted
from ccgate.engine.live import reply_message
from ccgate.engine.runner import Runner
from ccgate.engine.sessions import ConversationSessions
from ccgate.engine.toolbox import ToolResultBox
from ccgate.engine.turn import Message, SessionPlan, TextPart, TurnRequest
from ccgate.loops.agent import AgentSpec, Decision
from ccgate.store.database import Database
from ccgate.store.sessions import SqlSessionStore
from ccgate.store.tables import transcript_parts
from ccgate.store.transcripts import SqlTranscriptStore, digest_of
from tests.gateway_testing import cli_processes

SESSION = "5f0c7d2e-1b7a-4c11-9d39-0d5b1f3a2e10"


class _Flaky:
    """A transcript store kept in memory, which fails while ``down``."""

    def __init__(self) -> None:
        self.rows: dict[str, bytes] = {}
        self.down = False
        self.saves = 0
        self.appended: list[bytes] = []

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("the database is unreachable")

    async def save(self, session_id: str, content: bytes, *, now: float | None = None) -> str:
        self._check()
        self.saves += 1
        self.rows[session_id] = content
        return digest_of(content)

    async def append(
        self, session_id: str, base: str, tail: bytes, digest: str, *, now: float | None = None
    ) -> bool:
        self._check()
        found = self.rows.get(session_id)
        if found is None or digest_of(found) != base:
            return False
        self.rows[session_id] = found + tail
        assert digest_of(self.rows[session_id]) == digest
        self.appended.append(tail)
        return True

    async def load(self, session_id: str) -> bytes | None:
        self._check()
        return self.rows.get(session_id)

    async def digest(self, session_id: str) -> str | None:
        self._check()
        found = self.rows.get(session_id)
        return digest_of(found) if found is not None else None

    async def has(self, session_id: str) -> bool:
        return await self.digest(session_id) is not None

    async def delete(self, session_ids: Collection[str]) -> int:
        self._check()
        return sum(self.rows.pop(s, None) is not None for s in session_ids)


# -- SharedTranscripts on its own ------------------------------------------------------


@pytest.mark.unit
async def test_uploads_skip_unchanged_files_and_retry_after_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _Flaky()
    shared = SharedTranscripts(store)
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"one\n")
    await shared.upload(SESSION, path)
    await shared.upload(SESSION, path)
    assert (store.saves, store.rows[SESSION]) == (1, b"one\n")
    path.write_bytes(b"one\ntwo\n")
    store.down = True
    with caplog.at_level(logging.WARNING, "ccgate.engine"):
        await shared.upload(SESSION, path)  # does not raise
    assert "transcript_upload_failed" in caplog.text
    store.down = False
    await shared.upload(SESSION, path)  # unchanged since, but never stored: sent again
    assert store.rows[SESSION] == b"one\ntwo\n"


@pytest.mark.unit
async def test_a_grown_file_stores_only_what_it_added(tmp_path: Path) -> None:
    store = _Flaky()
    shared = SharedTranscripts(store)
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"one\n")
    await shared.upload(SESSION, path)
    path.write_bytes(b"one\ntwo\n")
    await shared.upload(SESSION, path)
    path.write_bytes(b"one\ntwo\nthree\n")
    await shared.upload(SESSION, path)
    assert (store.saves, store.appended) == (1, [b"two\n", b"three\n"])
    assert store.rows[SESSION] == b"one\ntwo\nthree\n"
    # A file that changed otherwise (a rewound transcript) is stored whole.
    path.write_bytes(b"one\nTWO\nthree\nfour\n")
    await shared.upload(SESSION, path)
    assert store.saves == 2 and store.rows[SESSION] == b"one\nTWO\nthree\nfour\n"
    # Another replica stored a newer version meanwhile: the append is refused, saved whole.
    store.rows[SESSION] = b"elsewhere\n"
    path.write_bytes(b"one\nTWO\nthree\nfour\nfive\n")
    await shared.upload(SESSION, path)
    assert store.saves == 3 and store.rows[SESSION] == b"one\nTWO\nthree\nfour\nfive\n"
    # A fetched version is a base to grow from, too.
    other = tmp_path / "fetched.jsonl"
    assert await shared.ready(SESSION, other) is Found.FETCHED
    other.write_bytes(other.read_bytes() + b"six\n")
    await shared.upload(SESSION, other)
    assert store.appended[-1] == b"six\n" and store.saves == 3


@pytest.mark.unit
async def test_ready_fetches_a_missing_or_older_file_and_keeps_a_newer_one(
    tmp_path: Path,
) -> None:
    store = _Flaky()
    path = tmp_path / "projects" / "cwd" / f"{SESSION}.jsonl"
    other = SharedTranscripts(store)  # another replica
    here = SharedTranscripts(store)
    assert await here.ready(SESSION, path) is Found.ABSENT
    store.rows[SESSION] = b"turn 1\n"
    assert await here.ready(SESSION, path) is Found.FETCHED
    assert path.read_bytes() == b"turn 1\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert await here.ready(SESSION, path) is Found.LOCAL
    # Another replica ran the next turn: this file is older, and is replaced.
    elsewhere = tmp_path / "b.jsonl"
    elsewhere.write_bytes(b"turn 1\nturn 2\n")
    await other.upload(SESSION, elsewhere)
    assert await here.ready(SESSION, path) is Found.FETCHED
    assert path.read_bytes() == b"turn 1\nturn 2\n"
    # This replica's own turn whose upload failed: its file is newer, and is kept.
    path.write_bytes(b"turn 1\nturn 2\nturn 3\n")
    store.down = True
    await here.upload(SESSION, path)
    store.down = False
    assert await here.ready(SESSION, path) is Found.LOCAL
    assert path.read_bytes() == b"turn 1\nturn 2\nturn 3\n"


@pytest.mark.unit
async def test_a_store_that_fails_or_forgot_means_rebuild(tmp_path: Path) -> None:
    store = _Flaky()
    shared = SharedTranscripts(store)
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"kept here\n")
    # The store has no copy: another replica released it, or ran turns this file lacks.
    assert await shared.ready(SESSION, path) is Found.ABSENT
    await shared.upload(SESSION, path)
    store.down = True
    assert await shared.ready(SESSION, path) is Found.ABSENT
    store.down = False
    assert await shared.ready(SESSION, path) is Found.LOCAL
    shared.forget(SESSION)
    assert await shared.ready(SESSION, path) is Found.ABSENT
    await shared.aclose()
    assert SESSION not in store.rows
    await shared.upload(SESSION, path)  # a released session is never stored again
    assert SESSION not in store.rows


@pytest.mark.unit
async def test_without_a_store_only_the_local_file_counts(tmp_path: Path) -> None:
    shared = SharedTranscripts(None)
    path = tmp_path / "t.jsonl"
    assert await shared.ready(SESSION, path) is Found.ABSENT
    path.write_bytes(b"x\n")
    assert await shared.ready(SESSION, path) is Found.LOCAL
    await shared.upload(SESSION, path)
    shared.forget(SESSION)
    assert not shared.enabled


# -- the runner, without a CLI ---------------------------------------------------------


class _NoCli(ClaudeRunner):
    """A ClaudeRunner whose turns write a transcript line instead of running the CLI."""

    async def _run_raw(
        self, turn: TurnRequest, box: ToolResultBox | None
    ) -> AsyncGenerator[AgentEvent, None]:
        assert turn.session is not None
        path = self.transcript(turn.session.cli_session_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(f'{{"user": "{turn.last.text()}"}}\n')
        yield TurnStarted(turn.model, cold_start=False)
        yield TextDelta("fine")
        yield TurnEnd()


def _turn(text: str, *, resume: bool) -> TurnRequest:
    return TurnRequest(
        model="sonnet",
        requested_model="sonnet",
        messages=(Message("user", (TextPart(text),)),),
        session=SessionPlan(SESSION, resume=resume),
    )


@pytest.mark.unit
async def test_a_database_failure_during_the_upload_does_not_fail_the_turn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'ccgate.db'}")  # not migrated: no table
    store = SqlTranscriptStore(database)
    runner = _NoCli(RunnerConfig(data_dir=tmp_path / "data", transcripts=store))
    try:
        with caplog.at_level(logging.WARNING, "ccgate.engine"):
            events = [e async for e in runner.run(_turn("one", resume=False))]
        assert isinstance(events[-1], TurnEnd)
        assert "transcript_upload_failed" in caplog.text
        # The database is back: the next turn stores the whole session.
        await database.migrate()
        assert not await runner.has_session(SESSION)  # never stored: rebuilt, not resumed
        events = [e async for e in runner.run(_turn("two", resume=True))]
        assert isinstance(events[-1], TurnEnd)
        assert await store.load(SESSION) == b'{"user": "one"}\n{"user": "two"}\n'
        assert await runner.has_session(SESSION)
        runner.release(SESSION)
        assert not await runner.has_session(SESSION)
    finally:
        await runner.aclose()
        await database.close()
    assert await _gone(tmp_path / "ccgate.db", SESSION)


@pytest.mark.unit
async def test_a_seeded_session_is_shared_before_its_turn_ends(tmp_path: Path) -> None:
    store = _Flaky()
    runner = _NoCli(RunnerConfig(data_dir=tmp_path / "data", transcripts=store))
    history = (
        Message("user", (TextPart("earlier"),)),
        Message("assistant", (TextPart("answer"),)),
    )
    try:
        runner.seed_session(SESSION, history, "sonnet")
        seeded = runner.transcript(SESSION).read_bytes()
    finally:
        await runner.aclose()  # waits for the upload under way
    assert store.rows[SESSION] == seeded


async def _gone(db_file: Path, session_id: str) -> bool:
    database = Database(f"sqlite:///{db_file}")
    try:
        return not await SqlTranscriptStore(database).has(session_id)
    finally:
        await database.close()


# -- two replicas on one database, through the real CLI --------------------------------


@dataclass
class _Replica:
    runner: Runner
    sessions: ConversationSessions
    database: Database
    data_dir: Path


async def _nobody(_session_id: str) -> None:
    return None


async def _replica(kind: str, data_dir: Path, db_file: Path, demo: DemoServer) -> _Replica:
    database = Database(f"sqlite:///{db_file}")
    await database.migrate()
    config = RunnerConfig(
        data_dir=data_dir,
        upstream_url=demo.url,
        upstream_api_key="demo-upstream-key",
        upstream_retries=0,
        session_keepalive=60,  # each replica keeps its process warm: it must not serve
        transcripts=SqlTranscriptStore(database),
    )
    runner: Runner
    if kind == "runner":
        runner = ClaudeRunner(config)
    else:
        upstream = Upstream(
            "default", "default", "api_key", "demo-upstream-key", None, 0, "settings"
        )

        class Source:
            def upstreams(self) -> list[Upstream]:
                return [upstream]

        router = AccountRouter(config, Source(), PlanMeter())
        router.start()
        runner = router
    sessions = ConversationSessions(SqlSessionStore(database), runner, supersede=_nobody)
    return _Replica(runner, sessions, database, data_dir)


async def _ask(replica: _Replica, history: list[Message], text: str) -> tuple[str, bool]:
    """Run one turn of conversation ``conv`` on ``replica``; return the reply and whether
    the session was continued (not rebuilt)."""
    history.append(Message("user", (TextPart(text),)))
    turn = TurnRequest(model="sonnet", requested_model="sonnet", messages=tuple(history))
    async with replica.sessions.turn("local", "conv", turn) as bound:
        events = [e async for e in replica.runner.run(bound.turn)]
        assert not isinstance(events[-1], TurnError), events[-1]
        reply = reply_message(events)
        await replica.sessions.finished(bound, reply, 0, 0)
    history.append(reply)
    return reply.text(), bound.continued


def _seen(model: ScriptedModel) -> list[tuple[str, str]]:
    """Return the user and assistant texts of the last conversation request."""
    out = []
    for message in model.conversation_requests()[-1].body["messages"]:
        if message["role"] not in ("user", "assistant"):
            continue
        content = message["content"]
        texts = (
            [content]
            if isinstance(content, str)
            else [b.get("text", "") for b in content if b.get("type") == "text"]
        )
        text = "".join(t for t in texts if not t.startswith("<system-reminder>"))
        out.append((message["role"], text))
    return out


@pytest.fixture
async def replicas(
    request: pytest.FixtureRequest, demo: DemoServer, data_dir: Path, tmp_path: Path
) -> AsyncIterator[tuple[_Replica, _Replica]]:
    kind = str(request.param)
    db_file = tmp_path / "shared.db"
    a = await _replica(kind, data_dir / "replica-a", db_file, demo)
    b = await _replica(kind, data_dir / "replica-b", db_file, demo)
    try:
        yield a, b
    finally:
        for replica in (a, b):
            await replica.runner.aclose()
            await replica.database.close()


@pytest.mark.cli
@pytest.mark.parametrize("replicas", ["runner", "router"], indirect=True)
async def test_a_conversation_resumes_on_whichever_replica_takes_its_turn(
    replicas: tuple[_Replica, _Replica], model: ScriptedModel
) -> None:
    a, b = replicas
    history: list[Message] = []
    assert await _ask(a, history, "question 1") == ("You said: question 1", False)
    assert await _ask(b, history, "question 2") == ("You said: question 2", True)
    # Back on the first replica, whose warm process of the session knows only turn 1.
    assert await _ask(a, history, "question 3") == ("You said: question 3", True)
    assert _seen(model) == [
        ("user", "question 1"),
        ("assistant", "You said: question 1"),
        ("user", "question 2"),
        ("assistant", "You said: question 2"),
        ("user", "question 3"),
    ]
    # One Claude Code session throughout: resumed, never rebuilt.
    sessions = {r.headers.get("x-claude-code-session-id") for r in model.conversation_requests()}
    assert len(sessions) == 1

    # The first replica dies (its CLI killed, nothing flushed or closed); the other goes on.
    for pid in cli_processes(a.data_dir):
        os.kill(pid, signal.SIGKILL)
    assert await _ask(b, history, "question 4") == ("You said: question 4", True)
    assert [role for role, _ in _seen(model)] == ["user", "assistant"] * 3 + ["user"]
    assert _seen(model)[-1] == ("user", "question 4")
    sessions = {r.headers.get("x-claude-code-session-id") for r in model.conversation_requests()}
    assert len(sessions) == 1
    # Claude Code appends a turn's lines: the later turns stored only what they added.
    async with b.database.engine.connect() as conn:
        parts = (await conn.execute(select(func.count()).select_from(transcript_parts))).scalar()
    assert parts is not None and parts >= 1


async def _deny(_tool: str, _input: dict[str, Any], _call: str) -> Decision:
    return Decision(allow=False)


async def _loop_turn(
    data_dir: Path, database: Database, demo: DemoServer, text: str, *, kill: bool
) -> str:
    """Start the loop's agent on a replica with ``data_dir``, run one turn; return its text."""
    config = RunnerConfig(
        data_dir=data_dir,
        upstream_url=demo.url,
        upstream_api_key="demo-upstream-key",
        upstream_retries=0,
        transcripts=SqlTranscriptStore(database),
    )
    home = data_dir / "loops" / "loop_1"
    (home / "workspace").mkdir(parents=True, exist_ok=True)
    spec = AgentSpec(home / "workspace", home, SESSION, "sonnet", "default")
    agent = await ClaudeAgents(config, WorkerDirs(data_dir)).start(spec, _deny)
    try:
        events = [e async for e in agent.run(text, "default")]
    finally:
        if kill:  # the replica dies: its process ends without a goodbye
            for pid in cli_processes(data_dir):
                os.kill(pid, signal.SIGKILL)
        await agent.aclose()
    assert isinstance(events[-1], TurnEnd), events[-1]
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.cli
@pytest.mark.skipif(bool(sandbox_missing()), reason="loops need bubblewrap and socat")
async def test_a_loop_taken_over_by_another_replica_resumes_its_session(
    demo: DemoServer, model: ScriptedModel, data_dir: Path, tmp_path: Path
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'shared.db'}")
    await database.migrate()
    try:
        first = await _loop_turn(
            data_dir / "replica-a", database, demo, "the word is apricot", kill=True
        )
        assert first == "You said: the word is apricot"
        second = await _loop_turn(data_dir / "replica-b", database, demo, "which word?", kill=False)
        assert second == "You said: which word?"
    finally:
        await database.close()
    assert _seen(model) == [
        ("user", "the word is apricot"),
        ("assistant", "You said: the word is apricot"),
        ("user", "which word?"),
    ]
