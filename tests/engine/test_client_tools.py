"""Client tools in the engine: segments from the CLI's stream, results, transcripts, prompts."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ResultMessage, ToolResultBlock, UserMessage
from claude_agent_sdk.types import StreamEvent

from ccgate.claude import Translator
from ccgate.claude.prompt import content_blocks, system_prompt
from ccgate.claude.transcript import write_transcript
from ccgate.engine.events import (
    AgentEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolResult,
    TurnEnd,
    Usage,
)
from ccgate.engine.live import reply_message
from ccgate.engine.sessions import fingerprints
from ccgate.engine.toolbox import ToolBoxClosed, ToolResultBox
from ccgate.engine.turn import (
    Message,
    SessionPlan,
    TextPart,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    TurnRequest,
)

pytestmark = pytest.mark.unit

SPEC = ToolSpec("get_weather", "Weather", {"type": "object"})


def _stream(event: dict[str, Any]) -> StreamEvent:
    return StreamEvent(uuid="u", session_id="s", event=event, parent_tool_use_id=None)


def _message(blocks: list[tuple[str, str]], reason: str, usage: int = 7) -> list[StreamEvent]:
    """Stream events of one upstream message: text blocks and (name, id) tool_use blocks."""
    out = [_stream({"type": "message_start", "message": {"usage": {"input_tokens": usage}}})]
    for index, (kind, value) in enumerate(blocks):
        if kind == "text":
            out.append(_stream({"type": "content_block_start", "index": index}))
            delta = {"type": "text_delta", "text": value}
            out.append(_stream({"type": "content_block_delta", "index": index, "delta": delta}))
        else:
            block = {"type": "tool_use", "id": value, "name": kind, "input": {}}
            out.append(
                _stream({"type": "content_block_start", "index": index, "content_block": block})
            )
            delta = {"type": "input_json_delta", "partial_json": '{"city": "X"}'}
            out.append(_stream({"type": "content_block_delta", "index": index, "delta": delta}))
        out.append(_stream({"type": "content_block_stop", "index": index}))
    out.append(
        _stream(
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason},
                "usage": {"output_tokens": 3},
            }
        )
    )
    return out


def _result(input_tokens: int, output_tokens: int) -> ResultMessage:
    return ResultMessage(
        subtype="success",
        duration_ms=1,
        duration_api_ms=1,
        is_error=False,
        num_turns=2,
        session_id="s",
        stop_reason="end_turn",
        total_cost_usd=0.01,
        usage={"input_tokens": input_tokens, "output_tokens": output_tokens},
        result="done",
    )


def test_translator_ends_a_segment_at_client_tool_calls() -> None:
    translator = Translator(frozenset({"get_weather"}))
    events = [
        e
        for m in _message([("text", "Hi."), ("get_weather", "a"), ("get_weather", "b")], "tool_use")
        for e in translator.feed(m)
    ]
    # What the model call uses is known from its start, in case the turn is cut.
    assert events[0] == Usage(input_tokens=7, partial=True)
    events = events[1:]
    assert events[0] == TextDelta("Hi.")
    assert events[1:4] == [
        ToolCallStart("a", "get_weather"),
        ToolCallDelta("a", '{"city": "X"}'),
        ToolCallEnd("a"),
    ]
    assert events[-2] == Usage(input_tokens=7, output_tokens=3)
    assert events[-1] == TurnEnd("tool_use", waiting_for=("a", "b"))
    results = UserMessage(
        content=[ToolResultBlock("a", "sun"), ToolResultBlock("b", "x", is_error=True)]
    )
    assert translator.feed(results) == [ToolResult("a", ok=True), ToolResult("b", ok=False)]
    after = [e for m in _message([("text", "Done.")], "end_turn", 20) for e in translator.feed(m)]
    assert after == [Usage(input_tokens=20, partial=True), TextDelta("Done.")]
    translator.feed(_result(27, 6))
    closing = translator.finish([])
    # The last segment's usage is the turn's total less what earlier segments reported.
    assert closing[0] == Usage(input_tokens=20, output_tokens=3)  # cost: from the tokens
    assert closing[-1] == TurnEnd("end_turn")


def test_translator_leaves_unknown_tools_to_the_cli() -> None:
    translator = Translator(frozenset({"get_weather"}))
    events = [e for m in _message([("made_up", "z")], "tool_use") for e in translator.feed(m)]
    assert not any(isinstance(e, ToolCallStart | TurnEnd) for e in events)


async def test_toolbox_delivers_before_or_after_the_wait() -> None:
    box = ToolResultBox()
    early = ToolResultPart("a", (TextPart("early"),))
    box.deliver([early])
    assert await box.wait("a") == early
    waiter = asyncio.ensure_future(box.wait("b"))
    await asyncio.sleep(0)
    late = ToolResultPart("b", (TextPart("late"),))
    box.deliver([late, ToolResultPart("b", (TextPart("ignored"),))])
    assert await waiter == late


async def test_toolbox_close_fails_waiters() -> None:
    box = ToolResultBox()
    waiter = asyncio.ensure_future(box.wait("a"))
    await asyncio.sleep(0)
    box.close("gone")
    with pytest.raises(ToolBoxClosed, match="gone"):
        await waiter
    with pytest.raises(ToolBoxClosed):
        await box.wait("later")


def _turn(*messages: Message, **extra: Any) -> TurnRequest:
    return TurnRequest(model="sonnet", requested_model="sonnet", messages=messages, **extra)


CALLS = Message(
    "assistant",
    (
        TextPart("Checking."),
        ToolCallPart("a", "get_weather", {"city": "Oslo"}),
        ToolCallPart("b", "get_weather", {"city": "Rome"}),
    ),
)
RESULTS = Message(
    "user",
    (
        ToolResultPart("a", (TextPart("sun"),)),
        ToolResultPart("b", (TextPart("rain"),), is_error=True),
    ),
)


def test_deferred_transcript_ends_with_the_last_call(tmp_path: Path) -> None:
    history = (Message("user", (TextPart("weather?"),)), CALLS)
    path = write_transcript(tmp_path, tmp_path / "cwd", "sid", history, "sonnet", results=RESULTS)
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["type"] for e in entries] == ["user", "assistant", "user", "attachment"]
    assert [e["parentUuid"] for e in entries[1:]] == [e["uuid"] for e in entries[:-1]]
    assistant = entries[1]["message"]
    assert assistant["stop_reason"] == "tool_use"
    assert [b["type"] for b in assistant["content"]] == ["text", "tool_use", "tool_use"]
    assert entries[2]["message"]["content"] == [
        {"type": "tool_result", "tool_use_id": "a", "content": [{"type": "text", "text": "sun"}]}
    ]
    assert entries[3]["attachment"] == {
        "type": "hook_deferred_tool",
        "toolUseID": "b",
        "toolName": "get_weather",
        "toolInput": {"city": "Rome"},
        "hookName": "ccgate",
        "hookEvent": "PreToolUse",
        "permissionMode": "default",
    }


def test_tool_result_blocks_come_first() -> None:
    blocks = content_blocks((TextPart("note"), *RESULTS.parts))
    assert [b["type"] for b in blocks] == ["tool_result", "tool_result", "text"]
    assert blocks[1]["is_error"] is True and "is_error" not in blocks[0]


def test_fingerprints_of_plain_text_are_unchanged() -> None:
    # The fingerprints sessions stored before tools existed must still match.
    messages = (Message("user", (TextPart("hi"),)), Message("assistant", (TextPart("yo"),)))
    current = hashlib.sha256(b"system:").hexdigest()
    for role, text in (("user", "hi"), ("assistant", "yo")):
        canonical = json.dumps([role, text], separators=(",", ":"))
        current = hashlib.sha256((current + canonical).encode()).hexdigest()
    assert fingerprints(None, messages)[-1] == current


def test_fingerprints_cover_calls_and_results_but_not_empty_text() -> None:
    base = fingerprints(None, (Message("user", (TextPart("q"),)), CALLS, RESULTS))
    empty_text = Message("assistant", (TextPart(""), *CALLS.parts[1:]))
    bare = Message("assistant", CALLS.parts[1:])
    assert fingerprints(None, (empty_text,)) == fingerprints(None, (bare,))
    other = Message("user", (ToolResultPart("a", (TextPart("SUN"),)), RESULTS.parts[1]))
    assert base[-1] != fingerprints(None, (Message("user", (TextPart("q"),)), CALLS, other))[-1]


def test_offered_tools_follow_the_choice() -> None:
    other = ToolSpec("other", "", {"type": "object"})
    user = Message("user", (TextPart("q"),))
    assert _turn(user, tools=(SPEC, other)).offered_tools() == (SPEC, other)
    assert _turn(user, tools=(SPEC,), tool_choice=ToolChoice("none")).offered_tools() == ()
    named = _turn(user, tools=(SPEC, other), tool_choice=ToolChoice("tool", name="other"))
    assert named.offered_tools() == (other,)
    # A call the CLI must re-run keeps its tool, even when the choice would hide it.
    deferred = _turn(
        user,
        CALLS,
        RESULTS,
        tools=(SPEC,),
        tool_choice=ToolChoice("none"),
        session=SessionPlan("sid", resume=True, deferred_call="b"),
    )
    assert deferred.offered_tools() == (SPEC,)


def test_system_prompt_asks_for_what_cannot_be_enforced() -> None:
    user = Message("user", (TextPart("q"),))
    assert system_prompt(_turn(user, system="Be terse.", tools=(SPEC,))) == "Be terse."
    required = _turn(user, tools=(SPEC,), tool_choice=ToolChoice("required", parallel=False))
    assert system_prompt(required) == (
        "Answer by calling one or more of the available tools. Call at most one tool per reply."
    )
    named = _turn(user, system="S", tools=(SPEC,), tool_choice=ToolChoice("tool", name=SPEC.name))
    assert system_prompt(named) == "S\n\nAnswer by calling the tool get_weather."


def test_reply_message_keeps_text_then_calls() -> None:
    events: list[AgentEvent] = [
        TextDelta("Hi"),
        ToolCallStart("a", "get_weather"),
        ToolCallDelta("a", '{"city":'),
        ToolCallDelta("a", '"Oslo"}'),
        ToolCallEnd("a"),
    ]
    assert reply_message(events) == Message(
        "assistant", (TextPart("Hi"), ToolCallPart("a", "get_weather", {"city": "Oslo"}))
    )
    assert reply_message([TextDelta("plain")]).parts == (TextPart("plain"),)
