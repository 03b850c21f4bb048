"""The OpenAI-compatible API: the official SDK → ccgate → the real CLI → the scripted model."""

from __future__ import annotations

import base64

import openai
import pytest

from ccgate.demo import ScriptedModel

pytestmark = pytest.mark.cli

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()


def _last_user_blocks(model: ScriptedModel) -> list[dict[str, object]]:
    body = model.conversation_requests()[-1].body
    user = [m for m in body["messages"] if m["role"] == "user"][-1]
    content = user["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def test_plain_completion_uses_the_clients_system_prompt(
    oai: openai.OpenAI, model: ScriptedModel
) -> None:
    reply = oai.chat.completions.create(
        model="sonnet",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "hello gateway"},
        ],
    )
    assert reply.object == "chat.completion"
    assert reply.model == "sonnet"
    assert reply.choices[0].message.content == "You said: hello gateway"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    body = model.conversation_requests()[-1].body
    assert body["system"][-1]["text"] == "You are terse.\n\nAnswer in English."
    assert "Claude Code" not in body["system"][-1]["text"]


def test_no_built_in_tool_is_offered_upstream(oai: openai.OpenAI, model: ScriptedModel) -> None:
    oai.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "hi"}])
    for request in model.model_requests():
        names = {tool.get("name") for tool in request.body.get("tools") or []}
        assert not names & {
            "Bash",
            "Read",
            "Write",
            "Edit",
            "Glob",
            "Grep",
            "WebFetch",
            "WebSearch",
            "Task",
            "Agent",
            "NotebookEdit",
            "TodoWrite",
        }, names


def test_streamed_completion_with_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "stream me [[demo: chunks=4]]"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(pieces) == "You said: stream me"
    assert len(pieces) >= 2
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert {c.id for c in chunks} == {chunks[0].id}


def test_stream_without_include_usage_has_no_usage_chunk(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_images_reach_the_model_as_image_blocks(oai: openai.OpenAI, model: ScriptedModel) -> None:
    reply = oai.chat.completions.create(
        model="sonnet",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    )
    assert "[image: image/png]" in (reply.choices[0].message.content or "")
    images = [b for b in _last_user_blocks(model) if b.get("type") == "image"]
    assert images[0]["source"] == {"type": "base64", "media_type": "image/png", "data": PNG}
    assert images[1]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}


def test_history_reaches_the_model_as_real_turns(oai: openai.OpenAI, model: ScriptedModel) -> None:
    oai.chat.completions.create(
        model="sonnet",
        messages=[
            {"role": "user", "content": "my name is Ada"},
            {"role": "assistant", "content": "Hello Ada"},
            {"role": "user", "content": "what is my name?"},
        ],
    )
    body = model.conversation_requests()[-1].body
    turns = [
        (m["role"], m["content"] if isinstance(m["content"], str) else m["content"][0]["text"])
        for m in body["messages"]
        if m["role"] != "system"
    ]
    assert turns == [
        ("user", "my name is Ada"),
        ("assistant", "Hello Ada"),
        ("user", "what is my name?"),
    ]


def test_stop_sequence_cuts_the_text(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model="sonnet",
        messages=[{"role": "user", "content": '[[demo: say="alpha beta STOP gamma"]]'}],
        stop=["STOP"],
    )
    assert reply.choices[0].message.content == "alpha beta "
    assert reply.choices[0].finish_reason == "stop"


def test_models_are_listed_and_resolved(oai: openai.OpenAI) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {"sonnet", "opus", "haiku", "claude-sonnet-4-5"} <= ids
    assert oai.models.retrieve("anthropic/claude-sonnet-4-5").id == "claude-sonnet-4-5"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("gpt-4o")


def test_unknown_model_is_a_404(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert "gpt-4o" in caught.value.message


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n > 1"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "last message"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages"),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"properties": {"x": 5}}},
                    }
                ],
            },
            "not a valid JSON Schema",
        ),
    ],
)
def test_bad_input_is_a_400_in_openai_shape(
    oai: openai.OpenAI, kwargs: dict[str, object], needle: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="sonnet", **kwargs)  # type: ignore[call-overload]
    assert needle in caught.value.message
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error"
