"""The OpenAI-compatible API through the real CLI and the scripted model, with the official SDK."""

from __future__ import annotations

import openai

from ccgate.demo import ScriptedModel


def test_plain_completion(oai: openai.OpenAI, model: ScriptedModel) -> None:
    reply = oai.chat.completions.create(
        model="sonnet",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello gateway"},
        ],
    )
    assert reply.choices[0].message.content == "You said: hello gateway"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    request = model.conversation_requests()[-1]
    system = request.body["system"]
    assert system[-1]["text"] == "You are terse."
    assert request.body.get("tools", []) == []
