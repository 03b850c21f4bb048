"""Anthropic Messages translation and rendering, checked with the official SDK."""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import httpx2
import pytest
from pydantic import ValidationError

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
from ccgate.errors import InvalidRequest, UpstreamRateLimited
from ccgate.protocol.anthropic import (
    CountTokensRequest,
    MessagesRequest,
    MessageStream,
    count_tokens,
    error_body,
    message_from_events,
    to_turn,
)

pytestmark = pytest.mark.unit

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


@pytest.fixture(scope="module")
def sonnet() -> ModelInfo:
    return Catalogue.load().resolve("sonnet")


def _turn(sonnet: ModelInfo, **body: Any) -> TurnRequest:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    body.setdefault("max_tokens", 4096)
    return to_turn(MessagesRequest.model_validate(body), sonnet, "sonnet")


def _refused(sonnet: ModelInfo, **body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        _turn(sonnet, **body)
    return info.value


def _image(source: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": "look"}, {"type": "image", "source": source}],
        }
    ]


# --- to_turn -----------------------------------------------------------------------------


def test_system_string_and_blocks(sonnet: ModelInfo) -> None:
    assert _turn(sonnet, system="Be terse.").system == "Be terse."
    blocks = [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]
    assert _turn(sonnet, system=blocks).system == "One.\n\nTwo."
    assert _turn(sonnet).system is None
    assert _turn(sonnet, system="").system is None


def test_consecutive_roles_merged(sonnet: ModelInfo) -> None:
    turn = _turn(
        sonnet,
        messages=[
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "three"},
        ],
    )
    assert [m.role for m in turn.messages] == ["user", "assistant", "user"]
    assert turn.messages[0].text() == "one\n\ntwo"
    assert turn.last.text() == "three"


def test_last_message_must_be_user(sonnet: ModelInfo) -> None:
    error = _refused(
        sonnet,
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "pre"}],
    )
    assert error.param == "messages"


def test_inline_system_messages_join_the_user_turn_as_reminders(sonnet: ModelInfo) -> None:
    # Claude Code sends its environment as a system message after the user's prompt.
    env = [{"type": "text", "text": "# Environment\ncwd: /w", "cache_control": {"type": "x"}}]
    turn = _turn(
        sonnet,
        system="Be terse.",
        messages=[
            {"role": "user", "content": "hello"},
            {"role": "system", "content": env},
            {"role": "assistant", "content": "hi"},
            {"role": "system", "content": "mid-way note"},
            {"role": "user", "content": "again"},
        ],
    )
    assert turn.system == "Be terse."
    assert [m.role for m in turn.messages] == ["user", "assistant", "user"]
    assert turn.messages[0].text() == (
        "hello\n\n<system-reminder>\n# Environment\ncwd: /w\n</system-reminder>"
    )
    assert turn.last.text() == "<system-reminder>\nmid-way note\n</system-reminder>\n\nagain"


def test_a_system_message_may_end_the_conversation_or_be_empty(sonnet: ModelInfo) -> None:
    turn = _turn(
        sonnet,
        messages=[
            {"role": "user", "content": "hello"},
            {"role": "system", "content": []},
            {"role": "assistant", "content": "hi"},
            {"role": "system", "content": "the date changed"},
        ],
    )
    assert [m.role for m in turn.messages] == ["user", "assistant", "user"]
    assert turn.messages[0].text() == "hello"
    assert turn.last.text() == "<system-reminder>\nthe date changed\n</system-reminder>"


def test_a_system_message_between_calls_and_results_keeps_the_round(sonnet: ModelInfo) -> None:
    turn = _turn(
        sonnet,
        tools=[{"name": "Read", "input_schema": {"type": "object"}}],
        messages=[
            {"role": "user", "content": "read it"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}],
            },
            {"role": "system", "content": "a note"},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}],
            },
        ],
    )
    assert [m.role for m in turn.messages] == ["user", "assistant", "user"]
    assert [r.tool_use_id for r in turn.last.tool_results] == ["t1"]


def test_system_messages_hold_text_only(sonnet: ModelInfo) -> None:
    error = _refused(
        sonnet,
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "tool_addition", "tool": {"name": "X"}}]},
        ],
    )
    assert error.param == "messages.1.content.0"


def test_deferred_tools_are_refused_first_naming_defer_loading(sonnet: ModelInfo) -> None:
    error = _refused(
        sonnet,
        tools=[
            {"name": "ToolSearch", "input_schema": {"type": "object"}},
            {"name": "Later", "input_schema": {"type": "object"}, "defer_loading": True},
        ],
    )
    assert error.param == "tools.1"
    assert "defer_loading" in error.message


def test_base64_image(sonnet: ModelInfo) -> None:
    turn = _turn(
        sonnet, messages=_image({"type": "base64", "media_type": "image/png", "data": PNG})
    )
    assert turn.last.parts == (TextPart("look"), ImagePart(media_type="image/png", data=PNG))


def test_url_image(sonnet: ModelInfo) -> None:
    turn = _turn(sonnet, messages=_image({"type": "url", "url": "https://example.com/a.png"}))
    assert turn.last.parts[1] == ImagePart(url="https://example.com/a.png")


@pytest.mark.parametrize(
    "source",
    [
        {"type": "url", "url": "http://example.com/a.png"},
        {"type": "url", "url": "ftp://example.com/a.png"},
        {"type": "base64", "media_type": "image/png", "data": "%%% not base64"},
        {"type": "base64", "media_type": "image/tiff", "data": PNG},
        {"type": "file", "file_id": "f_1"},
    ],
)
def test_bad_images_refused_naming_param(sonnet: ModelInfo, source: dict[str, Any]) -> None:
    error = _refused(sonnet, messages=_image(source))
    assert error.param is not None
    assert error.param.startswith("messages.0.content.1")
    assert "messages.0.content.1" in error.message


def test_earlier_thinking_blocks_dropped(sonnet: ModelInfo) -> None:
    turn = _turn(
        sonnet,
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "yo"},
                ],
            },
            {"role": "user", "content": "again"},
        ],
    )
    assert turn.history[1].parts == (TextPart("yo"),)


def test_stop_sequences_and_metadata(sonnet: ModelInfo) -> None:
    turn = _turn(sonnet, stop_sequences=["END", "STOP"], metadata={"user_id": "u1", "n": 3})
    assert turn.stop_sequences == ("END", "STOP")
    assert turn.metadata == {"user_id": "u1"}
    assert turn.max_tokens == 4096


def test_thinking_budget(sonnet: ModelInfo) -> None:
    turn = _turn(sonnet, thinking={"type": "enabled", "budget_tokens": 2048})
    assert turn.thinking == Thinking(2048)
    assert _turn(sonnet, thinking={"type": "adaptive"}).thinking == Thinking()
    thinking: dict[str, Any]
    for hidden in ("omitted", "updates"):
        thinking = {"type": "adaptive", "display": hidden}
        assert _turn(sonnet, thinking=thinking).thinking == Thinking(display="omitted")
    for shown in ("summarized", "highlights"):
        thinking = {"type": "enabled", "budget_tokens": 2048, "display": shown}
        assert _turn(sonnet, thinking=thinking).thinking == Thinking(2048, "summarized")
    assert _turn(sonnet, thinking={"type": "disabled"}).thinking is None
    assert _turn(sonnet).thinking is None


def test_effort_comes_from_output_config(sonnet: ModelInfo) -> None:
    turn = _turn(sonnet, thinking={"type": "adaptive"}, output_config={"effort": "high"})
    assert turn.effort == "high"
    assert _turn(sonnet).effort is None


@pytest.mark.parametrize("budget", [4096, 5000])
def test_thinking_budget_must_be_below_max_tokens(sonnet: ModelInfo, budget: int) -> None:
    error = _refused(sonnet, max_tokens=4096, thinking={"type": "enabled", "budget_tokens": budget})
    assert error.param == "thinking"


def test_thinking_budget_minimum() -> None:
    with pytest.raises(ValidationError):
        MessagesRequest.model_validate(
            {
                "max_tokens": 4096,
                "messages": [{"role": "user", "content": "hi"}],
                "thinking": {"type": "enabled", "budget_tokens": 10},
            }
        )


def test_max_tokens_required() -> None:
    with pytest.raises(ValidationError):
        MessagesRequest.model_validate({"messages": [{"role": "user", "content": "hi"}]})


def test_count_tokens() -> None:
    small = count_tokens(
        CountTokensRequest.model_validate({"messages": [{"role": "user", "content": "hi"}]})
    )
    big = count_tokens(
        CountTokensRequest.model_validate(
            {"system": "x" * 400, "messages": [{"role": "user", "content": "y" * 400}]}
        )
    )
    assert small >= 1
    assert big > small
    assert 150 <= big <= 250
    noted = count_tokens(
        CountTokensRequest.model_validate(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "system", "content": [{"type": "text", "text": "z" * 400}]},
                ]
            }
        )
    )
    assert noted >= 100


# --- message_from_events -------------------------------------------------------------------


def test_message_shape() -> None:
    events: list[AgentEvent] = [
        ThinkingDelta("let me "),
        ThinkingDelta("think", signature="sig-1"),
        TextDelta("Hel"),
        TextDelta("lo"),
        Usage(input_tokens=12, output_tokens=3, cache_read_tokens=2, cache_creation_tokens=1),
        TurnEnd("stop_sequence", stop_sequence="END"),
    ]
    body = message_from_events(events, "sonnet")
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["id"].startswith("msg_")
    assert body["model"] == "sonnet"
    assert body["content"] == [
        {"type": "thinking", "thinking": "let me think", "signature": "sig-1"},
        {"type": "text", "text": "Hello"},
    ]
    assert body["stop_reason"] == "stop_sequence"
    assert body["stop_sequence"] == "END"
    assert body["usage"] == {
        "input_tokens": 12,
        "output_tokens": 3,
        "cache_creation_input_tokens": 1,
        "cache_read_input_tokens": 2,
    }
    parsed = anthropic.types.Message.model_validate(body)
    assert parsed.content[1].type == "text"


def test_error_body_shape() -> None:
    assert error_body(InvalidRequest("nope")) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "nope"},
    }


# --- MessageStream ------------------------------------------------------------------------


def _render(events: list[AgentEvent]) -> str:
    stream = MessageStream("sonnet")
    lines = stream.start()
    for event in events:
        lines += stream.render(event)
    return "".join(lines)


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for block in text.split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ")
        assert data_line.startswith("data: ")
        name = name_line[len("event: ") :]
        data = json.loads(data_line[len("data: ") :])
        assert data["type"] == name
        out.append((name, data))
    return out


THINK_THEN_TEXT: list[AgentEvent] = [
    ThinkingDelta("hmm"),
    ThinkingDelta("", signature="sig-9"),
    TextDelta("Hel"),
    TextDelta("lo"),
    Usage(input_tokens=5, output_tokens=2),
    TurnEnd(),
]


def test_event_order_thinking_then_text() -> None:
    events = _events(_render(THINK_THEN_TEXT))
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["stop_reason"] is None
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    }
    assert events[3][1]["delta"] == {"type": "thinking_delta", "thinking": "hmm"}
    assert events[4][1]["delta"] == {"type": "signature_delta", "signature": "sig-9"}
    assert events[5][1]["index"] == 0
    assert events[6][1]["index"] == 1
    assert events[6][1]["content_block"] == {"type": "text", "text": ""}
    assert [e[1]["delta"]["text"] for e in events[7:9]] == ["Hel", "lo"]
    assert all(e[1]["index"] == 1 for e in events[7:10])
    delta = events[10][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 2
    assert delta["usage"]["input_tokens"] == 5


def test_omitted_thinking_keeps_blocks_and_signatures_without_text() -> None:
    stream = MessageStream("sonnet", thinking_text=False)
    lines = stream.start()
    for event in THINK_THEN_TEXT:
        lines += stream.render(event)
    deltas = [data["delta"] for name, data in _events("".join(lines)) if "delta" in data]
    assert deltas[0] == {"type": "signature_delta", "signature": "sig-9"}
    assert not any(d.get("type") == "thinking_delta" for d in deltas)
    body = message_from_events(THINK_THEN_TEXT, "sonnet", thinking_text=False)
    assert body["content"][0] == {"type": "thinking", "thinking": "", "signature": "sig-9"}
    assert body["content"][1] == {"type": "text", "text": "Hello"}


@pytest.mark.parametrize("reason", ["end_turn", "max_tokens", "stop_sequence", "refusal"])
def test_stop_reasons(reason: StopReason) -> None:
    stop = "END" if reason == "stop_sequence" else None
    events = _events(_render([TextDelta("x"), TurnEnd(reason, stop_sequence=stop)]))
    assert events[-2][1]["delta"] == {"stop_reason": reason, "stop_sequence": stop}
    assert events[-1][0] == "message_stop"


def test_empty_turn() -> None:
    names = [name for name, _ in _events(_render([TurnEnd()]))]
    assert names == ["message_start", "ping", "message_delta", "message_stop"]


def test_stream_error_event() -> None:
    stream = MessageStream("sonnet")
    text = "".join(
        [
            *stream.start(),
            *stream.render(TextDelta("par")),
            *stream.error(UpstreamRateLimited("slow down", retry_after=3)),
        ]
    )
    events = _events(text)
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
    )
    assert "message_stop" not in [name for name, _ in events]


# --- the official SDK parses what we render ------------------------------------------------


def _sdk(text: str) -> anthropic.Anthropic:
    # This anthropic SDK is built on httpx2 and refuses httpx objects.
    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/messages"
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=text.encode()
        )

    return anthropic.Anthropic(
        base_url="http://localhost",
        api_key="unused",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def test_sdk_accumulates_stream() -> None:
    with (
        _sdk(_render(THINK_THEN_TEXT)) as client,
        client.messages.stream(
            model="sonnet", max_tokens=4096, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Hello"
    assert [b.type for b in final.content] == ["thinking", "text"]
    thinking = final.content[0]
    assert thinking.type == "thinking"
    assert thinking.thinking == "hmm"
    assert thinking.signature == "sig-9"
    text = final.content[1]
    assert text.type == "text" and text.text == "Hello"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 2


def test_sdk_stop_sequence() -> None:
    text = _render([TextDelta("a"), TurnEnd("stop_sequence", stop_sequence="END")])
    with (
        _sdk(text) as client,
        client.messages.stream(
            model="sonnet", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence"
    assert final.stop_sequence == "END"


def test_sdk_raises_on_error_event() -> None:
    stream = MessageStream("sonnet")
    text = "".join(
        [
            *stream.start(),
            *stream.render(TextDelta("par")),
            *stream.error(UpstreamRateLimited("slow down")),
        ]
    )
    with (
        _sdk(text) as client,
        pytest.raises(anthropic.APIStatusError, match="slow down"),
        client.messages.stream(
            model="sonnet", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as s,
    ):
        s.get_final_message()
