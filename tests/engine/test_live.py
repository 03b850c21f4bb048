"""The turn manager: turns that wait for tool results are parked, continued, or dropped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import pytest

from ccgate.engine.events import (
    AgentEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    TurnEnd,
    TurnStarted,
    Usage,
)
from ccgate.engine.gate import Gate
from ccgate.engine.live import LiveTurn, ParkedTurns, TurnManager, ends_segment
from ccgate.engine.sessions import ConversationSessions
from ccgate.engine.toolbox import ToolResultBox
from ccgate.engine.turn import (
    Message,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    TurnRequest,
)
from ccgate.store.database import Database
from ccgate.store.sessions import SqlSessionStore
from ccgate.testing import ScriptedRunner

pytestmark = pytest.mark.unit

SPEC = ToolSpec("get_weather", "", {"type": "object"})


class ToolRunner(ScriptedRunner):
    """A runner whose model calls the tools named in ``call a b`` and then reports the results.

    A rebuilt turn (``session.deferred_call``) re-runs its deferred call: it reports
    the results already in its tool box, as the CLI does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ended = 0  # runs whose iterator ended (early or not)

    def run(
        self, turn: TurnRequest, box: ToolResultBox | None = None
    ) -> AsyncGenerator[AgentEvent, None]:
        super().run(turn, box)
        return self._tools(turn, box)

    async def _tools(
        self, turn: TurnRequest, box: ToolResultBox | None
    ) -> AsyncGenerator[AgentEvent, None]:
        try:
            yield TurnStarted("sonnet", cold_start=True)
            if turn.session is not None and turn.session.deferred_call is not None:
                assert box is not None
                ids = [r.tool_use_id for r in turn.last.tool_results]
            else:
                words = turn.last.text().split()
                ids = words[1:] if words[:1] == ["call"] else []
                if not ids:
                    yield TextDelta("You said: " + turn.last.text())
                    yield TurnEnd()
                    return
                for call in ids:
                    yield ToolCallStart(call, "get_weather")
                    yield ToolCallDelta(call, "{}")
                    yield ToolCallEnd(call)
                yield Usage(input_tokens=5, output_tokens=2)
                yield TurnEnd("tool_use", waiting_for=tuple(ids))
            assert box is not None
            got = [await box.wait(call) for call in ids]
            yield TextDelta("; ".join(f"{r.tool_use_id}={r.content[0].text}" for r in got))  # type: ignore[union-attr]
            yield TurnEnd()
        finally:
            self.ended += 1


class Rig:
    """A turn manager over a real session store, a gate and the tool runner."""

    def __init__(self, store: SqlSessionStore, slots: int, timeout: float) -> None:
        self.runner = ToolRunner()
        self.parked = ParkedTurns(tool_timeout=timeout)
        self.gate = Gate(slots, 4, make_room=self.parked.make_room)
        sessions = ConversationSessions(store, self.runner, supersede=self.parked.supersede)
        self.manager = TurnManager(self.runner, self.gate, sessions, self.parked)

    async def segment(
        self, turn: TurnRequest, namespace: str = "ns", key: str | None = None
    ) -> tuple[LiveTurn, list[AgentEvent]]:
        live = await self.manager.open(namespace, key, turn)
        events: list[AgentEvent] = []
        while not (events and ends_segment(events[-1])):
            events.append(await live.next_event())
        await self.manager.end_segment(live, events)
        return live, [e for e in events if not isinstance(e, TurnStarted)]


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[SqlSessionStore]:
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await database.migrate()
    yield SqlSessionStore(database)
    await database.close()


@pytest.fixture
async def rig(sessions: SqlSessionStore) -> AsyncIterator[Rig]:
    made = Rig(sessions, slots=2, timeout=60)
    yield made
    await made.parked.aclose()
    assert made.gate.active == 0


def _user(text: str) -> Message:
    return Message("user", (TextPart(text),))


def _turn(*messages: Message) -> TurnRequest:
    return TurnRequest("sonnet", "sonnet", messages, tools=(SPEC,))


QUESTION = _user("call a b")
CALLS = Message(
    "assistant", (ToolCallPart("a", "get_weather", {}), ToolCallPart("b", "get_weather", {}))
)
RESULTS = Message(
    "user",
    (ToolResultPart("b", (TextPart("rain"),)), ToolResultPart("a", (TextPart("sun"),))),
)


async def test_a_turn_waits_and_its_results_continue_it(rig: Rig) -> None:
    first, events = await rig.segment(_turn(QUESTION))
    assert events[-1] == TurnEnd("tool_use", waiting_for=("a", "b"))
    assert rig.manager.parked == 1 and rig.gate.active == 1  # the process keeps its slot
    second, events = await rig.segment(_turn(QUESTION, CALLS, RESULTS))
    assert second is first
    assert events == [TextDelta("a=sun; b=rain"), TurnEnd()]
    assert len(rig.runner.turns) == 1 and rig.runner.ended == 1
    assert rig.manager.parked == 0 and rig.gate.active == 0
    # The finished conversation is recorded: its next message continues the session.
    answer = Message("assistant", (TextPart("a=sun; b=rain"),))
    third, events = await rig.segment(_turn(QUESTION, CALLS, RESULTS, answer, _user("thanks")))
    assert third.session_key == first.session_key
    assert rig.runner.turns[-1].session is not None and rig.runner.turns[-1].session.resume


async def test_results_after_the_turn_is_gone_rebuild_it(sessions: SqlSessionStore) -> None:
    rig = Rig(sessions, slots=2, timeout=0.05)
    first, _ = await rig.segment(_turn(QUESTION))
    await asyncio.sleep(0.3)
    assert rig.manager.parked == 0 and rig.gate.active == 0 and rig.runner.ended == 1
    second, events = await rig.segment(_turn(QUESTION, CALLS, RESULTS))
    assert second is not first and second.session_key == first.session_key
    rebuilt = rig.runner.turns[-1]
    assert rebuilt.session is not None and rebuilt.session.deferred_call == "a"
    assert events == [TextDelta("b=rain; a=sun"), TurnEnd()]
    await rig.parked.aclose()


async def test_another_namespace_never_continues_a_turn(rig: Rig) -> None:
    first, _ = await rig.segment(_turn(QUESTION), namespace="alice")
    second, events = await rig.segment(_turn(QUESTION, CALLS, RESULTS), namespace="mallory")
    assert second is not first and second.session_key != first.session_key
    assert rig.manager.parked == 1  # alice's turn still waits for alice
    assert len(rig.runner.turns) == 2


async def test_another_conversation_drops_the_waiting_turn(rig: Rig) -> None:
    await rig.segment(_turn(QUESTION))
    edited = _turn(_user("call a b, edited"), CALLS, RESULTS)
    second, events = await rig.segment(edited)
    assert events[-1] == TurnEnd()
    assert rig.manager.parked == 0
    assert len(rig.runner.turns) == 2


async def test_a_session_key_must_match(rig: Rig) -> None:
    first, _ = await rig.segment(_turn(QUESTION), key="k1")
    await rig.segment(_turn(QUESTION, CALLS, RESULTS), key="k2")
    assert len(rig.runner.turns) == 2
    assert first.session_key == "k1"


async def test_a_new_request_of_the_session_supersedes_its_waiting_turn(rig: Rig) -> None:
    await rig.segment(_turn(QUESTION), key="k")
    assert rig.manager.parked == 1
    # Same session, but the client gave up on the calls and asks something else.
    live, events = await asyncio.wait_for(rig.segment(_turn(_user("hello")), key="k"), 5)
    assert events[0] == TextDelta("You said: hello")
    assert rig.manager.parked == 0 and rig.runner.ended == 2


async def test_a_waiting_turn_yields_its_slot(sessions: SqlSessionStore) -> None:
    rig = Rig(sessions, slots=1, timeout=60)
    await rig.segment(_turn(QUESTION))
    assert rig.gate.active == 1
    live, events = await asyncio.wait_for(rig.segment(_turn(_user("other"))), 5)
    assert events[0] == TextDelta("You said: other")
    assert rig.manager.parked == 0 and rig.runner.ended == 2
    await rig.parked.aclose()


async def test_shutdown_ends_waiting_turns(rig: Rig) -> None:
    await rig.segment(_turn(QUESTION))
    await rig.segment(_turn(_user("call c")))
    assert rig.manager.parked == 2
    await rig.parked.aclose()
    assert rig.manager.parked == 0 and rig.runner.ended == 2 and rig.gate.active == 0
