"""The loop runtime with a scripted agent (``ccgate.testing.ScriptedAgent``): queue, choices,
interrupt, idle release, watchers, wire."""

from __future__ import annotations

import asyncio
import contextlib
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ccgate.engine.events import (
    TextDelta,
    ThinkingDelta,
    ToolResult,
    TurnEnd,
    Usage,
)
from ccgate.engine.gate import Gate
from ccgate.errors import InvalidRequest, NotFound, RequestTooLarge
from ccgate.loops.agent import Agents, AgentSpec, Decision
from ccgate.loops.events import (
    ChoiceRequested,
    ChoiceResolved,
    Done,
    Failed,
    Interrupted,
    LoopEvent,
    Queued,
    Snapshot,
    Started,
    ToolCalled,
    dump,
    load,
)
from ccgate.loops.hub import Hub
from ccgate.loops.manager import PERMISSION_MODES
from ccgate.loops.runtime import LoopRuntime, TurnLog, summarize
from ccgate.protocol import loops as wire
from ccgate.store.loops import LoopRecord
from ccgate.testing import ScriptedAgent, ScriptedAgents

pytestmark = pytest.mark.unit

RECORD = LoopRecord("loop_x", "ns", "t", {}, "default", "sonnet", "sid", 1.0)


class Rig:
    def __init__(
        self, *, idle: float = 60, choice_timeout: float = 60, gate: Gate | None = None
    ) -> None:
        self.agents: list[ScriptedAgent] = []
        self.gate = gate or Gate(4, 0)

        async def start(record: LoopRecord, chooser: Callable[..., Any]) -> Any:
            agent = ScriptedAgent(chooser)
            self.agents.append(agent)
            return agent

        self.runtime = LoopRuntime(
            RECORD, start, idle_timeout=idle, choice_timeout=choice_timeout, gate=self.gate
        )


async def _until_done(turn: TurnLog) -> list[LoopEvent]:
    while not turn.done:
        await turn.wait(len(turn.events), 5)
    return turn.events


async def _until(turn: TurnLog, kind: type[Any]) -> Any:
    for _ in range(200):
        found = [e for e in turn.events if isinstance(e, kind)]
        if found:
            return found[-1]
        await turn.wait(len(turn.events), 0.05)
    raise AssertionError(f"no {kind.__name__} in {turn.events}")


async def test_messages_queue_and_run_in_order_on_one_process() -> None:
    rig = Rig()
    turns = [rig.runtime.submit(f"m{i}", "default") for i in range(3)]
    assert [type(t.events[0]) for t in turns[1:]] == [Queued, Queued]
    assert [t.events[0].position for t in turns[1:]] == [1, 2]  # type: ignore[union-attr]
    for turn in turns:
        await _until_done(turn)
    assert rig.agents[0].turns == ["m0", "m1", "m2"] and len(rig.agents) == 1
    starts = [next(e for e in t.events if isinstance(e, Started)) for t in turns]
    assert [s.cold_start for s in starts] == [True, False, False]
    done = turns[0].events[-1]
    assert isinstance(done, Done) and done.usage == Usage(input_tokens=3, output_tokens=2)
    assert TextDelta("echo m1") in turns[1].events
    await rig.runtime.close("test")


async def test_a_permission_waits_for_its_choice() -> None:
    rig = Rig()
    turn = rig.runtime.submit("tool rm -rf build", "default")
    asked = await _until(turn, ChoiceRequested)
    assert asked.kind == "permission"
    assert asked.payload["summary"] == "rm -rf build" and asked.payload["tool"] == "Bash"
    assert rig.runtime.pending_choice_id == asked.choice_id
    with pytest.raises(InvalidRequest) as bad:
        rig.runtime.resolve(asked.choice_id, {"answers": {"x": "y"}})
    assert bad.value.code == "invalid_choice_payload"
    rig.runtime.resolve(asked.choice_id, {"allow": False, "message": "not today"})
    events = await _until_done(turn)
    assert ChoiceResolved(asked.choice_id, "api") in events
    assert ToolResult("toolu_1", ok=False) in events and TextDelta("Bash: not today") in events
    with pytest.raises(NotFound) as gone:
        rig.runtime.resolve(asked.choice_id, {"allow": True})
    assert gone.value.code == "choice_not_found"
    await rig.runtime.close("test")


async def test_plan_mode_changes_nothing_and_asks_nobody() -> None:
    rig = Rig()
    turn = rig.runtime.submit("tool rm -rf build", "plan")
    events = await _until_done(turn)
    assert not any(isinstance(e, ChoiceRequested) for e in events)
    assert ToolResult("toolu_1", ok=False) in events
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "plan mode" in text
    question = rig.runtime.submit("ask Color?", "plan")  # asking is planning
    asked = await _until(question, ChoiceRequested)
    rig.runtime.resolve(asked.choice_id, {"answers": {"Color?": "Red"}})
    await _until_done(question)
    await rig.runtime.close("test")


async def test_a_question_gets_its_answers() -> None:
    rig = Rig()
    turn = rig.runtime.submit("ask Color?", "default")
    asked = await _until(turn, ChoiceRequested)
    assert asked.kind == "question" and asked.payload == {"questions": [{"question": "Color?"}]}
    with pytest.raises(InvalidRequest):
        rig.runtime.resolve(asked.choice_id, {"allow": True})
    rig.runtime.resolve(asked.choice_id, {"answers": {"Color?": "Blue"}})
    events = await _until_done(turn)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert '"answers": {"Color?": "Blue"}' in text
    await rig.runtime.close("test")


async def test_an_unanswered_choice_times_out_as_a_denial() -> None:
    rig = Rig(choice_timeout=0.05)
    turn = rig.runtime.submit("tool ls", "default")
    events = await _until_done(turn)
    resolved = next(e for e in events if isinstance(e, ChoiceResolved))
    assert resolved.source == "timeout"
    assert ToolResult("toolu_1", ok=False) in events
    assert any(isinstance(e, TextDelta) and "nobody answered" in e.text for e in events)
    await rig.runtime.close("test")


async def test_a_turn_is_recorded_before_anyone_can_see_it_end() -> None:
    """``on_final`` (the ledger entry) runs with the last event known but not yet sent (the
    turn's readers and the hub get it in one step, after), so a client that saw ``done`` and
    then lost the replica finds the turn recorded."""
    rig = Rig()
    seen: list[tuple[str, LoopEvent | None, bool]] = []

    async def record(turn: TurnLog) -> None:
        seen.append(("final", turn.final, turn.done))

    async def ended(turn: TurnLog) -> None:
        seen.append(("end", turn.final, turn.done))

    turns = [rig.runtime.submit("m0", "default"), rig.runtime.submit("wait", "default")]
    for turn in turns:
        turn.on_final.append(record)
        turn.on_end.append(ended)
    await _until_done(turns[0])
    await _until(turns[1], Started)
    rig.runtime.interrupt()
    await _until_done(turns[1])
    await asyncio.sleep(0.05)
    assert [(kind, type(final), done) for kind, final, done in seen] == [
        ("final", Done, False),
        ("end", Done, True),
        ("final", Interrupted, False),
        ("end", Interrupted, True),
    ]
    assert [turn.final for turn in turns] == [turn.events[-1] for turn in turns]
    await rig.runtime.close("test")


async def test_interrupt_stops_the_turn_and_the_next_one_runs() -> None:
    rig = Rig()
    slow = rig.runtime.submit("wait", "default")
    after = rig.runtime.submit("next", "default")
    await _until(slow, Started)
    assert rig.runtime.busy and rig.runtime.queue_depth == 1
    assert rig.runtime.interrupt()
    assert isinstance((await _until_done(slow))[-1], Interrupted)
    assert isinstance((await _until_done(after))[-1], Done)
    assert not rig.runtime.interrupt()  # nothing is running
    await rig.runtime.close("test")


async def test_interrupt_answers_a_pending_choice() -> None:
    rig = Rig()
    turn = rig.runtime.submit("tool ls", "default")
    asked = await _until(turn, ChoiceRequested)
    rig.runtime.interrupt()
    events = await _until_done(turn)
    assert ChoiceResolved(asked.choice_id, "interrupt") in events
    await rig.runtime.close("test")


async def test_an_idle_loop_releases_its_process_and_starts_cold_again() -> None:
    rig = Rig(idle=0.05)
    await _until_done(rig.runtime.submit("one", "default"))
    for _ in range(100):
        if not rig.runtime.live_process:
            break
        await asyncio.sleep(0.02)
    assert not rig.agents[0].alive and not rig.runtime.live_process
    second = rig.runtime.submit("two", "default")
    await _until_done(second)
    assert next(e for e in second.events if isinstance(e, Started)).cold_start
    assert len(rig.agents) == 2
    await rig.runtime.close("test")


async def test_a_watcher_joining_mid_turn_gets_a_snapshot() -> None:
    rig = Rig()
    turn = rig.runtime.submit("tool ls", "default")
    asked = await _until(turn, ChoiceRequested)
    watch, snapshot = rig.runtime.watch()
    assert snapshot == Snapshot(turn.turn_id, "", asked.choice_id)
    rig.runtime.resolve(asked.choice_id, {"allow": True})
    await _until_done(turn)
    seen = []
    while (event := await watch.next(0.01)) is not None:
        seen.append(event)
    assert seen[0] == ChoiceResolved(asked.choice_id, "api")
    assert isinstance(seen[-1], Done)
    await rig.runtime.close("test")
    assert await watch.next(0.01) == Failed("loop_closed", "test")
    with pytest.raises(StopAsyncIteration):
        await watch.next(0.01)


async def test_closing_refuses_what_waits_and_ends_the_process() -> None:
    rig = Rig()
    slow = rig.runtime.submit("wait", "default")
    queued = rig.runtime.submit("never", "default")
    await _until(slow, Started)
    watch, _ = rig.runtime.watch()
    await rig.runtime.close("the loop was archived")
    stopped = slow.events[-1]
    assert isinstance(stopped, Failed) and stopped.code == "loop_closed"
    assert "the loop was archived" in stopped.message
    end = queued.events[-1]
    assert isinstance(end, Failed) and end.code == "loop_closed"
    assert not rig.agents[0].alive and rig.agents[0].turns == ["wait"]
    seen = []
    with contextlib.suppress(StopAsyncIteration):
        while True:
            seen.append(await watch.next(0.01))
    assert seen[-1] == Failed("loop_closed", "the loop was archived")  # the watcher is told
    assert rig.gate.active == 0


async def test_a_turn_gives_its_slot_back_while_a_person_decides() -> None:
    gate = Gate(1, 0)
    rig = Rig(gate=gate)
    turn = rig.runtime.submit("tool make", "default")
    asked = await _until(turn, ChoiceRequested)
    assert gate.active == 0  # the waiting turn holds no slot: others may run
    async with gate.slot():
        rig.runtime.resolve(asked.choice_id, {"allow": True})
        await asyncio.sleep(0.05)
        assert not turn.done  # it waits for the slot again before it goes on
    await _until_done(turn)
    assert isinstance(turn.events[-1], Done) and gate.active == 0
    await rig.runtime.close("test")


async def test_a_loop_turn_waits_for_a_slot_even_when_the_line_is_full() -> None:
    gate = Gate(1, 0)
    rig = Rig(gate=gate)
    async with gate.slot():
        turn = rig.runtime.submit("m", "default")
        await asyncio.sleep(0.05)
        assert turn.events == [] and gate.queued == 1
    await _until_done(turn)
    assert isinstance(turn.events[-1], Done) and gate.active == 0
    await rig.runtime.close("test")


async def test_a_choice_is_announced_by_its_tool_call_first() -> None:
    rig = Rig()
    turn = rig.runtime.submit("ask Color?", "default")
    asked = await _until(turn, ChoiceRequested)
    call = turn.events[turn.events.index(asked) - 1]
    assert call == ToolCalled(
        "toolu_1", "AskUserQuestion", '{"questions": [{"question": "Color?"}]}'
    )
    rig.runtime.resolve(asked.choice_id, {"answers": {"Color?": "Red"}})
    await _until_done(turn)
    await rig.runtime.close("test")


async def test_a_slow_watcher_is_dropped_without_holding_others_up() -> None:
    hub = Hub(limit=3)
    slow, fast = hub.watch(), hub.watch()
    for i in range(5):
        hub.publish(TextDelta(str(i)))
        assert await fast.next(0.01) == TextDelta(str(i))
    dropped = await slow.next(0.01)
    assert isinstance(dropped, Failed) and dropped.code == "watcher_too_slow"
    with pytest.raises(StopAsyncIteration):
        await slow.next(0.01)
    assert len(hub) == 1


def test_tool_inputs_are_summarized_for_people() -> None:
    assert summarize("Bash", {"command": "ls -la"}) == "ls -la"
    assert (
        summarize("Write", {"file_path": "a.txt", "content": "hello"})
        == "write a.txt (5 characters)"
    )
    assert summarize("Edit", {"file_path": "b.py"}) == "edit b.py"
    assert summarize("Grep", {"pattern": "TODO", "path": "src"}) == "TODO in src"
    assert summarize("Other", {"x": 1}) == '{"x": 1}'
    assert summarize("SandboxNetworkAccess", {"host": "pypi.org"}) == (
        "connect to pypi.org from a command"
    )


@pytest.mark.parametrize(
    "event",
    [
        Queued(2),
        Started("turn_1", True),
        TextDelta("hi"),
        ToolCalled("t", "Bash", "ls"),
        ToolResult("t", False),
        ChoiceRequested("choice_1", "question", {"questions": []}),
        ChoiceResolved("choice_1", "timeout"),
        Done("turn_1", Usage(input_tokens=1, output_tokens=2)),
        Interrupted("turn_1"),
        Failed("turn_lost", "gone"),
    ],
)
def test_events_survive_their_stored_form(event: LoopEvent) -> None:
    assert load(json.loads(json.dumps(dump(event)))) == event


def _sse(event: LoopEvent) -> tuple[str, dict[str, Any]]:
    name, data = wire.sse(event).strip().split("\n")
    return name.removeprefix("event: "), json.loads(data.removeprefix("data: "))


def test_events_on_the_wire() -> None:
    assert _sse(Queued(1, "turn_1")) == ("queued", {"position": 1, "turn_id": "turn_1"})
    assert _sse(Started("turn_1", False)) == ("started", {"turn_id": "turn_1", "cold_start": False})
    assert _sse(TextDelta("x")) == ("assistant_delta", {"text": "x"})
    assert _sse(ToolCalled("t", "Bash", "ls")) == (
        "tool_call",
        {"tool_use_id": "t", "tool": "Bash", "input_summary": "ls"},
    )
    assert _sse(Done("turn_1", Usage(input_tokens=4))) == (
        "done",
        {
            "turn_id": "turn_1",
            "usage": {
                "input_tokens": 4,
                "output_tokens": 0,
                "cache_read_tokens": 0,
                "cache_creation_tokens": 0,
            },
        },
    )
    assert _sse(Failed("cli_crashed", "boom")) == (
        "error",
        {"code": "cli_crashed", "message": "boom"},
    )
    assert _sse(Snapshot("turn_1", "so far", None)) == (
        "snapshot",
        {"turn_id": "turn_1", "assistant_text_so_far": "so far", "pending_choice_id": None},
    )
    assert wire.ping() == "event: ping\ndata: {}\n\n"
    assert set(wire.EVENTS) >= {"queued", "started", "requires_choice", "snapshot", "ping"}


def test_wire_checks_and_errors() -> None:
    assert wire.check_permission_mode(None, ("default",)) is None
    with pytest.raises(InvalidRequest) as bad:
        wire.check_permission_mode("bypassPermissions", ("default", "acceptEdits", "plan"))
    assert "default, acceptEdits, plan" in bad.value.message
    assert bad.value.code == "invalid_permission_mode"
    with pytest.raises(InvalidRequest) as big:
        wire.check_metadata({"x": "y" * 17_000})
    assert big.value.code == "metadata_too_large"
    body = wire.error_body(NotFound("no loop", code="loop_not_found"))
    assert body == {
        "error": {"type": "not_found_error", "code": "loop_not_found", "message": "no loop"}
    }
    too_big = wire.error_body(RequestTooLarge("big", code="content_too_large"))
    assert too_big["error"]["type"] == "request_too_large"
    assert wire.error_body(InvalidRequest("x"))["error"]["code"] == "invalid_request"
    shown = wire.loop_object(RECORD, busy=True, queue_depth=2, current={"turn_id": "t"})
    assert shown["busy"] and shown["queue_depth"] == 2 and shown["archived"] is False
    assert "busy" not in wire.loop_object(RECORD)


@pytest.mark.parametrize(
    "body",
    [{"allow": "yes"}, {"allow": 1}, {"answers": ["Red"]}, {"allow": True, "why": 1}, [], "x"],
)
def test_a_malformed_choice_is_invalid_choice_payload(body: Any) -> None:
    with pytest.raises(InvalidRequest) as bad:
        wire.parse_choice(body)
    assert bad.value.code == "invalid_choice_payload"
    assert '{"allow": true|false' in bad.value.message


def test_a_choice_is_read() -> None:
    assert wire.parse_choice({"allow": False, "message": "no"}) == {"allow": False, "message": "no"}
    assert wire.parse_choice({"answers": {"Q?": "A"}}) == {"answers": {"Q?": "A"}}


def test_metadata_is_measured_in_bytes_of_compact_json() -> None:
    assert wire.check_metadata({"x": "é" * 8_000})  # 16,000 bytes: fits
    with pytest.raises(InvalidRequest):
        wire.check_metadata({"x": "é" * 8_200})


@pytest.mark.parametrize(
    "event",
    [
        Queued(1, "turn_1"),
        Started("turn_1", True),
        TextDelta("hi"),
        ThinkingDelta("hmm"),
        ToolCalled("t", "Bash", "ls"),
        ToolResult("t", False),
        ChoiceRequested("choice_1", "permission", {"tool": "Bash", "input": {"command": "ls"}}),
        ChoiceResolved("choice_1", "interrupt"),
        Done("turn_1", Usage(input_tokens=1, output_tokens=2, cache_read_tokens=3)),
        Interrupted("turn_1"),
        Failed("turn_lost", "gone"),
        Snapshot("turn_1", "so far", None),
        Snapshot("turn_1", "", "choice_1"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_event_matches_the_schema_the_openapi_document_gives(event: LoopEvent) -> None:
    name, data = _sse(event)
    schemas = {s["title"]: s for s in wire.event_schemas()["anyOf"]}
    documented = schemas[name]["properties"]["data"]
    assert documented["contentMediaType"] == "application/json"
    jsonschema.validate(data, documented["contentSchema"])


def test_the_document_names_every_event_and_mode() -> None:
    assert set(wire.EVENT_DATA) == set(wire.EVENTS)
    assert wire.PERMISSION_MODES == PERMISSION_MODES
    jsonschema.validate(
        {}, wire.event_schemas()["anyOf"][-1]["properties"]["data"]["contentSchema"]
    )


def test_every_loop_event_has_one_row_in_the_table() -> None:
    """A new loop event cannot reach the wire unnamed: the table must say how to write it."""
    sources = [row.source for row in wire.TABLE if row.source is not None]
    assert len(sources) == len(set(sources))
    assert set(sources) == set(typing.get_args(LoopEvent))
    assert [row.name for row in wire.TABLE][-1] == "ping"


async def test_the_shipped_agent_double_keeps_the_agent_contract(tmp_path: Path) -> None:
    """ScriptedAgents is an Agents (mypy checks the assignment); its agents end with TurnEnd."""
    agents: Agents = ScriptedAgents()
    spec = AgentSpec(tmp_path, tmp_path, "sid", "sonnet", "default")

    async def allow(tool: str, tool_input: dict[str, Any], tool_use_id: str) -> Decision:
        return Decision(True, updated_input=tool_input)

    agent = await agents.start(spec, allow)
    events = [event async for event in agent.run("tool ls", "default")]
    assert isinstance(events[-1], TurnEnd)
    assert TextDelta('Bash: {"command": "ls"}') in events
    assert agent.alive and agent.pid is None
    agent.kill()
    assert not agent.alive
