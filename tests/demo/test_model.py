"""ScriptedModel without HTTP: reading requests and choosing replies."""

from __future__ import annotations

from typing import Any

import pytest

from ccgate.demo import Reply, ScriptedModel, ToolUse, is_side_request, last_user_text

pytestmark = pytest.mark.unit


def body(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Build a /v1/messages body."""
    return {"model": "m", "max_tokens": 1000, "messages": list(messages), **extra}


def user(content: Any) -> dict[str, Any]:
    """Build a user message."""
    return {"role": "user", "content": content}


def test_last_user_text_skips_reminders_and_inline_system_messages() -> None:
    request = body(
        user("first"),
        {"role": "assistant", "content": "ok"},
        user(
            [
                {"type": "text", "text": "<system-reminder>\nignore me\n</system-reminder>"},
                {"type": "text", "text": "second <system-reminder>x</system-reminder>"},
            ]
        ),
        {"role": "system", "content": [{"type": "text", "text": "# Environment"}]},
    )
    assert last_user_text(request) == "second"
    assert ScriptedModel.last_user_text(request) == "second"
    assert last_user_text({}) == "" and last_user_text("junk") == ""


def test_echo_mentions_images() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}
    reply = ScriptedModel().reply_for(body(user([{"type": "text", "text": "look"}, image])))
    assert reply.text == "You said: look [image: image/png]"


def test_tool_results_are_reported_not_answered_with_another_call() -> None:
    request = body(
        user('go [[demo: tool=t input={"a": 1}]]'),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "t"}]},
        user(
            [
                {"type": "tool_result", "tool_use_id": "t1", "content": "fine"},
                {
                    "type": "tool_result",
                    "tool_use_id": "t2",
                    "content": [{"type": "text", "text": "boom"}],
                    "is_error": True,
                },
            ]
        ),
    )
    reply = ScriptedModel().reply_for(request)
    assert reply.text == "Tool results: t1=fine; t2=boom (error)"
    assert reply.tool_uses == []


def test_side_requests_do_not_consume_the_script() -> None:
    model = ScriptedModel()
    model.script(Reply(text="scripted"))
    title = body(
        user("<session>hi</session>"),
        output_config={
            "format": {
                "type": "json_schema",
                "schema": {"type": "object", "properties": {"title": {"type": "string"}}},
            }
        },
    )
    quota = body(user("quota"), max_tokens=1)
    assert is_side_request(title) and is_side_request(quota)
    assert model.reply_for(title).text == '{"title": "Demo"}'
    assert model.reply_for(quota).text == "OK"
    assert model.reply_for(body(user("hi"))).text == "scripted"
    assert model.reply_for(body(user("hi"))).text == "You said: hi"


def test_scripted_reply_without_text_uses_the_default_answer() -> None:
    model = ScriptedModel()
    model.script(Reply(chunks=3), Reply(tool_uses=[ToolUse("t")]))
    first = model.reply_for(body(user("abc")))
    assert (first.text, first.chunks) == ("You said: abc", 3)
    assert model.reply_for(body(user("abc"))).text is None
    assert model.pending == 0


def test_times_limits_directive_faults() -> None:
    model = ScriptedModel()
    request = body(user("hi [[demo: error=529 times=2]]"))
    statuses = [model.reply_for(request).error_status for _ in range(3)]
    assert statuses == [529, 529, None]
    model.reset()
    assert model.reply_for(request).error_status == 529
