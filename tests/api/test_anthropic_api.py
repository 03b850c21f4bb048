"""The Anthropic-compatible API: the official SDK → ccgate → the real CLI → the scripted model."""

from __future__ import annotations

import base64

import anthropic
import pytest

from ccgate.demo import ScriptedModel

pytestmark = pytest.mark.cli

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()


def test_plain_message(ant: anthropic.Anthropic, model: ScriptedModel) -> None:
    message = ant.messages.create(
        model="sonnet",
        max_tokens=200,
        system=[{"type": "text", "text": "Be kind."}, {"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": "hello anthropic"}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "You said: hello anthropic"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    body = model.conversation_requests()[-1].body
    assert body["system"][-1]["text"] == "Be kind.\n\nBe brief."


def test_streamed_message_with_thinking(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(
        model="sonnet",
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 2000},
        messages=[
            {"role": "user", "content": 'ponder [[demo: thinking="hmm, let me see" chunks=3]]'}
        ],
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start"
    assert "content_block_delta" in events
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "hmm, let me see"  # type: ignore[union-attr]
    assert final.content[0].signature  # type: ignore[union-attr]
    assert final.content[1].text == "You said: ponder"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_raw_stream_has_the_exact_event_sequence(ant: anthropic.Anthropic) -> None:
    raw = ant.messages.create(
        model="sonnet",
        max_tokens=100,
        stream=True,
        messages=[{"role": "user", "content": "seq [[demo: chunks=2]]"}],
    )
    names: list[str] = [event.type for event in raw]  # with the pings the types leave out
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    body = [n for n in names[1:-2] if n != "ping"]
    assert body[0] == "content_block_start" and body[-1] == "content_block_stop"
    assert set(body[1:-1]) == {"content_block_delta"}


def test_images_reach_the_model(ant: anthropic.Anthropic, model: ScriptedModel) -> None:
    message = ant.messages.create(
        model="sonnet",
        max_tokens=100,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {"type": "text", "text": "describe"},
                ],
            }
        ],
    )
    assert "[image: image/png]" in message.content[0].text  # type: ignore[union-attr]
    body = model.conversation_requests()[-1].body
    user = [m for m in body["messages"] if m["role"] == "user"][-1]
    images = [b for b in user["content"] if b["type"] == "image"]
    assert images[0]["source"]["data"] == PNG


def test_stop_sequences(ant: anthropic.Anthropic) -> None:
    message = ant.messages.create(
        model="sonnet",
        max_tokens=100,
        stop_sequences=["END"],
        messages=[{"role": "user", "content": '[[demo: say="one two END three" chunks=5]]'}],
    )
    assert message.content[0].text == "one two "  # type: ignore[union-attr]
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "END"


def test_count_tokens(ant: anthropic.Anthropic) -> None:
    count = ant.messages.count_tokens(
        model="sonnet", messages=[{"role": "user", "content": "x" * 400}]
    )
    assert count.input_tokens == 100


def test_bad_input_is_a_400_in_anthropic_shape(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        ant.messages.create(model="sonnet", max_tokens=10, messages=[])
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as caught:
        ant.messages.create(
            model="sonnet", max_tokens=10, messages=[{"role": "assistant", "content": "pre"}]
        )
    assert "last message" in caught.value.message
