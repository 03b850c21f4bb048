"""Structured outputs on every front door, through the real Claude Code CLI and the scripted
model: the model is held to the schema by Claude Code's ``StructuredOutput`` tool, a wrong
answer is corrected within the same turn, and a final failure is an error, never JSON that
does not match reported as success."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pydantic
import pytest

from ccgate.demo import Reply, ScriptedModel, ToolUse
from tests.gateway_testing import Gateway

pytestmark = pytest.mark.cli


class Weather(pydantic.BaseModel):
    city: str
    temp_c: float


GOOD: dict[str, Any] = {"city": "Paris", "temp_c": 21.5}
BAD = {"city": "Paris"}


def _answer(value: Any) -> Reply:
    return Reply(text="", tool_uses=[ToolUse(name="StructuredOutput", input=value)])


def _tool_offered(model: ScriptedModel) -> dict[str, Any]:
    body = model.conversation_requests()[0].body
    (tool,) = [t for t in body["tools"] if t["name"] == "StructuredOutput"]
    return dict(tool)


def test_chat_completions_parse(oai: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(_answer(GOOD))
    done = oai.chat.completions.parse(
        model="sonnet", messages=[{"role": "user", "content": "weather?"}], response_format=Weather
    )
    message = done.choices[0].message
    assert (
        message.parsed == Weather.model_validate(GOOD) and done.choices[0].finish_reason == "stop"
    )
    assert json.loads(message.content or "") == GOOD
    schema = _tool_offered(model)["input_schema"]
    assert schema["required"] == ["city", "temp_c"]


def test_a_wrong_answer_is_corrected_within_the_turn(
    oai: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(_answer(BAD), _answer(GOOD))
    done = oai.responses.parse(model="sonnet", input="weather?", text_format=Weather)
    assert done.output_parsed == Weather.model_validate(GOOD)
    requests = model.conversation_requests()
    assert len(requests) == 2
    last = requests[-1].body["messages"][-1]["content"]
    assert "does not match" in json.dumps(last), "Claude Code told the model what was wrong"
    assert len({r.body["metadata"]["user_id"] for r in requests}) == 1, "one turn, one session"


def test_a_final_failure_is_an_error_not_json(
    gateway: Gateway, oai: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(*[_answer(BAD)] * 4)
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.parse(
            model="sonnet",
            messages=[{"role": "user", "content": "weather?"}],
            response_format=Weather,
        )
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "structured_output_failed"
    assert len(model.conversation_requests()) == 3, "structured_output_attempts (3)"


def test_text_instead_of_the_tool_is_a_failure_unless_it_is_valid_json(
    oai: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply(text="It is sunny."), Reply(text="Still sunny."))
    with pytest.raises(openai.APIStatusError) as caught:
        oai.responses.create(
            model="sonnet",
            input="weather?",
            text={
                "format": {
                    "type": "json_schema",
                    "name": "w",
                    "schema": Weather.model_json_schema(),
                }
            },
        )
    assert caught.value.status_code == 502
    model.script(Reply(text=json.dumps(GOOD)), Reply(text=json.dumps(GOOD)))
    done = oai.responses.create(
        model="sonnet",
        input="weather?",
        text={
            "format": {"type": "json_schema", "name": "w", "schema": Weather.model_json_schema()}
        },
    )
    assert json.loads(done.output_text) == GOOD


def test_anthropic_output_config_format(ant: anthropic.Anthropic, model: ScriptedModel) -> None:
    model.script(_answer({"value": ["a", "b"]}))  # the wrapped schema's one property
    message = ant.messages.create(
        model="sonnet",
        max_tokens=200,
        messages=[{"role": "user", "content": "two letters"}],
        extra_body={
            "output_config": {
                "format": {
                    "type": "json_schema",
                    "schema": {"type": "array", "items": {"type": "string"}},
                }
            }
        },
    )
    (block,) = message.content
    assert block.type == "text" and json.loads(block.text) == ["a", "b"]
    assert message.stop_reason == "end_turn"
    offered = _tool_offered(model)["input_schema"]
    assert offered["properties"]["value"]["type"] == "array", "a non-object schema is wrapped"


def test_json_object_and_streams(
    gateway: Gateway, oai: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(_answer({"any": 1}))
    chunks = oai.chat.completions.create(
        model="sonnet",
        messages=[{"role": "user", "content": "json"}],
        response_format={"type": "json_object"},
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"any": 1}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "nope"}},
                }
            },
            "response_format.json_schema.schema",
        ),
        ({"response_format": {"type": "xml"}}, "response_format"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": []},
                }
            },
            "response_format.json_schema.schema",
        ),
    ],
)
def test_bad_schemas_are_a_400(
    gateway: Gateway, model: ScriptedModel, body: dict[str, Any], where: str
) -> None:
    answer = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "sonnet", "messages": [{"role": "user", "content": "x"}], **body},
        timeout=30,
    )
    assert answer.status_code == 400 and where in answer.text
    assert model.conversation_requests() == []
