"""The Responses renderer on its own: every event it writes is one the SDK parses, in order."""

from __future__ import annotations

import json
import typing
from typing import Any

import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent

from ccgate.engine.events import (
    AgentEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    TurnEnd,
    Usage,
)
from ccgate.errors import UpstreamOverloaded
from ccgate.protocol.responses import Echo, ResponseStream, finished

pytestmark = pytest.mark.unit

RID = "resp_" + "ab" * 16


def _models() -> dict[str, type[pydantic.BaseModel]]:
    union = typing.get_args(ResponseStreamEvent)[0]
    return {
        typing.get_args(m.model_fields["type"].annotation)[0]: m for m in typing.get_args(union)
    }


MODELS = _models()


def _events(lines: list[str]) -> list[Any]:
    parsed = []
    for block in lines:
        data = json.loads(block.split("data: ", 1)[1])
        parsed.append(MODELS[data["type"]].model_validate(data))
    return parsed


def _stream(events: list[AgentEvent], echo: Echo | None = None) -> tuple[ResponseStream, list[str]]:
    stream = ResponseStream(RID, echo or Echo(model="sonnet"), 1.0)
    lines = stream.start()
    for event in events:
        lines += stream.render(event)
    return stream, lines


def test_text_calls_and_reasoning_in_order() -> None:
    echo = Echo(model="sonnet", reasoning={"effort": "high", "summary": "auto"})
    events: list[AgentEvent] = [
        ThinkingDelta("hm"),
        TextDelta("Let me "),
        TextDelta("check."),
        ToolCallStart("call_1", "f"),
        ToolCallDelta("call_1", '{"a":'),
        ToolCallDelta("call_1", "1}"),
        ToolCallEnd("call_1"),
        ToolCallStart("call_2", "f"),
        ToolCallEnd("call_2"),
        Usage(input_tokens=10, output_tokens=5, cache_read_tokens=3),
        TurnEnd("tool_use", waiting_for=("call_1", "call_2")),
    ]
    _, lines = _stream(events, echo)
    parsed = _events(lines)
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    done = parsed[-1]
    assert done.type == "response.completed"
    assert [i.type for i in done.response.output] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
    ]
    assert done.response.output[2].arguments == '{"a":1}'
    assert done.response.output[3].arguments == "{}"
    assert done.response.usage.input_tokens == 13
    assert done.response.usage.input_tokens_details.cached_tokens == 3
    whole = finished(RID, echo, events, 1.0)
    assert [i["id"] for i in whole["output"]] == [i.id for i in done.response.output]


def test_a_failure_after_the_start_is_error_then_response_failed() -> None:
    stream, lines = _stream([TextDelta("partial")])
    lines += stream.error(UpstreamOverloaded("the upstream is overloaded"))
    parsed = _events(lines)
    kinds = [e.type for e in parsed]
    assert kinds[-3:] == ["response.output_item.done", "error", "response.failed"]
    assert parsed[-2].code == "upstream_overloaded"
    failed = parsed[-1].response
    assert failed.status == "failed" and failed.error is not None
    assert failed.output[0].content[0].text == "partial"


def test_max_tokens_is_incomplete() -> None:
    _, lines = _stream([TextDelta("cut"), TurnEnd("max_tokens")])
    last = _events(lines)[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details.reason == "max_output_tokens"
