"""Client tools on the wire: translation of tools, calls and results, checks, rendering."""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from ccgate.engine.events import (
    AgentEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    TurnEnd,
    Usage,
)
from ccgate.engine.models import Catalogue, ModelInfo
from ccgate.engine.turn import TextPart, ToolCallPart, ToolChoice, ToolResultPart, TurnRequest
from ccgate.errors import InvalidRequest
from ccgate.protocol import anthropic as ant
from ccgate.protocol import openai as oai

pytestmark = pytest.mark.unit

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@pytest.fixture(scope="module")
def sonnet() -> ModelInfo:
    return Catalogue.load().resolve("sonnet")


# --- OpenAI --------------------------------------------------------------------------------


def _fn(name: str = "get_weather", **extra: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": WEATHER, **extra}}


def _call(
    call_id: str, name: str = "get_weather", args: str = '{"city": "Paris"}'
) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def _chat(sonnet: ModelInfo, **body: Any) -> TurnRequest:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    req = oai.ChatCompletionRequest.model_validate({"model": "sonnet", **body})
    return oai.to_turn(req, sonnet, "sonnet")


def _chat_refused(sonnet: ModelInfo, **body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        _chat(sonnet, **body)
    return caught.value


TWO_CALLS = [
    {"role": "user", "content": "weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [_call("c1"), _call("c2", args='{"city": "Rome"}')],
    },
    {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "sun"}]},
]


def test_openai_tools_become_specs(sonnet: ModelInfo) -> None:
    turn = _chat(
        sonnet, tools=[_fn(description="Weather"), {"type": "function", "function": {"name": "n"}}]
    )
    assert [t.name for t in turn.tools] == ["get_weather", "n"]
    assert turn.tools[0].description == "Weather"
    assert turn.tools[0].input_schema == WEATHER
    assert turn.tools[1].input_schema == {"type": "object", "properties": {}}
    assert turn.tool_choice == ToolChoice()


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, ToolChoice("auto")),
        ("none", None, ToolChoice("none")),
        ("required", False, ToolChoice("required", parallel=False)),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            ToolChoice("tool", name="get_weather"),
        ),
    ],
)
def test_openai_tool_choice(
    sonnet: ModelInfo, choice: Any, parallel: bool | None, expected: ToolChoice
) -> None:
    turn = _chat(sonnet, tools=[_fn()], tool_choice=choice, parallel_tool_calls=parallel)
    assert turn.tool_choice == expected


def test_openai_calls_and_results_become_one_round(sonnet: ModelInfo) -> None:
    turn = _chat(sonnet, tools=[_fn()], messages=TWO_CALLS)
    assert [m.role for m in turn.messages] == ["user", "assistant", "user"]
    assert turn.messages[1].parts == (
        TextPart("Let me check."),
        ToolCallPart("c1", "get_weather", {"city": "Paris"}),
        ToolCallPart("c2", "get_weather", {"city": "Rome"}),
    )
    # Consecutive tool messages merge into one user turn without glue text between results.
    assert turn.last.parts == (
        ToolResultPart("c2", (TextPart("rain"),)),
        ToolResultPart("c1", (TextPart("sun"),)),
    )


def test_openai_text_after_results_joins_their_turn(sonnet: ModelInfo) -> None:
    messages = [*TWO_CALLS, {"role": "user", "content": "thanks"}]
    turn = _chat(sonnet, tools=[_fn()], messages=messages)
    assert len(turn.last.tool_results) == 2
    assert turn.last.parts[-1] == TextPart("thanks")


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0]", "type 'function'"),
        ({"tools": [_fn(name="bad name!")]}, "tools[0]", "tool name"),
        ({"tools": [_fn(name="ToolSearch")]}, "tools[0]", "reserved by Claude Code"),
        ({"tools": [_fn(), _fn()]}, "tools", "used twice"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0]",
            "JSON object",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "string"}},
                    }
                ]
            },
            "tools[0]",
            "type 'object'",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"x": {"type": 5}}},
                        },
                    }
                ]
            },
            "tools[0]",
            "not a valid JSON Schema",
        ),
        ({"tools": [_fn()], "tool_choice": "sometimes"}, "tool_choice", "tool_choice must be"),
        (
            {"tools": [_fn()], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
            "'x', which is not in tools",
        ),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"functions": [{"name": "f"}]}, "functions", "deprecated"),
    ],
)
def test_openai_bad_tool_definitions(
    sonnet: ModelInfo, body: dict[str, Any], param: str, needle: str
) -> None:
    error = _chat_refused(sonnet, **body)
    assert error.param == param
    assert needle in error.message


def test_openai_result_for_a_call_never_made(sonnet: ModelInfo) -> None:
    messages = [*TWO_CALLS[:2], {"role": "tool", "tool_call_id": "nope", "content": "x"}]
    error = _chat_refused(sonnet, tools=[_fn()], messages=messages)
    assert error.param == "messages[2]"
    assert "'nope', which was never made" in error.message


def test_openai_duplicate_call_ids(sonnet: ModelInfo) -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": [_call("c1"), _call("c1")]},
        {"role": "tool", "tool_call_id": "c1", "content": "x"},
    ]
    error = _chat_refused(sonnet, tools=[_fn()], messages=messages)
    assert error.param == "messages[1]" and "'c1' is used twice" in error.message


def test_openai_duplicate_results(sonnet: ModelInfo) -> None:
    messages = [*TWO_CALLS, {"role": "tool", "tool_call_id": "c1", "content": "again"}]
    error = _chat_refused(sonnet, tools=[_fn()], messages=messages)
    assert error.param == "messages[4]" and "more than one result" in error.message


def test_openai_unanswered_call(sonnet: ModelInfo) -> None:
    messages = [*TWO_CALLS[:3], {"role": "user", "content": "never mind"}]
    error = _chat_refused(sonnet, tools=[_fn()], messages=messages)
    assert error.param == "messages[1]"
    assert "'c1' of tool 'get_weather' has no result" in error.message


def test_openai_result_of_a_tool_not_in_tools(sonnet: ModelInfo) -> None:
    error = _chat_refused(sonnet, tools=[_fn("other")], messages=TWO_CALLS)
    assert "tool 'get_weather', which is not in tools" in error.message
    # Without any tools the results still reach the model (the client did not resend them).
    assert len(_chat(sonnet, messages=TWO_CALLS).last.tool_results) == 2


def test_openai_result_naming_another_tool(sonnet: ModelInfo) -> None:
    messages = [
        *TWO_CALLS[:3],
        {"role": "tool", "tool_call_id": "c1", "name": "lookup", "content": "x"},
    ]
    error = _chat_refused(sonnet, tools=[_fn()], messages=messages)
    assert error.param == "messages[3]" and "'lookup'" in error.message


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        ({"type": "function", "function": {"name": "f", "arguments": "{}"}}, "needs an 'id'"),
        (_call("c1", args="{not json"), "JSON object"),
        (_call("c1", args="[1]"), "JSON object"),
    ],
)
def test_openai_malformed_calls(sonnet: ModelInfo, call: dict[str, Any], needle: str) -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "x"},
    ]
    error = _chat_refused(sonnet, messages=messages)
    assert error.param is not None and error.param.startswith("messages[1].tool_calls[0]")
    assert needle in error.message


def test_openai_tool_message_needs_its_call_id(sonnet: ModelInfo) -> None:
    messages = [*TWO_CALLS[:2], {"role": "tool", "content": "x"}]
    assert "tool_call_id" in _chat_refused(sonnet, messages=messages).message


SEGMENT: list[AgentEvent] = [
    TextDelta("Let me "),
    TextDelta("check."),
    ToolCallStart("toolu_1", "get_weather"),
    ToolCallDelta("toolu_1", '{"city"'),
    ToolCallDelta("toolu_1", ': "Paris"}'),
    ToolCallEnd("toolu_1"),
    ToolCallStart("toolu_2", "now"),
    ToolCallEnd("toolu_2"),
    Usage(input_tokens=10, output_tokens=5),
    TurnEnd("tool_use", waiting_for=("toolu_1", "toolu_2")),
]


def test_openai_completion_with_tool_calls() -> None:
    body = oai.completion_from_events(SEGMENT, "sonnet")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]
    only_calls = oai.completion_from_events(SEGMENT[2:], "sonnet")
    assert only_calls["choices"][0]["message"]["content"] is None


def _chat_stream(events: list[AgentEvent]) -> str:
    stream = oai.ChatStream("sonnet", include_usage=True)
    return "".join([*stream.start(), *(line for e in events for line in stream.render(e))])


def test_openai_stream_chunks_for_tool_calls() -> None:
    lines = [line[6:] for line in _chat_stream(SEGMENT).split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert calls[1:3] == [
        {"index": 0, "function": {"arguments": '{"city"'}},
        {"index": 0, "function": {"arguments": ': "Paris"}'}},
    ]
    assert calls[3]["index"] == 1 and calls[3]["id"] == "toolu_2"
    assert calls[4] == {"index": 1, "function": {"arguments": "{}"}}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


def test_openai_sdk_assembles_streamed_tool_calls() -> None:
    text = _chat_stream(SEGMENT)

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=text)

    client = openai.OpenAI(
        base_url="http://localhost/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with (
        client,
        client.chat.completions.stream(
            model="sonnet", messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.content == "Let me check."
    assert message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("toolu_1", "get_weather", '{"city": "Paris"}'),
        ("toolu_2", "now", "{}"),
    ]


# --- Anthropic -----------------------------------------------------------------------------

ANT_TOOL = {"name": "get_weather", "description": "Weather", "input_schema": WEATHER}
ANT_ROUND = [
    {"role": "user", "content": "weather?"},
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "t2", "name": "get_weather", "input": {"city": "Rome"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t2", "content": "rain", "is_error": True},
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": [
                    {"type": "text", "text": "sun"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                ],
            },
        ],
    },
]


def _msg(sonnet: ModelInfo, **body: Any) -> TurnRequest:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    req = ant.MessagesRequest.model_validate({"model": "sonnet", "max_tokens": 100, **body})
    return ant.to_turn(req, sonnet, "sonnet")


def _msg_refused(sonnet: ModelInfo, **body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        _msg(sonnet, **body)
    return caught.value


def test_anthropic_round_of_calls_and_results(sonnet: ModelInfo) -> None:
    turn = _msg(sonnet, tools=[ANT_TOOL], messages=ANT_ROUND)
    assert turn.tools[0].name == "get_weather" and turn.tools[0].input_schema == WEATHER
    assert turn.messages[1].tool_calls == (
        ToolCallPart("t1", "get_weather", {"city": "Oslo"}),
        ToolCallPart("t2", "get_weather", {"city": "Rome"}),
    )
    results = turn.last.tool_results
    assert results[0] == ToolResultPart("t2", (TextPart("rain"),), is_error=True)
    assert results[1].content[0] == TextPart("sun")
    assert results[1].content[1].data == PNG  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, ToolChoice("auto")),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            ToolChoice("required", parallel=False),
        ),
        ({"type": "none"}, ToolChoice("none")),
        ({"type": "tool", "name": "get_weather"}, ToolChoice("tool", name="get_weather")),
    ],
)
def test_anthropic_tool_choice(
    sonnet: ModelInfo, choice: dict[str, Any], expected: ToolChoice
) -> None:
    assert _msg(sonnet, tools=[ANT_TOOL], tool_choice=choice).tool_choice == expected


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0", "server"),
        ({"tools": [{"name": "f"}]}, "tools.0", "input_schema"),
        ({"tools": [{**ANT_TOOL, "name": "ToolSearch"}]}, "tools.0", "reserved"),
        ({"tools": [{**ANT_TOOL, "defer_loading": True}]}, "tools.0", "defer_loading"),
        ({"tools": [{**ANT_TOOL, "input_schema": {"type": "array"}}]}, "tools.0", "type 'object'"),
        ({"tools": [ANT_TOOL], "tool_choice": {"type": "tool"}}, "tool_choice", "'tool'"),
        ({"tool_choice": {"type": "any"}}, "tool_choice", "needs tools"),
    ],
)
def test_anthropic_bad_tool_definitions(
    sonnet: ModelInfo, body: dict[str, Any], param: str, needle: str
) -> None:
    error = _msg_refused(sonnet, **body)
    assert error.param == param and needle in error.message


def test_anthropic_result_for_a_call_never_made(sonnet: ModelInfo) -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "r"}]},
    ]
    error = _msg_refused(sonnet, messages=messages)
    assert error.param == "messages.1" and "'x', which was never made" in error.message


def test_anthropic_unanswered_call(sonnet: ModelInfo) -> None:
    messages = [*ANT_ROUND[:2], {"role": "user", "content": "go on"}]
    error = _msg_refused(sonnet, tools=[ANT_TOOL], messages=messages)
    assert error.param == "messages.1" and "'t1'" in error.message


@pytest.mark.parametrize(
    ("block", "needle"),
    [
        ({"type": "tool_use", "id": "t1", "name": "get_weather"}, "'input' object"),
        ({"type": "tool_result", "content": "r"}, "tool_use_id"),
        (
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}],
            },
            "base64",
        ),
        (
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "document"}]},
            "not 'document'",
        ),
    ],
)
def test_anthropic_malformed_tool_blocks(
    sonnet: ModelInfo, block: dict[str, Any], needle: str
) -> None:
    role = "assistant" if block["type"] == "tool_use" else "user"
    messages = [{"role": "user", "content": "q"}, {"role": role, "content": [block]}]
    if role == "assistant":
        messages.append({"role": "user", "content": "x"})
    assert needle in _msg_refused(sonnet, messages=messages).message


def test_anthropic_message_with_tool_use() -> None:
    body = ant.message_from_events(SEGMENT, "sonnet")
    assert body["stop_reason"] == "tool_use"
    assert body["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
    ]


def _ant_stream(events: list[AgentEvent]) -> str:
    stream = ant.MessageStream("sonnet")
    return "".join([*stream.start(), *(line for e in events for line in stream.render(e))])


def test_anthropic_stream_events_for_tool_use() -> None:
    frames = [f for f in _ant_stream(SEGMENT).split("\n\n") if f]
    data = [json.loads(f.split("\ndata: ", 1)[1]) for f in frames]
    starts = [d["content_block"] for d in data if d["type"] == "content_block_start"]
    assert starts[1:] == [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
        {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
    ]
    json_deltas = [d["delta"] for d in data if d.get("delta", {}).get("type") == "input_json_delta"]
    assert json_deltas == [
        {"type": "input_json_delta", "partial_json": '{"city"'},
        {"type": "input_json_delta", "partial_json": ': "Paris"}'},
    ]
    assert [d["index"] for d in data if d["type"] == "content_block_stop"] == [0, 1, 2]
    assert data[-2]["delta"]["stop_reason"] == "tool_use"


def test_anthropic_sdk_accumulates_tool_use() -> None:
    text = _ant_stream(SEGMENT)

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=text.encode()
        )

    client = anthropic.Anthropic(
        base_url="http://localhost",
        api_key="unused",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with (
        client,
        client.messages.stream(
            model="sonnet", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [(b.id, b.name, b.input) for b in uses] == [
        ("toolu_1", "get_weather", {"city": "Paris"}),
        ("toolu_2", "now", {}),
    ]


def test_count_tokens_counts_tool_blocks() -> None:
    plain = ant.CountTokensRequest.model_validate({"messages": ANT_ROUND[:1]})
    with_tools = ant.CountTokensRequest.model_validate({"messages": ANT_ROUND, "tools": [ANT_TOOL]})
    assert ant.count_tokens(with_tools) > ant.count_tokens(plain) + 10


# --- tool schemas that no input could pass, or no validator could finish -------------------


UNUSABLE_SCHEMAS: list[tuple[str, dict[str, Any], str]] = [
    (
        "unresolvable $ref",
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
        "does not resolve",
    ),
    (
        "remote $ref",
        {"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}},
        "fetches no remote schema",
    ),
    ("not anything", {"not": {}}, "accepts no input"),
    ("not true", {"type": "object", "not": True}, "accepts no input"),
    ("allOf of nothing", {"type": "object", "allOf": [{"not": {}}]}, "accepts no input"),
    ("empty enum", {"type": "object", "enum": []}, "accepts no input"),
    ("$ref to itself", {"$ref": "#"}, "refers to itself"),
    ("allOf of itself", {"type": "object", "allOf": [{"$ref": "#"}]}, "refers to itself"),
    (
        "$ref loop through $defs",
        {
            "type": "object",
            "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}},
            "properties": {"x": {"$ref": "#/$defs/a"}},
        },
        "refers to itself",
    ),
]


@pytest.mark.parametrize(
    ("schema", "needle"), [c[1:] for c in UNUSABLE_SCHEMAS], ids=[c[0] for c in UNUSABLE_SCHEMAS]
)
def test_unusable_tool_schemas_are_refused(
    sonnet: ModelInfo, schema: dict[str, Any], needle: str
) -> None:
    error = _chat_refused(sonnet, tools=[_fn(parameters=schema)])
    assert error.param == "tools[0]"
    assert needle in error.message and "get_weather" in error.message
    error = _msg_refused(sonnet, tools=[{**ANT_TOOL, "input_schema": schema}])
    assert error.param == "tools.0" and needle in error.message


USABLE_SCHEMAS: list[tuple[str, dict[str, Any]]] = [
    (
        "a tree",
        {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}},
    ),  # noqa: E501
    (
        "pydantic's recursive model",
        {
            "$defs": {
                "Item": {
                    "type": "object",
                    "properties": {"sub": {"anyOf": [{"$ref": "#/$defs/Item"}, {"type": "null"}]}},
                }
            },
            "type": "object",
            "properties": {"item": {"$ref": "#/$defs/Item"}},
        },
    ),
    (
        "draft 7 definitions",
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "definitions": {"p": {"type": "string"}},
            "properties": {"a": {"$ref": "#/definitions/p"}},
        },
    ),
    (
        "$id and an anchor",
        {
            "$id": "https://example.com/tool",
            "type": "object",
            "$defs": {"p": {"$id": "p.json", "type": "string"}, "q": {"$anchor": "q"}},
            "properties": {"a": {"$ref": "p.json"}, "b": {"$ref": "#q"}},
        },
    ),
    ("a property that must be absent", {"type": "object", "properties": {"x": {"not": {}}}}),
]


@pytest.mark.parametrize(
    "schema", [c[1] for c in USABLE_SCHEMAS], ids=[c[0] for c in USABLE_SCHEMAS]
)
def test_recursive_and_referencing_tool_schemas_pass(
    sonnet: ModelInfo, schema: dict[str, Any]
) -> None:
    assert _chat(sonnet, tools=[_fn(parameters=schema)]).tools[0].input_schema["type"] == "object"
    assert _msg(sonnet, tools=[{**ANT_TOOL, "input_schema": schema}]).tools[0].name == "get_weather"
