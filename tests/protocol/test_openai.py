"""OpenAI Chat Completions translation and rendering, checked with the official SDK."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from ccgate.engine.events import (
    AgentEvent,
    StopReason,
    TextDelta,
    ThinkingDelta,
    TurnEnd,
    Usage,
)
from ccgate.engine.models import Catalogue, ModelInfo
from ccgate.engine.turn import ImagePart, TextPart, Thinking, TurnRequest
from ccgate.errors import InvalidRequest, UpstreamOverloaded
from ccgate.protocol.openai import (
    ChatCompletionRequest,
    ChatStream,
    completion_from_events,
    error_body,
    to_turn,
)

pytestmark = pytest.mark.unit

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


@pytest.fixture(scope="module")
def sonnet() -> ModelInfo:
    return Catalogue.load().resolve("sonnet")


def _turn(sonnet: ModelInfo, **body: Any) -> TurnRequest:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return to_turn(ChatCompletionRequest.model_validate(body), sonnet, "sonnet")


def _refused(sonnet: ModelInfo, **body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        _turn(sonnet, **body)
    return info.value


def _image_msg(url: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


# --- to_turn -----------------------------------------------------------------------------


def test_system_and_developer_become_system_prompt(sonnet: ModelInfo) -> None:
    turn = _turn(
        sonnet,
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use English."}]},
            {"role": "user", "content": "hello"},
        ],
    )
    assert turn.system == "Be terse.\n\nUse English."
    assert len(turn.messages) == 1
    assert turn.last.role == "user"
    assert turn.last.text() == "hello"
    assert turn.model == sonnet.cli
    assert turn.requested_model == "sonnet"


def test_no_system_gives_none(sonnet: ModelInfo) -> None:
    assert _turn(sonnet).system is None


def test_consecutive_roles_merged(sonnet: ModelInfo) -> None:
    turn = _turn(
        sonnet,
        messages=[
            {"role": "user", "content": "one"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "three"},
        ],
    )
    assert [m.role for m in turn.messages] == ["user", "assistant", "user"]
    assert "one" in turn.messages[0].text() and "two" in turn.messages[0].text()
    assert turn.messages[0].text().index("one") < turn.messages[0].text().index("two")
    assert [m.text() for m in turn.history][1] == "a\n\nb"


def test_last_message_must_be_user(sonnet: ModelInfo) -> None:
    error = _refused(
        sonnet,
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
    )
    assert error.param == "messages"


def test_only_system_refused(sonnet: ModelInfo) -> None:
    _refused(sonnet, messages=[{"role": "system", "content": "sys"}])


def test_data_url_image(sonnet: ModelInfo) -> None:
    turn = _turn(sonnet, messages=_image_msg(f"data:image/png;base64,{PNG}"))
    assert turn.last.parts == (TextPart("look"), ImagePart(media_type="image/png", data=PNG))


def test_https_image(sonnet: ModelInfo) -> None:
    turn = _turn(sonnet, messages=_image_msg("https://example.com/cat.jpg"))
    assert turn.last.parts[1] == ImagePart(url="https://example.com/cat.jpg")


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/cat.jpg",
        "ftp://example.com/cat.jpg",
        "file:///etc/passwd",
        "data:image/png;base64,not base64!!",
        "data:image/bmp;base64," + PNG,
        "data:text/plain;base64," + PNG,
        "data:image/png," + PNG,
    ],
)
def test_bad_images_refused_naming_param(sonnet: ModelInfo, url: str) -> None:
    error = _refused(sonnet, messages=_image_msg(url))
    assert error.param == "messages[0].content[1].image_url.url"
    assert error.status == 400
    assert "messages[0].content[1]" in error.message


def test_unknown_part_type_refused(sonnet: ModelInfo) -> None:
    error = _refused(
        sonnet,
        messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
    )
    assert error.param is not None and error.param.startswith("messages[0].content[0]")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {}}},
            "response_format.json_schema.schema",
        ),
    ],
)
def test_meaning_changers_refused(sonnet: ModelInfo, extra: dict[str, Any], param: str) -> None:
    assert _refused(sonnet, **extra).param == param


def test_response_format_becomes_the_turns_output_schema(sonnet: ModelInfo) -> None:
    anything = _turn(sonnet, response_format={"type": "json_object"}).output
    assert anything is not None and anything.schema == {"type": "object"}
    listed = _turn(
        sonnet,
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "letters",
                "schema": {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "array",
                    "items": {"type": "string"},
                },
            },
        },
    ).output
    assert listed is not None and listed.wrapped and listed.name == "letters"
    assert listed.schema["properties"]["value"] == {"type": "array", "items": {"type": "string"}}
    assert "$schema" not in json.dumps(listed.schema)


def test_harmless_params_ignored(sonnet: ModelInfo) -> None:
    turn = _turn(
        sonnet,
        n=1,
        temperature=0.2,
        top_p=0.9,
        user="bob",
        seed=3,
        logprobs=False,
        response_format={"type": "text"},
        presence_penalty=0.1,
    )
    assert turn.last.text() == "hi"


def test_tool_result_without_its_call_refused(sonnet: ModelInfo) -> None:
    error = _refused(
        sonnet,
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "x", "content": "r"},
        ],
    )
    assert error.param == "messages[1]"


def test_stop_as_string_or_list(sonnet: ModelInfo) -> None:
    assert _turn(sonnet, stop="END").stop_sequences == ("END",)
    assert _turn(sonnet, stop=["a", "b", "c", "d"]).stop_sequences == ("a", "b", "c", "d")
    assert _turn(sonnet).stop_sequences == ()


def test_more_than_four_stops_refused(sonnet: ModelInfo) -> None:
    assert _refused(sonnet, stop=["a", "b", "c", "d", "e"]).param == "stop"


def test_max_tokens(sonnet: ModelInfo) -> None:
    assert _turn(sonnet, max_tokens=50).max_tokens == 50
    assert _turn(sonnet, max_tokens=50, max_completion_tokens=70).max_tokens == 70
    assert _turn(sonnet).max_tokens is None


@pytest.mark.parametrize(
    ("reasoning", "effort"),
    [
        ("minimal", "low"),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("xhigh", "xhigh"),
    ],
)
def test_reasoning_effort_asks_for_adaptive_thinking_at_that_effort(
    sonnet: ModelInfo, reasoning: str, effort: str
) -> None:
    turn = _turn(sonnet, reasoning_effort=reasoning)
    assert turn.thinking == Thinking()
    assert turn.effort == effort


@pytest.mark.parametrize("reasoning", [None, "none"])
def test_no_reasoning_effort_means_no_thinking(sonnet: ModelInfo, reasoning: str | None) -> None:
    turn = _turn(sonnet, reasoning_effort=reasoning)
    assert turn.thinking is None
    assert turn.effort is None


def test_unknown_reasoning_effort_is_refused(sonnet: ModelInfo) -> None:
    error = _refused(sonnet, reasoning_effort="extreme")
    assert error.param == "reasoning_effort"
    assert "minimal" in error.message


# --- completion_from_events ----------------------------------------------------------------


def test_completion_shape() -> None:
    events: list[AgentEvent] = [
        ThinkingDelta("hmm"),
        TextDelta("Hel"),
        TextDelta("lo"),
        Usage(input_tokens=10, output_tokens=4, cache_read_tokens=5, cache_creation_tokens=1),
        TurnEnd("max_tokens"),
    ]
    body = completion_from_events(events, "sonnet")
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "sonnet"
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Hello", "refusal": None}
    assert choice["finish_reason"] == "length"
    assert body["usage"]["prompt_tokens"] == 16
    assert body["usage"]["completion_tokens"] == 4
    assert body["usage"]["total_tokens"] == 20
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 5
    parsed = openai.types.chat.ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.content == "Hello"


def test_error_body_shape() -> None:
    body = error_body(InvalidRequest("bad n", param="n"))
    assert body == {
        "error": {
            "message": "bad n",
            "type": "invalid_request_error",
            "param": "n",
            "code": None,
        }
    }


# --- ChatStream ---------------------------------------------------------------------------


def _render(events: list[AgentEvent], include_usage: bool = False) -> str:
    stream = ChatStream("sonnet", include_usage)
    lines = stream.start()
    for event in events:
        lines += stream.render(event)
    return "".join(lines)


def _chunks(text: str) -> list[Any]:
    assert text.endswith("data: [DONE]\n\n")
    out: list[Any] = []
    for block in text.split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


TEXT_EVENTS: list[AgentEvent] = [
    TextDelta("Hel"),
    TextDelta("lo"),
    Usage(input_tokens=7, output_tokens=2),
]


def test_chunk_sequence_without_usage() -> None:
    chunks = _chunks(_render([*TEXT_EVENTS, TurnEnd()]))
    assert chunks[-1] == "[DONE]"
    data = chunks[:-1]
    assert data[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["delta"].get("content") for c in data[1:3]] == ["Hel", "lo"]
    assert data[3]["choices"][0]["delta"] == {}
    assert data[3]["choices"][0]["finish_reason"] == "stop"
    assert len(data) == 4
    assert all("usage" not in c for c in data)
    assert len({c["id"] for c in data}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in data)
    assert all(c["choices"][0]["finish_reason"] is None for c in data[:3])


def test_chunk_sequence_with_usage() -> None:
    chunks = _chunks(_render([*TEXT_EVENTS, TurnEnd()], include_usage=True))
    data = chunks[:-1]
    assert len(data) == 5
    assert all(c["usage"] is None for c in data[:4])
    last = data[4]
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == 7
    assert last["usage"]["completion_tokens"] == 2
    assert last["usage"]["total_tokens"] == 9


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length")],
)
def test_finish_reason_mapping(reason: StopReason, finish: str) -> None:
    chunks = _chunks(_render([TextDelta("x"), TurnEnd(reason)]))
    assert chunks[-2]["choices"][0]["finish_reason"] == finish
    body = completion_from_events([TextDelta("x"), TurnEnd(reason)], "sonnet")
    assert body["choices"][0]["finish_reason"] == finish


def test_thinking_not_rendered_as_content() -> None:
    chunks = _chunks(_render([ThinkingDelta("secret plan"), TextDelta("hi"), TurnEnd()]))
    assert "secret plan" not in json.dumps(chunks)


def test_stream_error_chunk() -> None:
    stream = ChatStream("sonnet", False)
    text = "".join(
        [
            *stream.start(),
            *stream.render(TextDelta("par")),
            *stream.error(UpstreamOverloaded("busy upstream")),
        ]
    )
    chunks = _chunks(text)
    assert chunks[-2] == {
        "error": {
            "message": "busy upstream",
            "type": "server_error",
            "param": None,
            "code": "upstream_overloaded",
        }
    }


# --- the official SDK parses what we render ------------------------------------------------


def _sdk(text: str) -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/chat/completions"
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=text.encode()
        )

    return openai.OpenAI(
        base_url="http://localhost/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def _create(client: openai.OpenAI, include_usage: bool) -> Iterator[Any]:
    return iter(
        client.chat.completions.create(
            model="sonnet",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": include_usage},
        )
    )


def test_sdk_parses_stream() -> None:
    text = _render([*TEXT_EVENTS, TurnEnd("max_tokens")], include_usage=True)
    with _sdk(text) as client:
        chunks = list(_create(client, True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "Hello"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 9


def test_sdk_stream_helper_accumulates() -> None:
    text = _render([*TEXT_EVENTS, TurnEnd()], include_usage=True)
    with (
        _sdk(text) as client,
        client.chat.completions.stream(
            model="sonnet",
            messages=[{"role": "user", "content": "hi"}],
            stream_options={"include_usage": True},
        ) as stream,
    ):
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Hello"
    assert final.choices[0].finish_reason == "stop"


def test_sdk_raises_on_error_chunk() -> None:
    stream = ChatStream("sonnet", False)
    text = "".join(
        [
            *stream.start(),
            *stream.render(TextDelta("par")),
            *stream.error(UpstreamOverloaded("busy upstream")),
        ]
    )
    with _sdk(text) as client, pytest.raises(openai.APIError, match="busy upstream"):
        list(_create(client, False))


def test_nul_in_system_prompt_is_refused() -> None:
    from ccgate.engine.models import Catalogue
    from ccgate.errors import InvalidRequest
    from ccgate.protocol.openai import ChatCompletionRequest, to_turn

    model = Catalogue.load().resolve("sonnet")
    body = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "system", "content": "a\x00b"}, {"role": "user", "content": "x"}]}
    )
    with pytest.raises(InvalidRequest, match="NUL"):
        to_turn(body, model, "sonnet")
